r"""The bit-for-bit sweep of public calls that guards issue 19's refactor (no number changes).

:func:`sweep` calls a broad set of public functions (every loss x reduction x option x dtype
x mask shape, ``value_and_grad``, ``masked_totals``, ``reduce``, the post-training functions
and the torch/optax conventions mirrors) on fixed seeded inputs, and encodes every output
exactly (the raw bytes of each array, so NaNs and signed zeros count). Run as a script to
regenerate the data file of this machine's float64 kernels (:func:`simd_key`: numpy's
AVX-512F and AVX2 kernels round some results differently); tests/test_sweep_issue19.py
recomputes and compares.

    python -m tests.sweep_issue19      # writes tests/data/sweep_before_issue19[.no-avx512f].json
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import maskloss
from maskloss.conventions import optax as cv_optax
from maskloss.conventions import torch as cv_torch


def simd_key() -> str:
    """Which of numpy's float64 ``exp``/``log`` kernels this CPU runs: ``"avx512f"`` or ``"no-avx512f"``.

    numpy dispatches its float64 transcendental loops on the CPU's features at run time: the
    AVX-512F kernels and the AVX2/scalar ones round some results differently (one ulp). The
    same code at the same commit gave 447 of 9664 different encodings on an AVX-512F machine
    and on an AVX2-only one (2026-12-07), so the recorded values are kept per kernel family.
    """
    from numpy._core._multiarray_umath import __cpu_features__

    return "avx512f" if __cpu_features__.get("AVX512F") else "no-avx512f"


#: The recorded encodings for this machine's kernels (the AVX-512F file keeps its first name).
DATA = pathlib.Path(__file__).parent / "data" / (
    "sweep_before_issue19.json" if simd_key() == "avx512f" else "sweep_before_issue19.no-avx512f.json"
)
#: The optax mirrors there were when the sweep was recorded (later ones, such as the KL mirrors, are
#: not part of the "before": they have their own tests).
OPTAX_MIRRORS = (
    "poly_loss_cross_entropy",
    "safe_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
)
B, T, C = 3, 4, 5


def encode(result: Any) -> Any:
    """An exact, JSON-ready description of ``result`` (arrays by their raw bytes)."""
    if isinstance(result, tuple | list):
        return [encode(r) for r in result]
    if isinstance(result, maskloss.MaskedTotals):
        return {"totals": [encode(result.numerator), encode(result.denominator), encode(result.steps)]}
    a = np.asarray(result)
    raw = np.ascontiguousarray(a).tobytes()
    # Small outputs by their bytes; larger ones by the SHA-256 of their bytes (keeps the file small).
    exact = {"hex": raw.hex()} if len(raw) <= 32 else {"sha256": hashlib.sha256(raw).hexdigest()}
    return {"type": type(result).__name__, "dtype": str(a.dtype), "shape": list(a.shape), **exact}


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return encode(fn(*args, **kwargs))
    except (ValueError, TypeError) as e:
        return {"raises": type(e).__name__}


def _inputs(dtype: str) -> dict[str, Any]:
    rng = np.random.default_rng(19)
    f = np.dtype(dtype)
    logits = rng.normal(size=(B, T, C)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, C, size=(B, T))
    onehot = np.eye(C)[labels]
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)
    garbage = logits.copy()
    garbage[~mask] = np.nan
    return {
        "logits": logits.astype(f),
        "probs": probs.astype(f),
        "labels": labels,
        "onehot": onehot,
        "soft": (0.7 * onehot + 0.3 / C),
        "mask": mask,
        "garbage": garbage.astype(f),
        "binary_true": rng.integers(0, 2, size=(B, T, 2)).astype(np.float64),
        "binary_pred": rng.uniform(0.01, 0.99, size=(B, T, 2)).astype(f),
        "binary_logits": rng.normal(size=(B, T, 2)).astype(f),
        "reg_true": rng.normal(size=(B, T, 2)),
        "reg_pred": rng.normal(size=(B, T, 2)).astype(f),
        "sample_weight": rng.uniform(0.0, 2.0, size=(B, T)),
        "seq_weight": rng.uniform(0.5, 2.0, size=(B,)),
        "class_weight": rng.uniform(0.5, 2.0, size=(C,)),
        "lp": rng.normal(size=(B, T)) - 1.0,
        "ref_lp": rng.normal(size=(B, T)) - 1.0,
        "adv": rng.normal(size=(B,)),
        "seq_lp": rng.normal(size=(4,)) - 5.0,
    }


def _masks(x: dict[str, Any]) -> dict[str, Any]:
    m = x["mask"]
    return {"none": None, "mask": m, "all_false": np.zeros_like(m), "int": m.astype(np.int64)}


def _loss_calls(
    x: dict[str, Any],
) -> Iterator[tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]]]:
    for mname, m in _masks(x).items():
        for sw in (None, "sample_weight", "seq_weight"):
            w = {} if sw is None else {"sample_weight": x[sw]}
            yield f"mae/{mname}/{sw}", maskloss.mae, (x["reg_true"], x["reg_pred"], m), w
            yield f"mse/{mname}/{sw}", maskloss.mse, (x["reg_true"], x["reg_pred"], m), w
            for ls in (0.0, 0.1):
                yield (
                    f"bce/{mname}/{sw}/{ls}",
                    maskloss.binary_crossentropy,
                    (x["binary_true"], x["binary_pred"], m),
                    {**w, "label_smoothing": ls},
                )
                yield (
                    f"bce_logits/{mname}/{sw}/{ls}",
                    maskloss.binary_crossentropy,
                    (x["binary_true"], x["binary_logits"], m),
                    {**w, "label_smoothing": ls, "from_logits": True},
                )
                for cw in (None, x["class_weight"]):
                    o = {**w, "label_smoothing": ls, "class_weight": cw}
                    c = "cw" if cw is not None else "nocw"
                    yield (
                        f"cce/{mname}/{sw}/{ls}/{c}",
                        maskloss.categorical_crossentropy,
                        (x["soft"], x["probs"], m),
                        o,
                    )
                    yield (
                        f"cce_logits/{mname}/{sw}/{ls}/{c}",
                        maskloss.categorical_crossentropy,
                        (x["onehot"], x["garbage"] if mname == "mask" else x["logits"], m),
                        {**o, "from_logits": True},
                    )
                    yield (
                        f"scce/{mname}/{sw}/{ls}/{c}",
                        maskloss.sparse_categorical_crossentropy,
                        (x["labels"], x["probs"], m),
                        o,
                    )
                    ignored = np.where(x["mask"], x["labels"], -100)
                    yield (
                        f"scce_logits_ii/{mname}/{sw}/{ls}/{c}",
                        maskloss.sparse_categorical_crossentropy,
                        (ignored, x["logits"], m),
                        {**o, "from_logits": True, "ignore_index": -100},
                    )


def sweep() -> dict[str, Any]:
    """Every recorded call, by a stable name, to its exact encoding."""
    out: dict[str, Any] = {}
    for dtype in ("float64", "float32", "float16"):
        x = _inputs(dtype)
        for name, fn, args, kw in _loss_calls(x):
            for red in maskloss.REDUCTIONS:
                out[f"{dtype}/{name}/{red}"] = _call(fn, *args, reduction=red, **kw)
                if red != "none":
                    out[f"{dtype}/vag/{name}/{red}"] = _call(
                        maskloss.value_and_grad(fn), *args, reduction=red, **kw
                    )
            out[f"{dtype}/totals/{name}"] = _call(maskloss.masked_totals(fn), *args, **kw)
        m = x["mask"]
        for red in maskloss.REDUCTIONS:
            for wname, wt in (("none", None), ("w", x["sample_weight"])):
                out[f"{dtype}/reduce/{red}/{wname}"] = _call(
                    maskloss.reduce, x["lp"], m, reduction=red, weight=wt
                )
        # post-training
        lab, lg = x["labels"], x["logits"]
        for t in (1.0, 0.7):
            out[f"{dtype}/token_logprobs/{t}"] = _call(maskloss.token_logprobs, lab, lg, m, temperature=t)
            out[f"{dtype}/token_logprobs_ii/{t}"] = _call(
                maskloss.token_logprobs, np.where(m, lab, -100), lg, ignore_index=-100, temperature=t
            )
            for avg in (False, True):
                out[f"{dtype}/sequence_logprobs/{t}/{avg}"] = _call(
                    maskloss.sequence_logprobs, lab, lg, m, average=avg, temperature=t
                )
            out[f"{dtype}/pgo/{t}"] = _call(
                maskloss.policy_gradient_objective, lab, lg, x["sample_weight"], m, temperature=t
            )
            out[f"{dtype}/vag/pgo/{t}"] = _call(
                maskloss.value_and_grad(maskloss.policy_gradient_objective),
                lab,
                lg,
                x["sample_weight"],
                m,
                temperature=t,
            )
        ratio = np.exp(x["lp"] - x["ref_lp"])
        for eh, d in ((None, None), (0.28, None), (None, 3.0)):
            out[f"clipped/{eh}/{d}"] = _call(
                maskloss.clipped_surrogate, ratio, x["adv"][:, None], m, epsilon_high=eh, delta=d
            )
        out[f"{dtype}/sequence_ratio"] = _call(maskloss.sequence_ratio, x["lp"] - x["ref_lp"], m)
        for est in ("k1", "k2", "k3"):
            out[f"kl/{est}"] = _call(maskloss.kl_estimate, x["lp"], x["ref_lp"], m, estimator=est)
        s = x["seq_lp"]
        for lt in ("sigmoid", "ipo"):
            for ls in (0.0, 0.1):
                out[f"dpo/{lt}/{ls}"] = _call(
                    maskloss.dpo_loss,
                    s,
                    s[::-1],
                    s - 0.5,
                    s[::-1] + 0.25,
                    beta=0.2,
                    loss_type=lt,
                    label_smoothing=ls,
                )
        for mode in ("token_mean", "sequence_mean", "batch_mean", "sum", "constant", "global_token_mean"):
            out[f"aggregate/{mode}"] = _call(
                maskloss.aggregate, x["lp"], m, mode=mode, constant=16.0, global_count=11.0
            )
        # conventions mirrors
        ignored = np.where(m, lab, -100)
        for red in ("mean", "sum", "none"):
            for ls in (0.0, 0.1):
                out[f"{dtype}/torch_ce/{red}/{ls}"] = _call(
                    cv_torch.cross_entropy, np.moveaxis(lg, -1, 1), ignored, reduction=red, label_smoothing=ls
                )
            out[f"{dtype}/torch_nll/{red}"] = _call(
                cv_torch.nll_loss, np.moveaxis(lg, -1, 1), ignored, reduction=red
            )
            out[f"{dtype}/torch_mse/{red}"] = _call(
                cv_torch.mse_loss, x["reg_pred"], x["reg_true"], reduction=red
            )
            out[f"{dtype}/torch_l1/{red}"] = _call(
                cv_torch.l1_loss, x["reg_pred"], x["reg_true"], reduction=red
            )
            out[f"{dtype}/torch_bce_logits/{red}"] = _call(
                cv_torch.binary_cross_entropy_with_logits, x["binary_logits"], x["binary_true"], reduction=red
            )
        for name in OPTAX_MIRRORS:
            target = (
                lab
                if name.endswith("integer_labels")
                else (x["soft"] if "softmax" in name or "poly" in name else x["onehot"])
            )
            out[f"{dtype}/optax/{name}"] = _call(
                getattr(cv_optax, name), lg, target, where=m[..., None] if "integer" not in name else m
            )
    return out


def main() -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=pathlib.Path(__file__).parent,
        check=True,
    ).stdout.strip()
    data = {
        "header": f"generated by tests/sweep_issue19.py at commit {commit}; first at 8fb1e78, before issue 19's "
        "refactor, regenerated once after issue 25's deliberate kl_estimate('k3') accuracy fix (the only call "
        "that changed); every value is the exact encoding of a public call's output (raw bytes)",
        "calls": sweep(),
    }
    DATA.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    print(f"{len(data['calls'])} calls written to {DATA}")


if __name__ == "__main__":
    main()
