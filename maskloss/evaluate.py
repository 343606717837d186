"""``maskloss evaluate``: a masked loss of arrays in files, on Dask, with the counts behind it.

Nothing is written to disk; the value(s) and counts go to stdout, a progress bar to stderr.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from typing import Any

from maskloss import registry

#: The losses ``maskloss evaluate`` offers: those declared with ``evaluate=True`` (:mod:`maskloss.registry`).
LOSSES: tuple[str, ...] = registry.names(evaluate=True)


def _connect(address: str, timeout: float) -> Any:
    client_class: Any = importlib.import_module("distributed").Client

    try:
        return client_class(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise SystemExit(f"maskloss evaluate: error: --scheduler {address}: cannot reach a Dask scheduler "
                         f"within {timeout:g} s ({exc})") from None


def _error(message: str) -> None:
    """Exit with one line naming the file or option (non-zero exit status)."""
    raise SystemExit(f"maskloss evaluate: error: {message}")


def run(args: Any) -> int:
    """Evaluate ``args.loss`` on the files of ``args`` and print the result."""
    try:
        import maskloss
        from maskloss import dask as mdask
    except ImportError as exc:
        raise SystemExit(f"maskloss evaluate: error: {exc}") from None

    loss = getattr(maskloss, args.loss)
    options: dict[str, Any] = {}
    for name in ("from_logits", "ignore_index", "label_smoothing"):
        value = getattr(args, name)
        if value is not None and value is not False:  # not ``in (None, False)``: 0 == False
            options[name] = value
    def load(path: str, name: str) -> Any:
        try:
            return mdask.from_file(path)
        except (ValueError, FileNotFoundError) as exc:
            raise SystemExit(f"maskloss evaluate: error: {name}: {exc}") from None

    try:
        pred = load(args.predictions, "predictions")
        if pred.ndim < 2:
            _error(f"predictions {args.predictions!r} has shape {pred.shape}; it needs a batch axis and a "
                   "class/feature axis, (batch, ..., classes)")
        pred = pred.rechunk({pred.ndim - 1: -1})
        steps_chunks = pred.chunks[:-1]
        true = load(args.targets, "targets")
        if true.shape not in (pred.shape, pred.shape[:-1]):
            _error(f"targets {args.targets!r} has shape {true.shape}; with predictions {args.predictions!r} of "
                   f"shape {pred.shape} it must be {pred.shape} (dense) or {pred.shape[:-1]} (labels)")
        true = true.rechunk(pred.chunks if true.ndim == pred.ndim else steps_chunks)
        mask = None
        if args.mask is not None:
            mask = load(args.mask, "--mask")
            if mask.shape != pred.shape[:-1]:
                _error(f"--mask {args.mask!r} has shape {mask.shape}; it must have the steps' shape "
                       f"{pred.shape[:-1]} (predictions {args.predictions!r} are {pred.shape})")
            mask = mask.rechunk(steps_chunks)
        stats = mdask.summary_stats(loss, true, pred, mask, **options)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise SystemExit(f"maskloss evaluate: error: {exc}") from None

    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise SystemExit(f"maskloss evaluate: error: --timeout must be a positive number of seconds, "
                         f"got {args.timeout!r}")
    reductions = maskloss.SCALAR_REDUCTIONS if args.all_reductions else (args.reduction,)
    try:
        computed = _compute(stats, args)
    except (ValueError, TypeError) as exc:  # found while Dask computes: a label out of range, ...
        raise SystemExit(f"maskloss evaluate: error: {exc}") from None
    summary = mdask.Summary.from_stats(computed)
    values = {r: float(summary.value(r)) for r in reductions}
    counts = summary.counts()
    if args.json:
        # NaN and inf are not JSON: a value that is not finite is null.
        finite = {r: (v if math.isfinite(v) else None) for r, v in values.items()}
        print(json.dumps({"loss": args.loss, "options": options, "values": finite, "counts": counts},
                         allow_nan=False))
    else:
        print(f"{args.loss}" + "".join(f" {k}={v}" for k, v in options.items()))
        for r, v in values.items():
            print(f"  {r:<14} {v!r}")
        print("  counts: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _compute(stats: Any, args: Any) -> Any:
    """The computed summary statistics, on ``--scheduler`` or local threads."""
    if args.scheduler:
        progress: Any = importlib.import_module("distributed").progress
        client = _connect(args.scheduler, args.timeout)
        try:
            future = client.compute(stats)
            if not args.json:
                progress(future)
            computed = future.result()
        finally:
            client.close()
    else:
        progress_bar: Any = importlib.import_module("dask.diagnostics").ProgressBar
        with progress_bar(minimum=2.0, out=sys.stderr):
            computed = stats.compute(scheduler="threads")
    return computed
