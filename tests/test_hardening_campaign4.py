"""Issue 25, campaign 4: attacks on the surfaces of rounds 1-3 and on what landed in session 4.

Each parametrised case is one attack, with a comment saying what it attacks. Findings fixed
here (each test fails without its fix):

- Garbage labels under packing padding: with ``segment_ids=``, a label at a step whose
  segment id is -1 (or, with ``shift``, a label predicted from another document) was refused
  by the label check although :meth:`Pipeline.with_segments` drops the step
  (``test_garbage_labels_under_segment_padding_are_ignored``).
- ``aggregate(mode="global_token_mean", global_count=...)`` refused a weighted count one ulp
  below the micro-batch's own float sum (``test_weighted_global_count_*``): the rule is now
  exact for whole-number counts, a relative ``COUNT_RTOL`` for weighted ones, shared with
  ``shard_scales``.
- ``aggregate(global_count=10**400)`` (any post-training count or coefficient given as an int
  beyond float64) raised a bare OverflowError; now a ValueError naming the argument.
- ``maskloss.dask.evaluate`` / ``maskloss evaluate`` of the sparse cross-entropy with predictions
  lacking the class axis blamed ``y_true`` with a wrong expected shape; now it names ``y_pred``
  as the in-memory loss does.

The rest are attacks that found nothing, kept as regression guards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest

import maskloss
from maskloss.reductions import COUNT_RTOL

B, T, C = 2, 5, 4
SEG = np.array([[0, 0, 1, 1, -1], [2, 2, 2, -1, -1]])


def _logits(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(B, T, C))


def _labels(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, C, (B, T))


# ---------------------------------------------------------------------------------------------
# Finding 1: garbage labels under packing padding (segment id -1) are ignored, never refused
# ---------------------------------------------------------------------------------------------

_LABEL_GARBAGE = [99, -7, C]  # out of range above, negative (not an ignore_index), exactly C


@pytest.mark.parametrize("garbage", _LABEL_GARBAGE)
@pytest.mark.parametrize("shift", [0, 1])
@pytest.mark.parametrize("mask", [None, "ones"])
def test_garbage_labels_under_segment_padding_are_ignored(garbage: int, shift: int, mask: Any) -> None:
    # Before the fix: "y_true holds label 99 at valid step (0, 4)" although segment id -1 there.
    clean, logits = _labels(), _logits()
    dirty = clean.copy()
    dirty[SEG < 0] = garbage
    m = None if mask is None else np.ones((B, T), bool)
    kw: dict[str, Any] = {"from_logits": True, "segment_ids": SEG, "mask": m}
    if shift:
        kw["shift"] = shift
    ce = maskloss.sparse_categorical_crossentropy
    assert float(ce(dirty, logits, **kw)) == float(ce(clean, logits, **kw))
    v0, g0 = maskloss.value_and_grad(ce)(clean, logits, **kw)
    v1, g1 = maskloss.value_and_grad(ce)(dirty, logits, **kw)
    assert float(v0) == float(v1) and np.array_equal(g0, g1)


def test_garbage_label_predicted_across_a_document_boundary_is_ignored() -> None:
    # With shift=1 the first label of document 1 is scored by document 0's last step: dropped.
    clean, logits = _labels(), _logits()
    dirty = clean.copy()
    dirty[0, 2] = 99
    kw = {"from_logits": True, "segment_ids": SEG, "shift": 1}
    ce = maskloss.sparse_categorical_crossentropy
    assert float(ce(dirty, logits, **kw)) == float(ce(clean, logits, **kw))


def test_token_accuracy_ignores_garbage_labels_under_segment_padding() -> None:
    clean, logits = _labels(), _logits()
    dirty = clean.copy()
    dirty[SEG < 0] = 99
    acc = maskloss.token_accuracy
    assert float(acc(dirty, logits, segment_ids=SEG)) == float(acc(clean, logits, segment_ids=SEG))


def test_garbage_label_in_a_document_is_still_refused() -> None:
    # The fix must not hide a bad label where the step counts.
    dirty = _labels()
    dirty[0, 1] = 99
    with pytest.raises(ValueError, match="label 99"):
        maskloss.sparse_categorical_crossentropy(dirty, _logits(), from_logits=True, segment_ids=SEG)


def test_segment_ids_do_not_swallow_a_refused_numpy_ma_mask() -> None:
    # A numpy.ma mask with masked entries is refused (never dropped), with segments too.
    m = np.ma.masked_array(np.ones((B, T), bool), mask=np.zeros((B, T), bool))
    m.mask[0, 0] = True
    with pytest.raises(TypeError, match=r"numpy\.ma"):
        maskloss.sparse_categorical_crossentropy(_labels(), _logits(), m, from_logits=True, segment_ids=SEG)


# ---------------------------------------------------------------------------------------------
# Finding 2: the rule for a given global count (integers exact, weighted within COUNT_RTOL)
# ---------------------------------------------------------------------------------------------

def _weighted_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    w = np.full((1, 10), 0.1)
    m = np.ones((1, 10), bool)
    own = float(maskloss.reduce(m, m, reduction="sum", sample_weight=w))
    return np.ones((1, 10)), m, w, own


def test_weighted_global_count_one_ulp_below_is_accepted() -> None:
    # A rank summing ten weights of 0.1 left to right gets 0.9999999999999999; the
    # micro-batch's own (pairwise) sum is 1.0. Before the fix: "below this micro-batch's own".
    loss, m, w, own = _weighted_case()
    other_order = sum([0.1] * 10)
    assert other_order < own
    value = maskloss.aggregate(loss, m, mode="global_token_mean", global_count=other_order, sample_weight=w)
    assert float(value) == pytest.approx(1.0, rel=1e-15)


def test_weighted_global_count_beyond_the_tolerance_is_refused() -> None:
    loss, m, w, own = _weighted_case()
    with pytest.raises(ValueError, match="below this micro-batch's own"):
        maskloss.aggregate(loss, m, mode="global_token_mean", global_count=own * (1 - 10 * COUNT_RTOL),
                           sample_weight=w)


def test_unweighted_global_count_is_exact() -> None:
    loss, m = np.ones((1, 10)), np.ones((1, 10), bool)
    with pytest.raises(ValueError, match="below this micro-batch's own 10"):
        maskloss.aggregate(loss, m, mode="global_token_mean", global_count=float(np.nextafter(10.0, 0)))
    assert float(maskloss.aggregate(loss, m, mode="global_token_mean", global_count=10)) == 1.0


def test_shard_scales_shares_the_count_rule() -> None:
    m = np.ones((2, 5), bool)
    layout = maskloss.ShardLayout.split(2, 5, micro_batches=[1, 1])
    w = np.full((2, 5), 0.1)
    own = float(np.where(m, w, 0.0).sum())
    maskloss.shard_scales(m, layout, reduction="global_token_mean", sample_weight=w,
                          global_count=own * (1 - COUNT_RTOL / 2))
    with pytest.raises(ValueError, match="below"):
        maskloss.shard_scales(m, layout, reduction="global_token_mean", global_count=float(np.nextafter(10.0, 0)))


# ---------------------------------------------------------------------------------------------
# Attacks that found nothing (regression guards)
# ---------------------------------------------------------------------------------------------

def _probs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    p = np.random.default_rng(seed).uniform(0.05, 1.0, shape)
    return p / p.sum(-1, keepdims=True)


def _dense_case(name: str) -> tuple[Any, tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """(loss, (y_true, y_pred), options) of one dense loss on (B, T, C) inputs."""
    rng = np.random.default_rng(7)
    if name in ("mse", "mae"):
        return getattr(maskloss, name), (rng.normal(size=(B, T, C)), rng.normal(size=(B, T, C))), {}
    if name == "binary_crossentropy":
        return maskloss.binary_crossentropy, (rng.integers(0, 2, (B, T, C)).astype(float),
                                              rng.uniform(0.05, 0.95, (B, T, C))), {}
    if name == "categorical_crossentropy":
        return maskloss.categorical_crossentropy, (_probs((B, T, C), 1), _probs((B, T, C), 2)), {}
    if name == "kl_divergence":
        return maskloss.kl_divergence, (_probs((B, T, C), 3), _probs((B, T, C), 4)), {}
    raise AssertionError(name)


DENSE = ("mse", "mae", "binary_crossentropy", "categorical_crossentropy", "kl_divergence")
MASK = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], bool)
GARBAGE = (np.nan, np.inf, -np.inf, 1e308)


@pytest.mark.parametrize("garbage", GARBAGE, ids=["nan", "inf", "-inf", "1e308"])
@pytest.mark.parametrize("name", DENSE)
def test_garbage_under_the_mask_changes_neither_value_nor_gradient(name: str, garbage: float) -> None:
    fn, (yt, yp), kw = _dense_case(name)
    dt, dp = yt.copy(), yp.copy()
    dt[~MASK], dp[~MASK] = garbage, garbage
    v0, g0 = maskloss.value_and_grad(fn)(yt, yp, MASK, **kw)
    v1, g1 = maskloss.value_and_grad(fn)(dt, dp, MASK, **kw)
    assert float(v0) == float(v1) and np.array_equal(g0, g1)
    assert np.all(g1[~MASK] == 0)


@pytest.mark.parametrize("garbage", [99, -1, -100, C])
def test_garbage_labels_under_the_mask_sparse(garbage: int) -> None:
    lab, logits = _labels(), _logits()
    dirty = lab.copy()
    dirty[~MASK] = garbage
    ce = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)
    v0, g0 = ce(lab, logits, MASK, from_logits=True)
    v1, g1 = ce(dirty, logits, MASK, from_logits=True)
    assert float(v0) == float(v1) and np.array_equal(g0, g1)


@pytest.mark.parametrize("name", DENSE)
def test_read_only_inputs_are_never_written(name: str) -> None:
    fn, (yt, yp), kw = _dense_case(name)
    copies = yt.copy(), yp.copy(), MASK.copy()
    for a in (yt, yp):
        a.setflags(write=False)
    m = MASK.copy()
    m.setflags(write=False)
    maskloss.value_and_grad(fn)(yt, yp, m, **kw)
    for a, c in zip((yt, yp, m), copies, strict=True):
        assert np.array_equal(a, c)


@pytest.mark.parametrize("variant", ["big_endian", "non_contiguous", "fortran", "lists", "float32_exact"])
@pytest.mark.parametrize("name", ["mse", "mae"])
def test_input_zoo_layouts_give_the_float64_value(name: str, variant: str) -> None:
    fn, (yt, yp), _ = _dense_case(name)
    if variant == "float32_exact":  # values exactly representable in float32
        yt, yp = yt.astype(np.float32).astype(np.float64), yp.astype(np.float32).astype(np.float64)
    expected = float(fn(yt, yp, MASK))
    if variant == "big_endian":
        args: tuple[Any, ...] = (yt.astype(">f8"), yp.astype(">f8"), MASK)
    elif variant == "non_contiguous":
        args = (np.repeat(yt, 2, axis=-1)[..., ::2], np.repeat(yp, 2, axis=-1)[..., ::2], MASK)
    elif variant == "fortran":
        args = (np.asfortranarray(yt), np.asfortranarray(yp), np.asfortranarray(MASK))
    elif variant == "lists":
        args = (yt.tolist(), yp.tolist(), MASK.tolist())
    else:
        args = (yt.astype(np.float32), yp.astype(np.float32), MASK)
    assert float(fn(*args)) == expected


@pytest.mark.parametrize("bad", [np.array([[1, 2]], dtype=object), "abc", None])
def test_object_string_none_predictions_are_refused(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        maskloss.mse(np.zeros((1, 2)), bad)


def test_bool_labels_are_refused() -> None:
    with pytest.raises(TypeError, match="bool"):
        maskloss.sparse_categorical_crossentropy(np.ones((B, T), bool), _logits(), from_logits=True)


@pytest.mark.parametrize("name", DENSE)
@pytest.mark.parametrize("scale", [2.0, 0.5, 3.0])
def test_scale_multiplies_value_and_gradient(name: str, scale: float) -> None:
    fn, (yt, yp), kw = _dense_case(name)
    v0, g0 = maskloss.value_and_grad(fn)(yt, yp, MASK, **kw)
    v1, g1 = maskloss.value_and_grad(fn)(yt, yp, MASK, scale=scale, **kw)
    assert float(v1) == pytest.approx(scale * float(v0), rel=1e-14)
    np.testing.assert_allclose(g1, scale * g0, rtol=1e-14, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "2", None, [2.0]])
def test_bad_scale_is_refused_naming_it(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="scale"):
        maskloss.mse(np.zeros((1, 2)), np.ones((1, 2)), scale=bad)


@pytest.mark.parametrize("name", ["sparse_categorical_crossentropy", "mse"])
def test_many_threads_give_the_serial_bits(name: str) -> None:
    # 8 callers at once while the pool has 2 threads: each result is bit-identical to serial.
    if name == "mse":
        yt, yp = np.random.default_rng(3).normal(size=(2, 2000, 8)), np.random.default_rng(4).normal(size=(2, 2000, 8))

        def call() -> Any:
            return maskloss.value_and_grad(maskloss.mse)(yt, yp)
    else:
        lab = np.random.default_rng(5).integers(0, 16, (4, 1000))
        lg = np.random.default_rng(6).normal(size=(4, 1000, 16))

        def call() -> Any:
            return maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(lab, lg, from_logits=True)
    old = maskloss.get_num_threads()
    try:
        maskloss.set_num_threads(2)
        v0, g0 = call()
        out: list[Any] = [None] * 8

        def run(i: int) -> None:
            out[i] = call()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        maskloss.set_num_threads(old)
    for v, g in out:
        assert float(v) == float(v0) and np.array_equal(g, g0)


@pytest.mark.parametrize("bad", [True, 0, -1, 1.5, "2", None, 10**9])
def test_set_num_threads_bad_values_are_refused(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        maskloss.set_num_threads(bad)


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5", "1e3"])
def test_bad_maskloss_num_threads_names_the_variable(value: str) -> None:
    r = _run("import maskloss", {"MASKLOSS_NUM_THREADS": value})
    assert r.returncode != 0 and "MASKLOSS_NUM_THREADS" in r.stderr.splitlines()[-1]


@pytest.mark.parametrize("value", [" 2 ", "", "   "])
def test_blank_or_padded_maskloss_num_threads_is_read(value: str) -> None:
    r = _run("import maskloss; print(maskloss.get_num_threads())", {"MASKLOSS_NUM_THREADS": value})
    assert r.returncode == 0, r.stderr
    if value.strip():
        assert r.stdout.strip() == "2"


def test_fork_after_the_pool_exists_returns() -> None:
    # A fork()ed child of a process whose pool has run must not deadlock.
    code = (
        "import os, numpy as np, maskloss\n"
        "maskloss.set_num_threads(2)\n"
        "x = np.random.default_rng(0).normal(size=(2, 4000, 4))\n"
        "v = float(maskloss.mse(x, 0 * x))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if float(maskloss.mse(x, 0 * x)) == v else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status))\n"
    )
    r = _run(code)
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr


def test_conformance_help_exits_zero() -> None:
    r = subprocess.run([sys.executable, "-m", "maskloss", "conformance", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "usage" in r.stdout


@pytest.mark.parametrize("argv", [["evaluate", "--bogus"], ["nope"], ["evaluate", "mse", "/nonexistent.npy"]])
def test_cli_bad_options_exit_non_zero_without_a_traceback(argv: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "maskloss", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_demo_into_a_closed_pipe_is_quiet() -> None:
    r = subprocess.run(f"{sys.executable} -m maskloss demo | head -1", shell=True, capture_output=True,
                       text=True, timeout=120)
    assert "BrokenPipe" not in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# Finding 3: a count beyond float64 is a ValueError naming it, not a bare OverflowError
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "kw"), [("global_token_mean", {"global_count": 10**400}),
                                          ("constant", {"constant": -(10**400)})])
def test_aggregate_count_beyond_float64_names_it(mode: str, kw: dict[str, Any]) -> None:
    # Before the fix: OverflowError "int too large to convert to float", naming nothing.
    with pytest.raises(ValueError, match=next(iter(kw))):
        maskloss.aggregate(np.ones((1, 3)), mode=mode, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# More attacks that found nothing: linear CE, post-training, counts, masks
# ---------------------------------------------------------------------------------------------

_H = np.random.default_rng(11).normal(size=(B, T, 3))
_W = np.random.default_rng(12).normal(size=(7, 3))
_LAB = np.random.default_rng(13).integers(0, 7, (B, T))


@pytest.mark.parametrize("kw", [{}, {"shift": 1}, {"softcap": 5.0}, {"temperature": 0.7},
                                {"label_smoothing": 0.1, "smoothing_rule": "others"},
                                {"label_smoothing": 0.1, "smoothing_form": "kl"}, {"z_loss": 1e-4},
                                {"segment_ids": SEG}, {"segment_ids": SEG, "shift": 1}])
def test_linear_cross_entropy_equals_sparse_ce_of_the_logits(kw: dict[str, Any]) -> None:
    a = maskloss.linear_cross_entropy(_H, _W, _LAB, **kw)
    b = maskloss.sparse_categorical_crossentropy(_LAB, _H @ _W.T, from_logits=True, **kw)
    assert float(a) == pytest.approx(float(b), rel=1e-14)


@pytest.mark.parametrize("shift", [0, 1])
def test_linear_cross_entropy_ignores_garbage_under_segment_padding(shift: int) -> None:
    dirty = np.where(SEG < 0, 999, _LAB)
    assert float(maskloss.linear_cross_entropy(_H, _W, dirty, segment_ids=SEG, shift=shift)) == float(
        maskloss.linear_cross_entropy(_H, _W, _LAB, segment_ids=SEG, shift=shift))


@pytest.mark.parametrize("kw", [{"shift": -1}, {"shift": True}, {"softcap": 0.0}, {"temperature": float("nan")},
                                {"smoothing_rule": "x"}, {"smoothing_form": "y"}])
def test_linear_cross_entropy_bad_options_name_them(kw: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError), match=next(iter(kw))):
        maskloss.linear_cross_entropy(_H, _W, _LAB, **kw)


def test_linear_cross_entropy_garbage_under_the_mask() -> None:
    hg, lg = _H.copy(), _LAB.copy()
    hg[~MASK], lg[~MASK] = np.nan, 999
    assert float(maskloss.linear_cross_entropy(hg, _W, lg, MASK)) == float(
        maskloss.linear_cross_entropy(_H, _W, _LAB, MASK))


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimate_garbage_under_the_mask_is_zero_and_unread(estimator: str) -> None:
    lp = np.random.default_rng(14).normal(size=(B, T)) - 2
    ref = lp + 1e-3
    dirty = np.where(MASK, lp, np.nan)
    a, b = maskloss.kl_estimate(dirty, ref, MASK, estimator=estimator), maskloss.kl_estimate(lp, ref, MASK,
                                                                                              estimator=estimator)
    assert np.array_equal(a, b) and np.all(a[~MASK] == 0)


@pytest.mark.parametrize("estimator", ["low_var_kl", "abs", "K3", ""])
def test_kl_estimate_unknown_estimator_is_refused(estimator: str) -> None:
    with pytest.raises(ValueError, match="estimator"):
        maskloss.kl_estimate(np.zeros((1, 2)), np.zeros((1, 2)), estimator=estimator)


@pytest.mark.parametrize("threshold", [1.5, -0.1, float("nan")])
def test_high_entropy_mask_bad_threshold(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        maskloss.high_entropy_mask(np.ones((B, T)), MASK, threshold)


def test_high_entropy_mask_nan_under_the_mask_and_empty_mask() -> None:
    ent = np.random.default_rng(15).uniform(size=(B, T))
    assert np.array_equal(maskloss.high_entropy_mask(np.where(MASK, ent, np.nan), MASK, 0.5),
                          maskloss.high_entropy_mask(ent, MASK, 0.5))
    assert not maskloss.high_entropy_mask(ent, np.zeros((B, T), bool), 0.2).any()


def test_clipped_value_loss_garbage_under_the_mask_value_and_gradient() -> None:
    rng = np.random.default_rng(16)
    v, ret = rng.normal(size=(B, T)), rng.normal(size=(B, T))
    ov = v + 0.1
    vg = maskloss.value_and_grad(maskloss.clipped_value_loss)
    a = vg(np.where(MASK, v, np.nan), np.where(MASK, ov, np.inf), np.where(MASK, ret, -np.inf), MASK)
    b = vg(v, ov, ret, MASK)
    assert float(a[0]) == float(b[0]) and np.array_equal(a[1], b[1]) and np.all(a[1][~MASK] == 0)


@pytest.mark.parametrize("clip", [-0.1, float("nan"), float("inf")])
def test_clipped_value_loss_bad_clip_range(clip: float) -> None:
    with pytest.raises(ValueError, match="value_clip_range"):
        maskloss.clipped_value_loss(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)), value_clip_range=clip)


@pytest.mark.parametrize("kw", [{"f_divergence_type": "bogus"}, {"beta": 0.0}, {"beta": float("inf")},
                                {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": float("nan")}])
def test_dpo_bad_options_name_them(kw: dict[str, Any]) -> None:
    c = np.array([-1.0, -2.0])
    with pytest.raises((TypeError, ValueError), match=list(kw)[-1]):
        maskloss.dpo_loss(c, c - 1, c, c, **kw)


@pytest.mark.parametrize("ftype", ["forward_kl", "alpha_divergence"])
def test_dpo_overflowing_f_divergence_score_is_an_error_not_inf(ftype: str) -> None:
    c = np.array([-1e6, -2.0])
    with pytest.raises(ValueError, match="overflows"):
        maskloss.dpo_loss(c, np.array([-1.0, -1.0]), np.array([-1.0, -2.0]), np.array([-1.0, -1.0]),
                          f_divergence_type=ftype)


def test_policy_gradient_weight_garbage_under_the_mask_and_inf_at_valid() -> None:
    logits = _H @ _W.T
    w = np.random.default_rng(17).normal(size=(B, T))
    assert float(maskloss.policy_gradient_objective(_LAB, logits, np.where(MASK, w, np.nan), MASK)) == float(
        maskloss.policy_gradient_objective(_LAB, logits, w, MASK))
    with pytest.raises(ValueError, match="weight"):
        maskloss.policy_gradient_objective(_LAB, logits, np.where(MASK, np.inf, 0.0), MASK)


@pytest.mark.parametrize(("lengths", "maxlen", "error"), [
    ([3, -1], 4, ValueError), ([3], 2**62, ValueError), ([2.5], 4, TypeError), ([5], 4, ValueError),
    ([True], 4, TypeError), ([2], 4.0, TypeError)])
def test_mask_from_lengths_bad_inputs(lengths: Any, maxlen: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        maskloss.mask_from_lengths(lengths, maxlen)


@pytest.mark.parametrize("tokens", [-1, float("nan"), float("inf")])
def test_global_counts_bad_tokens(tokens: float) -> None:
    with pytest.raises(ValueError, match="tokens"):
        maskloss.GlobalCounts(tokens=tokens, nonempty_sequences=1, sequences=1, steps=1)


@pytest.mark.parametrize("count", [True, "5", float("inf"), 0, -2])
def test_aggregate_bad_global_count(count: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="global_count"):
        maskloss.aggregate(np.ones((1, 3)), mode="global_token_mean", global_count=count)


# ---------------------------------------------------------------------------------------------
# Input zoo: framework tensors of odd dtypes, masks, 0-d and empty inputs (found nothing)
# ---------------------------------------------------------------------------------------------

_X = np.random.default_rng(20).normal(size=(2, 5, 3))
_Y = np.random.default_rng(21).normal(size=(2, 5, 3))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_low_precision_tensors_give_the_value_of_their_rounded_values(framework: str, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    t = getattr(torch, dtype)
    # the tensors' own values, read back as float64 by torch itself: the expected inputs
    xr, yr = (torch.tensor(a).to(t).to(torch.float64).numpy() for a in (_X, _Y))
    expected = float(maskloss.mse(xr, yr))
    if framework == "torch":
        args: tuple[Any, ...] = (torch.tensor(_X).to(t), torch.tensor(_Y).to(t))
    else:
        jnp = pytest.importorskip("jax.numpy")
        args = (jnp.asarray(xr, dtype=dtype), jnp.asarray(yr, dtype=dtype))
    assert float(maskloss.mse(*args)) == expected


@pytest.mark.parametrize("variant", ["requires_grad", "transposed", "int_mask"])
def test_torch_tensor_variants_read_as_numpy(variant: str) -> None:
    torch = pytest.importorskip("torch")
    if variant == "requires_grad":
        got = maskloss.mse(torch.tensor(_X, requires_grad=True), torch.tensor(_Y))
        assert float(got) == float(maskloss.mse(_X, _Y))
    elif variant == "transposed":
        got = maskloss.mse(torch.tensor(_X).transpose(0, 1), torch.tensor(_Y).transpose(0, 1))
        assert float(got) == float(maskloss.mse(_X.transpose(1, 0, 2), _Y.transpose(1, 0, 2)))
    else:
        got = maskloss.mse(_X, _Y, torch.tensor(MASK.astype(np.int64)))
        assert float(got) == float(maskloss.mse(_X, _Y, MASK))


@pytest.mark.parametrize("bad", ["complex_numpy", "complex_torch"])
def test_complex_inputs_are_refused(bad: str) -> None:
    if bad == "complex_torch":
        torch = pytest.importorskip("torch")
        arg: Any = torch.tensor([[1 + 1j]])
    else:
        arg = np.array([[1 + 1j]])
    with pytest.raises(TypeError, match="real numbers"):
        maskloss.mse(arg, np.ones((1, 1)))


@pytest.mark.parametrize("mask", [np.full((2, 5), 0.5), np.full((2, 5), np.nan), np.full((2, 5), 2, np.uint8)])
def test_masks_that_are_not_0_1_are_refused(mask: np.ndarray) -> None:
    with pytest.raises(ValueError, match="mask must hold only 0/1"):
        maskloss.mse(_X, _Y, mask)


def test_zero_d_inputs_are_refused_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="y_true"):
        maskloss.mse(1.0, 2.0)


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3)])
def test_empty_batches_are_nan_as_0_over_0(shape: tuple[int, ...]) -> None:
    assert np.isnan(float(maskloss.mse(np.zeros(shape), np.zeros(shape))))


def test_sample_weight_nan_under_the_mask_and_negative_at_valid() -> None:
    m = np.zeros((2, 5), bool)
    m[:, :2] = True
    assert float(maskloss.mse(_X, _Y, m, sample_weight=np.where(m, 1.0, np.nan))) == float(maskloss.mse(_X, _Y, m))
    with pytest.raises(ValueError, match="sample_weight"):
        maskloss.mse(_X, _Y, sample_weight=-np.ones((2, 5)))


@pytest.mark.parametrize(("kw", "name"), [({"weight_normalization": "x"}, "weight_normalization"),
                                          ({"reduction": "mean"}, "reduction")])
def test_bad_loss_options_name_them(kw: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        maskloss.mse(_X, _Y, **kw)


# ---------------------------------------------------------------------------------------------
# Finding 4: maskloss.dask / `maskloss evaluate` with predictions lacking the class axis blamed
# y_true ("y_true must have shape (2,), got (2, 5)"); it now says what the in-memory loss says
# ---------------------------------------------------------------------------------------------

def test_dask_sparse_predictions_without_a_class_axis_are_named() -> None:
    da = pytest.importorskip("dask.array")
    from maskloss import dask as mdask

    labels = np.zeros((2, 5), np.int64)
    with pytest.raises(ValueError, match=r"y_pred must have shape y_true\.shape \+ \(classes,\)"):
        mdask.evaluate(maskloss.sparse_categorical_crossentropy, da.from_array(labels),
                          da.from_array(np.zeros((2, 5))), from_logits=True)


def _evaluate(tmp: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maskloss", "evaluate", *argv], capture_output=True, text=True,
                          timeout=120, cwd=tmp)


@pytest.fixture
def files(tmp_path: Any) -> Any:
    rng = np.random.default_rng(30)
    lab = rng.integers(0, 4, (2, 5))
    np.save(tmp_path / "lab.npy", lab)
    np.save(tmp_path / "lg.npy", rng.normal(size=(2, 5, 4)))
    np.save(tmp_path / "garbage.npy", np.where(np.arange(5) >= 3, 99, lab))
    np.save(tmp_path / "part.npy", np.arange(5)[None].repeat(2, 0) < 3)
    np.save(tmp_path / "none.npy", np.zeros((2, 5), bool))
    (tmp_path / "junk.npy").write_text("not numpy")
    return tmp_path


def test_evaluate_predictions_without_a_class_axis_one_line(files: Any) -> None:
    r = _evaluate(files, "sparse_categorical_crossentropy", "lab.npy", "lab.npy", "--from-logits")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "y_pred must have shape" in r.stderr


@pytest.mark.parametrize("argv", [
    ["--label-smoothing", "nan"], ["--label-smoothing", "2"], ["--mask", "lg.npy"], ["--mask", "junk.npy"],
])
def test_evaluate_bad_options_and_files_one_line(files: Any, argv: list[str]) -> None:
    r = _evaluate(files, "sparse_categorical_crossentropy", "lab.npy", "lg.npy", "--from-logits", *argv)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_evaluate_ignores_garbage_labels_under_the_mask(files: Any) -> None:
    r = _evaluate(files, "sparse_categorical_crossentropy", "garbage.npy", "lg.npy", "--from-logits",
                  "--mask", "part.npy", "--json")
    assert r.returncode == 0, r.stderr
    lab, lg, m = (np.load(files / n) for n in ("garbage.npy", "lg.npy", "part.npy"))
    expected = float(maskloss.sparse_categorical_crossentropy(lab, lg, m, from_logits=True))
    assert json.loads(r.stdout)["values"]["token_mean"] == pytest.approx(expected, rel=1e-12)


def test_evaluate_empty_mask_json_is_null_not_nan(files: Any) -> None:
    r = _evaluate(files, "sparse_categorical_crossentropy", "lab.npy", "lg.npy", "--from-logits",
                  "--mask", "none.npy", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["values"]["token_mean"] is None


def test_evaluate_ignore_index_zero_is_kept(files: Any) -> None:
    r = _evaluate(files, "sparse_categorical_crossentropy", "lab.npy", "lg.npy", "--from-logits",
                  "--ignore-index", "0", "--json")
    lab, lg = np.load(files / "lab.npy"), np.load(files / "lg.npy")
    expected = float(maskloss.sparse_categorical_crossentropy(lab, lg, from_logits=True, ignore_index=0))
    assert json.loads(r.stdout)["values"]["token_mean"] == pytest.approx(expected, rel=1e-12)


def test_evaluate_option_of_another_loss_is_refused(files: Any) -> None:
    r = _evaluate(files, "mse", "lg.npy", "lg.npy", "--ignore-index", "0")
    assert r.returncode == 1 and "ignore_index" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Counts and strategies (found nothing)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts", [
    {"tokens": 3, "nonempty_sequences": 3, "sequences": 2, "steps": 3},   # more non-empty than sequences
    {"tokens": 3, "nonempty_sequences": 0, "sequences": 0, "steps": 3},   # tokens without sequences
    {"tokens": 3, "nonempty_sequences": 2**53 + 1, "sequences": 2**53 + 1, "steps": 3},  # beyond the steps
])
def test_global_counts_impossible_combinations(counts: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="impossible counts"):
        maskloss.GlobalCounts(**counts)


@pytest.mark.parametrize("array", [[1, 2, 3], [[1, 2], [3, 4]]])
def test_global_counts_from_array_wrong_shape(array: Any) -> None:
    with pytest.raises(ValueError, match="4-vector"):
        maskloss.GlobalCounts.from_array(array)


def test_masked_totals_negative_denominator_refused_where_it_divides() -> None:
    totals = maskloss.MaskedTotals.from_terms(np.ones((2, 3)), -np.ones((2, 3)))
    with pytest.raises(ValueError, match="denominator"):
        totals.value("token_mean")
    with pytest.raises(TypeError, match=r"parts\[0\]"):
        maskloss.MaskedTotals.concat([1, 2])  # type: ignore[list-item]


@pytest.mark.parametrize("kw", [{"kind": "x"}, {"kind": "sparse", "ignore_index": True},
                                {"kind": "regression", "max_magnitude": float("nan")},
                                {"kind": "regression", "max_magnitude": -1.0},
                                {"kind": "regression", "max_batch": 0},
                                {"kind": "regression", "min_steps": 5, "max_steps": 2}])
def test_padded_batches_bad_bounds_fail_eagerly(kw: dict[str, Any]) -> None:
    from hypothesis.errors import InvalidArgument

    from maskloss import strategies

    with pytest.raises((InvalidArgument, TypeError, ValueError)):
        strategies.padded_batches(**kw)
