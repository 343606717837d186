"""The ``maskloss`` command line: ``maskloss demo``, ``maskloss conformance``, ``maskloss evaluate``.

Each subcommand lives in its own module; this file only parses arguments and imports
nothing heavy (no framework) before a subcommand runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import maskloss


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    from maskloss.conformance import DEFAULT_CASES

    parser = argparse.ArgumentParser(
        prog="maskloss", description="The ground truth for masked sequence losses."
    )
    parser.add_argument("--version", action="version", version=f"maskloss {maskloss.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser(
        "demo", help="walk through the seed example: mask, per-step losses, every reduction"
    )
    demo_parser.add_argument(
        "--keras",
        action="store_true",
        help="also replay the seed model in real Keras 3 (KERAS_BACKEND=jax), side by side",
    )
    conf = sub.add_parser(
        "conformance",
        help="compare every convention in maskloss.conventions with the installed frameworks",
        description=(
            "Run each framework convention of maskloss.conventions against the real framework on "
            "random padded batches and print the largest errors. Frameworks that are not installed "
            "are listed as such. Exit code 0 only when every installed framework agrees and at least "
            "one is installed (--allow-none accepts none)."
        ),
    )
    conf.add_argument("--cases", type=_positive_int, default=DEFAULT_CASES, metavar="N",
                      help=f"random batches per convention (default {DEFAULT_CASES})")
    conf.add_argument("--seed", type=int, default=0, metavar="S",
                      help="seed of numpy.random.default_rng (default 0)")
    conf.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    conf.add_argument("--allow-none", action="store_true",
                      help="exit 0 even when no framework is installed (nothing checked)")
    conf.add_argument("--same-process", action="store_true",
                      help="run every framework in this process instead of one child process each "
                      "(quicker to start; Triton and TensorFlow loaded together abort the process)")
    conf.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    _add_evaluate(sub)
    return parser


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from maskloss.evaluate import LOSSES

    ev = sub.add_parser(
        "evaluate",
        help="a masked loss of arrays in .npy/.npz/zarr files, on Dask (larger than memory)",
        description="Evaluate a masked loss of targets, predictions and an optional mask stored in .npy "
        "(memory-mapped), .npz or zarr files, block by block on Dask; print the value(s) and the counts "
        "behind them. Needs the dask extra. Nothing is written to disk.",
    )
    ev.add_argument("loss", choices=LOSSES)
    ev.add_argument("targets", help="file of y_true")
    ev.add_argument("predictions", help="file of y_pred (class axis last)")
    ev.add_argument("--mask", metavar="FILE", help="file of the mask (True = valid step)")
    ev.add_argument("--from-logits", action="store_true", help="predictions are logits")
    ev.add_argument("--ignore-index", type=int, metavar="N", help="label to ignore (sparse only)")
    ev.add_argument("--label-smoothing", type=float, metavar="X", help="label smoothing in [0, 1]")
    group = ev.add_mutually_exclusive_group()
    group.add_argument("--reduction", default="token_mean", choices=maskloss.SCALAR_REDUCTIONS)
    group.add_argument("--all-reductions", action="store_true", help="print every scalar reduction")
    ev.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (default: local threads)")
    ev.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to reach --scheduler")
    ev.add_argument("--json", action="store_true", help="print machine-readable JSON")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maskloss`` console script."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``maskloss demo | head``): no traceback; stdout goes to devnull
        # so that the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
    parser = _build_parser()
    if not (sys.argv[1:] if argv is None else list(argv)):  # bare ``maskloss``: show what it can do
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    if args.command == "conformance":
        from maskloss import conformance

        def progress(line: str) -> None:
            print(f"maskloss conformance {line}", file=sys.stderr, flush=True)

        runs = conformance.run_all(seed=args.seed, n_cases=args.cases, isolate=not args.same_process,
                                   progress=None if args.quiet else progress)
        if args.json:
            print(conformance.to_json(runs, seed=args.seed, n_cases=args.cases))
        else:
            print(conformance.format_table(runs, seed=args.seed, n_cases=args.cases, allow_none=args.allow_none))
        return conformance.exit_code(runs, allow_none=args.allow_none)
    if args.command == "evaluate":
        from maskloss.evaluate import run

        return run(args)
    from maskloss.demo import demo

    return demo(keras=args.keras)
