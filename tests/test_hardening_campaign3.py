"""Issue 25, campaign 3: attacks on the surfaces of rounds 1 and 2 and on the new ones.

Each parametrised case is one attack, with a one-line comment saying what it attacks. The
findings this campaign fixed are pinned here too (each fails without its fix):

- ``maskloss.dask`` means of huge but representable values overflowed (``mae`` of errors of
  ``1e308`` was inf under every mean; weights of ``1e300`` times losses of ``1e308`` too): the
  Dask path now keeps its sums also as (mantissa, exponent) pairs, read only where a plain sum
  is not finite (``test_dask_means_of_huge_values_match_in_memory``).
- ``reduction="sum"``/``"batch_mean"`` with weights beyond float64's range warned "overflow
  encountered in ldexp" when undoing the power-of-two weight scale (the value, inf, is right).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import maskloss

SCALARS = ("sum", "token_mean", "sequence_mean", "batch_mean", "element_mean")


def _same(value: Any, expected: Any, rtol: float = 1e-12) -> bool:
    v, e = float(value), float(expected)
    if np.isnan(e) or np.isinf(e):
        return bool(np.isnan(v)) if np.isnan(e) else v == e
    return abs(v - e) <= rtol * abs(e)


# ---------------------------------------------------------------------------------------------
# 1. maskloss.dask: means of huge but representable values
# ---------------------------------------------------------------------------------------------

_HUGE_CASES = [
    # mae of errors near the float64 maximum: every per-sequence sum overflows
    ("errors_1e308", lambda rng: (rng.uniform(0.5, 1, (4, 6, 2)) * 1e308, None)),
    # weights of 1e300 times errors of 1e308: each term w * l is beyond float64, the mean is not
    ("weights_1e300", lambda rng: (rng.uniform(0.5, 1, (4, 6, 2)) * 1e308,
                                   rng.uniform(0.5, 1.5, (4, 6)) * 1e300)),
    # a per-sequence weight of 1e308 (the (B,) form): the denominators overflow as well
    ("sequence_weights_1e308", lambda rng: (rng.uniform(0, 1, (4, 6, 2)), np.full(4, 1e308))),
    # huge values in one sequence only, ordinary ones elsewhere: one block path scaled, one plain
    ("one_huge_sequence", lambda rng: (np.concatenate([np.full((1, 6, 2), 1.7e308),
                                                        rng.uniform(0, 1, (3, 6, 2))]), None)),
]


@pytest.mark.parametrize("case", [c[1] for c in _HUGE_CASES], ids=[c[0] for c in _HUGE_CASES])
@pytest.mark.parametrize("chunks", [(4, 6), (2, 3), (1, 1)], ids=["one_block", "2x2_blocks", "every_step"])
def test_dask_means_of_huge_values_match_in_memory(case: Any, chunks: tuple[int, int]) -> None:
    # Before the fix every mean of the first three cases was inf on Dask (finite in memory).
    da = pytest.importorskip("dask.array")
    from maskloss import dask as mdask

    rng = np.random.default_rng(25)
    pred, weight = case(rng)
    target = np.zeros_like(pred)
    mask = maskloss.mask_from_lengths([6, 3, 0, 1], 6)
    options: dict[str, Any] = {}
    lazy_options: dict[str, Any] = {}
    if weight is not None:
        options["sample_weight"] = weight
        lazy_options["sample_weight"] = da.from_array(weight, chunks=chunks) if weight.ndim == 2 else weight
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning on either path
        for reduction in SCALARS:
            expected = maskloss.mae(target, pred, mask, reduction=reduction, **options)
            lazy = mdask.evaluate(maskloss.mae, da.from_array(target, chunks=chunks + (2,)),
                                  da.from_array(pred, chunks=chunks + (2,)), da.from_array(mask, chunks=chunks),
                                  reduction=reduction, **lazy_options)
            value = lazy.compute(scheduler="threads")
            assert _same(value, expected), (reduction, value, expected)
            if reduction in ("token_mean", "sequence_mean"):  # weighted means of values below 2**1024
                assert np.isfinite(expected)


def test_dask_ordinary_sums_are_unchanged_and_the_pairs_agree() -> None:
    # The pairs are only read where a plain sum is not finite: for ordinary inputs the plain
    # seven sums give the value (the same bits as before), and the pairs hold the same sums.
    da = pytest.importorskip("dask.array")
    from maskloss import dask as mdask

    rng = np.random.default_rng(3)
    labels, logits = rng.integers(0, 5, (4, 6)), rng.normal(size=(4, 6, 5))
    stats = mdask.summary_stats(maskloss.sparse_categorical_crossentropy, da.from_array(labels, chunks=(2, 3)),
                                da.from_array(logits, chunks=(2, 3, 5)), from_logits=True).compute(scheduler="sync")
    assert stats.shape == (13,)
    summary = mdask.Summary.from_stats(stats)
    plain = mdask.Summary.from_stats(stats[:7])  # the seven sums alone: the old values
    assert summary.scaled is not None and plain.scaled is None
    for reduction in SCALARS:
        assert summary.value(reduction) == plain.value(reduction)
    for (m, e), total in zip(summary.scaled, (summary.numerator, summary.denominator, summary.sequence_ratios),
                             strict=True):
        assert 0.5 <= abs(m) < 1 and abs(np.ldexp(m, int(e)) - total) <= 1e-14 * abs(total)
    with pytest.raises(ValueError, match=r"stats must hold 13 sums \(or the first 7\), got shape \(8,\)"):
        mdask.Summary.from_stats(np.zeros(8))


def test_huge_weights_sum_is_inf_without_a_warning() -> None:
    # unscale's ldexp warned "overflow encountered in ldexp" for a sum beyond float64 (inf is right).
    weight = np.full((2, 3), 1e308)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for reduction in ("sum", "batch_mean"):
            assert maskloss.mae(np.zeros((2, 3, 1)), np.full((2, 3, 1), 10.0), reduction=reduction,
                                sample_weight=weight) == np.inf


# ---------------------------------------------------------------------------------------------
# 3. Campaign 3: the attacks. Shared inputs (small, so every case runs in milliseconds).
# ---------------------------------------------------------------------------------------------

B, T, C, H = 3, 5, 4, 3
_RNG = np.random.default_rng(2025)
LABELS = _RNG.integers(0, C, (B, T))
LOGITS = _RNG.normal(size=(B, T, C))
MASK = maskloss.mask_from_lengths([5, 2, 0], T)
HIDDEN = _RNG.normal(size=(B, T, H))
WEIGHT = _RNG.normal(size=(C, H))
LOGPROBS, REF_LOGPROBS = _RNG.normal(size=(B, T)) - 2.0, _RNG.normal(size=(B, T)) - 2.0
SCE = maskloss.sparse_categorical_crossentropy


def _garbage(x: np.ndarray, mask: np.ndarray, value: float = np.nan) -> np.ndarray:
    """``x`` with ``value`` at every masked step (all features)."""
    m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return np.where(m, x, value)


def _sce(y_pred: Any, **kw: Any) -> Any:
    return SCE(LABELS, y_pred, MASK, from_logits=True, **kw)


def _torch() -> Any:
    return pytest.importorskip("torch")


def _vp() -> Any:
    import maskloss.vocab_parallel as vp

    return vp


def _vp_parts(labels_a: Any = None, labels_b: Any = None, n_b: int = B * T) -> list[Any]:
    vp = _vp()
    z, y = LOGITS.reshape(-1, C), LABELS.reshape(-1)
    return [vp.vocab_partials(z[:, :1], y if labels_a is None else labels_a, (0, 1)),
            vp.vocab_partials(z[:n_b, 1:], (y if labels_b is None else labels_b)[:n_b], (1, C))]


# An input of another type or dtype either gives the float64 NumPy answer exactly or is refused.
EQUAL_TO_REFERENCE = [
    # big-endian float64 logits
    pytest.param(lambda: _sce(LOGITS.astype(">f8")), id="zoo-bigendian-logits"),
    # nested lists for labels, logits and mask
    pytest.param(lambda: SCE(LABELS.tolist(), LOGITS.tolist(), MASK.tolist(), from_logits=True), id="zoo-lists"),
    # a Fortran-ordered, non-contiguous view of the logits
    pytest.param(lambda: _sce(np.asfortranarray(LOGITS)[:, :, ::-1][:, :, ::-1]), id="zoo-fortran-view"),
    # read-only logits (np.broadcast_to-style views are read-only)
    pytest.param(lambda: _sce(np.lib.stride_tricks.as_strided(LOGITS, writeable=False)), id="zoo-readonly"),
    # integral float labels
    pytest.param(lambda: SCE(LABELS.astype(float), LOGITS, MASK, from_logits=True), id="zoo-float-labels"),
    # uint64 labels with 2**63 (beyond int64) under the mask
    pytest.param(lambda: SCE(np.where(MASK, LABELS, 2**63).astype(np.uint64), LOGITS, MASK, from_logits=True),
                 id="zoo-uint64-labels-huge-under-mask"),
    # an int8 mask of 0/1
    pytest.param(lambda: SCE(LABELS, LOGITS, MASK.astype(np.int8), from_logits=True), id="zoo-int8-mask"),
    # from_logits as np.bool_
    pytest.param(lambda: SCE(LABELS, LOGITS, MASK, from_logits=np.bool_(True)), id="zoo-numpy-bool-flag"),
    # torch tensors, logits requiring grad
    pytest.param(lambda: SCE(_torch().tensor(LABELS), _torch().tensor(LOGITS, requires_grad=True),
                             _torch().tensor(MASK), from_logits=True), id="zoo-torch-requires-grad"),
    # a torch int8 mask
    pytest.param(lambda: SCE(LABELS, LOGITS, _torch().tensor(MASK).to(_torch().int8), from_logits=True),
                 id="zoo-torch-int8-mask"),
    # NaN logits under the mask
    pytest.param(lambda: _sce(_garbage(LOGITS, MASK)), id="leak-sce-nan-logits"),
    # +inf logits under the mask, through value_and_grad
    pytest.param(lambda: maskloss.value_and_grad(SCE)(LABELS, _garbage(LOGITS, MASK, np.inf), MASK,
                                                      from_logits=True)[0], id="leak-sce-vag-inf-logits"),
    # out-of-range labels under the mask
    pytest.param(lambda: SCE(np.where(MASK, LABELS, 10**9), LOGITS, MASK, from_logits=True), id="leak-sce-labels"),
    # NaN sample weights under the mask
    pytest.param(lambda: _sce(LOGITS, sample_weight=np.where(MASK, 1.0, np.nan)), id="leak-sce-sample-weight"),
    # a (B, 1) sample weight of ones
    pytest.param(lambda: _sce(LOGITS, sample_weight=np.ones((B, 1))), id="zoo-sample-weight-b1"),
    # linear_cross_entropy with NaN hidden states under the mask equals the logits path
]


def _lce(*args: Any) -> Any:
    return maskloss.linear_cross_entropy(*args)


# The same for linear_cross_entropy: the reference is its own value on clean NumPy input.
LINEAR_EQUAL_TO_REFERENCE = [
    # NaN hidden states and labels -7 under the mask
    pytest.param(lambda: _lce(_garbage(HIDDEN, MASK), WEIGHT, np.where(MASK, LABELS, -7), MASK),
                 id="leak-linear-ce-hidden-and-labels"),
    # torch tensors
    pytest.param(lambda: _lce(_torch().tensor(HIDDEN), _torch().tensor(WEIGHT), _torch().tensor(LABELS),
                              _torch().tensor(MASK)), id="zoo-linear-ce-torch"),
    # lists
    pytest.param(lambda: _lce(HIDDEN.tolist(), WEIGHT.tolist(), LABELS.tolist(), MASK.tolist()),
                 id="zoo-linear-ce-lists"),
]


@pytest.mark.parametrize("call", EQUAL_TO_REFERENCE)
def test_input_zoo_and_garbage_give_the_reference(call: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = call()
    assert float(value) == float(_sce(LOGITS))


@pytest.mark.parametrize("call", LINEAR_EQUAL_TO_REFERENCE)
def test_linear_cross_entropy_zoo_gives_the_reference(call: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = call()
    assert float(value) == float(_lce(HIDDEN, WEIGHT, LABELS, MASK))
    # and the logits path agrees to rounding (the linear path never forms the logits)
    assert abs(float(value) - float(SCE(LABELS, HIDDEN @ WEIGHT.T, MASK, from_logits=True))) <= 1e-14


_SEGMENTS = np.where(MASK, np.arange(B)[:, None], -1)  # one document per non-empty row


def _entropy_leak() -> float:
    return float(maskloss.entropy(_garbage(LOGITS, MASK), MASK) - maskloss.entropy(LOGITS, MASK))


def _pooling_leak() -> float:
    from maskloss.layers import GlobalAveragePooling1D

    x = _RNG.normal(size=(B, T, 2))
    pool = GlobalAveragePooling1D()
    return float(np.abs(pool(_garbage(x, MASK), mask=MASK)[:2] - pool(x, mask=MASK)[:2]).max())


# Garbage (NaN, inf, out-of-range) under the mask never reaches a value: the difference is 0.
NO_LEAK = [
    # entropy of NaN logits under the mask
    pytest.param(_entropy_leak, id="leak-entropy"),
    # z_loss of NaN logits under the mask
    pytest.param(lambda: maskloss.z_loss(_garbage(LOGITS, MASK), MASK) - maskloss.z_loss(LOGITS, MASK),
                 id="leak-z-loss"),
    # token_accuracy of NaN logits and labels 10**9 under the mask
    pytest.param(lambda: maskloss.token_accuracy(np.where(MASK, LABELS, 10**9), _garbage(LOGITS, MASK), MASK)
                 - maskloss.token_accuracy(LABELS, LOGITS, MASK), id="leak-token-accuracy"),
    # kl_estimate k3 of NaN log-probs under the mask
    pytest.param(lambda: np.abs(maskloss.kl_estimate(_garbage(LOGPROBS, MASK), REF_LOGPROBS, MASK)
                                - maskloss.kl_estimate(LOGPROBS, REF_LOGPROBS, MASK)).max(), id="leak-kl-k3"),
    # aggregate of NaN per-token losses under the mask
    pytest.param(lambda: maskloss.aggregate(_garbage(LOGPROBS, MASK), MASK) - maskloss.aggregate(LOGPROBS, MASK),
                 id="leak-aggregate"),
    # policy_gradient_objective with NaN weights under the mask
    pytest.param(lambda: maskloss.policy_gradient_objective(LABELS, LOGITS, _garbage(np.ones((B, T)), MASK), MASK)
                 - maskloss.policy_gradient_objective(LABELS, LOGITS, np.ones((B, T)), MASK), id="leak-policy-weight"),
    # reduce of inf values under the mask with segment ids
    pytest.param(lambda: maskloss.reduce(_garbage(LOGPROBS, MASK, np.inf), MASK, segment_ids=_SEGMENTS)
                 - maskloss.reduce(LOGPROBS, MASK, segment_ids=_SEGMENTS), id="leak-reduce-segments"),
    # the pooling layer on NaN features under the mask
    pytest.param(_pooling_leak, id="leak-pooling-layer"),
    # clipped_surrogate of NaN ratios and inf advantages under the mask: 0 there
    pytest.param(lambda: np.abs(np.where(MASK, 0.0, maskloss.clipped_surrogate(
        _garbage(np.ones((B, T)), MASK), _garbage(np.ones((B, T)), MASK, np.inf), MASK))).max(),
        id="leak-clipped-surrogate"),
    # sequence_logprobs of NaN logits under the mask
    pytest.param(lambda: np.abs(maskloss.sequence_logprobs(LABELS, _garbage(LOGITS, MASK), MASK)
                                - maskloss.sequence_logprobs(LABELS, LOGITS, MASK)).max(), id="leak-sequence-logprobs"),
]


@pytest.mark.parametrize("difference", NO_LEAK)
def test_garbage_under_the_mask_never_reaches_a_value(difference: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(difference()) == 0.0


# Bad input is a ValueError/TypeError naming the argument and showing the value, never a bare
# traceback, a MemoryError or a silent wrong answer.
REFUSED = [
    # complex logits
    pytest.param(lambda: _sce(LOGITS.astype(complex)), TypeError, r"y_pred must be an array of real numbers, got dtype "
                 r"complex128", id="zoo-complex"),
    # object-dtype logits
    pytest.param(lambda: _sce(LOGITS.astype(object)), TypeError, r"y_pred .* got dtype object", id="zoo-object"),
    # datetime logits
    pytest.param(lambda: _sce(LOGITS.astype("datetime64[s]")), TypeError, r"y_pred .* datetime64", id="zoo-datetime"),
    # string labels
    pytest.param(lambda: SCE(LABELS.astype(str), LOGITS, from_logits=True), TypeError, r"y_true .* got dtype <U",
                 id="zoo-str-labels"),
    # bool labels
    pytest.param(lambda: SCE(LABELS.astype(bool), LOGITS, from_logits=True), TypeError,
                 r"y_true must hold integer class labels, got dtype bool", id="zoo-bool-labels"),
    # fractional labels
    pytest.param(lambda: SCE(LABELS + 0.5, LOGITS, from_logits=True), ValueError, r"y_true must hold integer class "
                 r"labels; found 1?\d?\.5", id="zoo-fractional-labels"),
    # ragged nested lists
    pytest.param(lambda: SCE([[0, 1], [1]], [[[0, 0], [0, 0]], [[0, 0]]], from_logits=True), TypeError,
                 r"y_true must be an array of numbers", id="zoo-ragged-list"),
    # 0-d inputs
    pytest.param(lambda: maskloss.mae(1.0, 2.0), ValueError, r"y_true must have at least 1 dimensions, got shape \(\)",
                 id="zoo-0d"),
    # no classes
    pytest.param(lambda: SCE(np.zeros((B, T), int), np.zeros((B, T, 0)), from_logits=True), ValueError,
                 r"y_pred has no features/classes", id="zoo-no-classes"),
    # complex torch tensor
    pytest.param(lambda: _sce(_torch().tensor(LOGITS).to(_torch().complex64)), TypeError, r"y_pred .* complex64",
                 id="zoo-torch-complex"),
    # a mask of 0.5
    pytest.param(lambda: SCE(LABELS, LOGITS, MASK * 0.5, from_logits=True), ValueError,
                 r"mask must hold only 0/1 .* found 0\.5", id="mask-half"),
    # a NaN in the mask
    pytest.param(lambda: SCE(LABELS, LOGITS, np.where(MASK, 1.0, np.nan), from_logits=True), ValueError,
                 r"mask must hold only 0/1 .* found nan", id="mask-nan"),
    # a (T,) mask where (B, T) is needed (no silent broadcast)
    pytest.param(lambda: SCE(LABELS, LOGITS, MASK[0], from_logits=True), ValueError,
                 r"mask must have shape \(3, 5\) .* got \(5,\)", id="mask-broadcast"),
    # a valid label beyond the classes
    pytest.param(lambda: SCE(np.where(MASK, 99, LABELS), LOGITS, MASK, from_logits=True), ValueError,
                 r"y_true holds label 99 at valid step \(0, 0\)", id="labels-out-of-range"),
    # ignore_index=True (a bool is not a label)
    pytest.param(lambda: _sce(LOGITS, ignore_index=True), TypeError, r"ignore_index must be an int or None, got True",
                 id="ignore-index-bool"),
    # ignore_index=0.0
    pytest.param(lambda: _sce(LOGITS, ignore_index=0.0), TypeError, r"ignore_index must be an int or None, got 0\.0",
                 id="ignore-index-float"),
    # label_smoothing as a string
    pytest.param(lambda: _sce(LOGITS, label_smoothing="0.1"), TypeError, r"label_smoothing must be a real number",
                 id="smoothing-str"),
    # label_smoothing NaN
    pytest.param(lambda: _sce(LOGITS, label_smoothing=float("nan")), ValueError,
                 r"label_smoothing must be in \[0, 1\], got nan", id="smoothing-nan"),
    # from_logits="yes"
    pytest.param(lambda: SCE(LABELS, LOGITS, from_logits="yes"), TypeError, r"from_logits must be True or False",
                 id="flag-str"),
    # reduction=None
    pytest.param(lambda: _sce(LOGITS, reduction=None), ValueError, r"reduction must be one of .* got None",
                 id="reduction-none-object"),
    # a class weight per class missing
    pytest.param(lambda: _sce(LOGITS, class_weight=[1, 2]), ValueError, r"class_weight must have shape \(4,\)",
                 id="class-weight-length"),
    # an infinite sample weight at a valid step
    pytest.param(lambda: _sce(LOGITS, sample_weight=np.where(MASK, np.inf, 1.0)), ValueError,
                 r"sample_weight must be finite and >= 0 at valid steps; found inf", id="sample-weight-inf"),
    # a (T,) sample weight (no silent broadcast)
    pytest.param(lambda: _sce(LOGITS, sample_weight=np.ones(T)), ValueError, r"sample_weight must have shape \(3, 5\)",
                 id="sample-weight-broadcast"),
    # probabilities outside [0, 1] without from_logits
    pytest.param(lambda: SCE(LABELS, LOGITS, MASK), ValueError, r"y_pred must hold probabilities in \[0, 1\] at valid "
                 r"steps \(pass from_logits=True", id="probabilities"),
    # linear_cross_entropy with the weight transposed
    pytest.param(lambda: maskloss.linear_cross_entropy(HIDDEN, WEIGHT.T, LABELS, MASK), ValueError,
                 r"hidden and weight must share the hidden size H", id="linear-ce-weight-transposed"),
    # linear_cross_entropy with a NaN in the weight (every class is read)
    pytest.param(lambda: maskloss.linear_cross_entropy(HIDDEN, np.full_like(WEIGHT, np.nan), LABELS, MASK),
                 ValueError, r"weight must be finite everywhere", id="linear-ce-nan-weight"),
    # linear_cross_entropy temperature 0
    pytest.param(lambda: maskloss.linear_cross_entropy(HIDDEN, WEIGHT, LABELS, MASK, temperature=0), ValueError,
                 r"temperature must be a finite real number > 0, got 0", id="head-temperature-0"),
    # linear_cross_entropy softcap inf
    pytest.param(lambda: maskloss.linear_cross_entropy(HIDDEN, WEIGHT, LABELS, MASK, softcap=np.inf), ValueError,
                 r"softcap must be a finite real number > 0, got inf", id="head-softcap-inf"),
    # linear_cross_entropy z_loss -1
    pytest.param(lambda: maskloss.linear_cross_entropy(HIDDEN, WEIGHT, LABELS, MASK, z_loss=-1.0), ValueError,
                 r"z_loss must be a finite real number >= 0, got -1\.0", id="head-z-loss-negative"),
    # token_logprobs temperature "1"
    pytest.param(lambda: maskloss.token_logprobs(LABELS, LOGITS, MASK, temperature=0.0), ValueError,
                 r"temperature must be finite and > 0, got 0\.0", id="logprobs-temperature"),
    # segment ids that are not contiguous documents
    pytest.param(lambda: maskloss.mae(np.zeros((1, 4, 1)), np.ones((1, 4, 1)), segment_ids=[[0, 1, 0, 1]]),
                 ValueError, r"segment_ids must number the documents .* found 0 after 1", id="segments-interleaved"),
    # segment id -2
    pytest.param(lambda: maskloss.mae(np.zeros((1, 4, 1)), np.ones((1, 4, 1)), segment_ids=[[0, -2, 1, 1]]),
                 ValueError, r"found -2 at index \(0, 1\)", id="segments-minus-two"),
    # cu_seqlens that decrease
    pytest.param(lambda: maskloss.segment_ids_from_cu_seqlens([0, 3, 2, 5], 5), ValueError,
                 r"cu_seqlens must be strictly increasing; found 3 then 2", id="cu-seqlens-decreasing"),
    # position ids that continue a document from the previous row
    pytest.param(lambda: maskloss.segment_ids_from_position_ids([[1, 2, 3, 0, 1]]), ValueError,
                 r"row 0 starts at position 1", id="position-ids-continue"),
    # pack into rows shorter than a sequence
    pytest.param(lambda: maskloss.pack(MASK, 2), ValueError, r"sequence 0 has 5 valid steps, more than row_length=2",
                 id="pack-too-short"),
    # unpack of the wrong shape
    pytest.param(lambda: maskloss.unpack(np.zeros((5, 5)), maskloss.pack(MASK, 6)), ValueError,
                 r"packed must have shape \(2, 6\)", id="unpack-shape"),
    # mask_from_lengths with maxlen=True
    pytest.param(lambda: maskloss.mask_from_lengths([1], True), TypeError, r"maxlen must be an int or None, got True",
                 id="lengths-bool-maxlen"),
    # mask_from_ids with a fractional pad id
    pytest.param(lambda: maskloss.mask_from_ids([[1, 2, 0]], 0.5), TypeError, r"pad_id must be an int, got 0\.5",
                 id="ids-fractional-pad"),
    # clipped_surrogate with a negative ratio
    pytest.param(lambda: maskloss.clipped_surrogate(-np.ones((B, T)), np.ones((B, T)), MASK), ValueError,
                 r"ratio must be >= 0 at valid steps; ratio\[0, 0\] is -1\.0", id="clipped-negative-ratio"),
    # clipped_surrogate with delta below 1 + epsilon_high
    pytest.param(lambda: maskloss.clipped_surrogate(np.ones((B, T)), np.ones((B, T)), MASK, delta=0.5), ValueError,
                 r"delta must be > 1 \+ epsilon_high = 1\.2, got 0\.5", id="clipped-delta"),
    # dpo_loss with beta NaN
    pytest.param(lambda: maskloss.dpo_loss(*[np.zeros(2)] * 4, beta=np.nan), ValueError,
                 r"beta must be finite and > 0, got nan", id="dpo-beta-nan"),
    # dpo_loss with a NaN log-prob
    pytest.param(lambda: maskloss.dpo_loss(np.array([np.nan]), *[np.zeros(1)] * 3), ValueError,
                 r"chosen_logps must be finite at valid steps; chosen_logps\[0\] is nan", id="dpo-nan-logp"),
    # kl_estimate with an unknown estimator
    pytest.param(lambda: maskloss.kl_estimate(LOGPROBS, REF_LOGPROBS, MASK, estimator="k4"), ValueError,
                 r"estimator must be one of 'k1', 'k2', 'k3'; got 'k4'", id="kl-estimator"),
    # aggregate with constant 0
    pytest.param(lambda: maskloss.aggregate(LOGPROBS, MASK, mode="constant", constant=0), ValueError,
                 r"constant must be finite and > 0, got 0\.0", id="aggregate-constant-0"),
    # GlobalCounts from a corrupted all-reduce (NaN)
    pytest.param(lambda: maskloss.GlobalCounts(tokens=np.nan, nonempty_sequences=0, sequences=1, steps=1), ValueError,
                 r"GlobalCounts: tokens must be finite and >= 0, got nan", id="global-counts-nan"),
    # micro_batch_value_and_grad of a mean without its global counts
    pytest.param(lambda: maskloss.micro_batch_value_and_grad(SCE, None)(LABELS, LOGITS, MASK, from_logits=True),
                 ValueError, r"counts is None, but reduction='token_mean' divides by a global count",
                 id="accumulation-no-counts"),
    # value_and_grad of a function that is not a maskloss loss
    pytest.param(lambda: maskloss.value_and_grad(print), TypeError, r"value_and_grad\(fn\): fn must be one of "
                 r"maskloss's losses", id="vag-not-a-loss"),
    # a shard layout that holds a step twice
    pytest.param(lambda: maskloss.ShardLayout(B, T, (maskloss.Shard((0, 1, 2), ((0, 5),)),
                                                     maskloss.Shard((2,), ((0, 5),)))), ValueError,
                 r"layout duplicates step \(2, 0\): 2 shards hold it", id="sharding-duplicate"),
    # a shard layout that loses a row
    pytest.param(lambda: maskloss.ShardLayout(B, T, (maskloss.Shard((0, 1), ((0, 5),)),)), ValueError,
                 r"layout loses step \(2, 0\)", id="sharding-lost-row"),
    # Embedding of an id beyond its vocabulary
    pytest.param(lambda: __import__("maskloss.layers").layers.Embedding(3, 2)(np.array([[0, 5]])), ValueError,
                 r"ids holds label 5 at valid step \(0, 1\), outside \[0, 3\)", id="layers-embedding-id"),
    # Dense with 2.5 units
    pytest.param(lambda: __import__("maskloss.layers").layers.Dense(2.5), ValueError,
                 r"units must be a positive int, got 2\.5", id="layers-dense-units"),
    # vocabulary shards: a label in no shard (its target logit would be 0 on every shard)
    pytest.param(lambda: _vp().merge_vocab_partials(_vp_parts(np.full(B * T, C + 1), np.full(B * T, C + 1))),
                 ValueError, r"labels must be classes in \[0, 4\) .* token 0 has label 5",
                 id="vocab-label-in-no-shard"),
    # vocabulary shards: the ignore index -100 (select valid tokens before sharding)
    pytest.param(lambda: _vp().merge_vocab_partials(_vp_parts(np.full(B * T, -100), np.full(B * T, -100))),
                 ValueError, r"token 0 has label -100", id="vocab-ignore-index"),
    # vocabulary shards given different labels
    pytest.param(lambda: _vp().merge_vocab_partials(_vp_parts(LABELS.reshape(-1), (LABELS.reshape(-1) + 1) % C)),
                 ValueError, r"vocabulary shards were given different labels: token 0", id="vocab-labels-differ"),
    # vocabulary shards of different token counts (NumPy's "inhomogeneous shape" before)
    pytest.param(lambda: _vp().merge_vocab_partials(_vp_parts(n_b=5)), ValueError,
                 r"vocabulary shards hold different numbers of tokens: \[5, 15\]", id="vocab-token-counts"),
    # a negative vocabulary range (accepted before)
    pytest.param(lambda: _vp().vocab_partials(LOGITS.reshape(-1, C)[:, :1], LABELS.reshape(-1), (-1, 0)), ValueError,
                 r"vocab_range must be \(a, b\) with 0 <= a < b .* got \(-1, 0\)", id="vocab-range-negative"),
    # a reversed vocabulary range ("must have shape (N, -3)" before)
    pytest.param(lambda: _vp().vocab_partials(LOGITS.reshape(-1, C)[:, :3], LABELS.reshape(-1), (3, 0)), ValueError,
                 r"vocab_range must be \(a, b\) with 0 <= a < b .* got \(3, 0\)", id="vocab-range-reversed"),
    # a fractional vocabulary range (truncated by int() before)
    pytest.param(lambda: _vp().vocab_partials(LOGITS.reshape(-1, C)[:, :3], LABELS.reshape(-1), (0.5, 3.5)),
                 TypeError, r"vocab_range must be a pair of ints \(a, b\), got \(0\.5, 3\.5\)", id="vocab-range-float"),
    # a bool vocabulary range
    pytest.param(lambda: _vp().vocab_partials(LOGITS.reshape(-1, C)[:, :1], LABELS.reshape(-1), (False, True)),
                 TypeError, r"vocab_range must be a pair of ints", id="vocab-range-bool"),
    # merged_cross_entropy with label_smoothing 2 (accepted before)
    pytest.param(lambda: _vp().merged_cross_entropy(_vp().merge_vocab_partials(_vp_parts()), label_smoothing=2.0),
                 ValueError, r"label_smoothing must be in \[0, 1\], got 2\.0", id="vocab-smoothing-2"),
    # merged_cross_entropy with z_loss -1 (a negative loss before)
    pytest.param(lambda: _vp().merged_cross_entropy(_vp().merge_vocab_partials(_vp_parts()), z_loss=-1.0),
                 ValueError, r"z_loss must be a finite real number >= 0, got -1\.0", id="vocab-z-loss-negative"),
    # vocab_shard_grad with label_smoothing NaN
    pytest.param(lambda: _vp().vocab_shard_grad(LOGITS.reshape(-1, C)[:, :1], LABELS.reshape(-1), (0, 1),
                                                _vp().merge_vocab_partials(_vp_parts()), label_smoothing=np.nan),
                 ValueError, r"label_smoothing must be in \[0, 1\], got nan", id="vocab-grad-smoothing-nan"),
    # segment ids of a 2**40-step row: refused before allocating (an 8 TiB MemoryError before)
    pytest.param(lambda: maskloss.segment_ids_from_cu_seqlens([0, 2**40], 2**40), ValueError,
                 r"segment_ids_from_cu_seqlens\(total=1099511627776\) needs 8796093022208 bytes",
                 id="resource-cu-seqlens-huge-total"),
    # a 2**40-step mask
    pytest.param(lambda: maskloss.mask_from_lengths([1], 2**40), ValueError, r"needs .* bytes",
                 id="resource-mask-huge-maxlen"),
    # a 2**40-step segment-id row from lengths
    pytest.param(lambda: maskloss.segment_ids_from_lengths([[1]], 2**40), ValueError, r"needs \d+ bytes",
                 id="resource-segments-huge-row"),
]


@pytest.mark.parametrize(("call", "error", "match"), REFUSED)
def test_bad_input_is_refused_naming_the_argument(call: Any, error: type[Exception], match: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(error, match=match) as info:
            call()
    assert info.type is error  # not a subclass that escaped from NumPy


# ---------------------------------------------------------------------------------------------
# maskloss.dask and the evaluate CLI
# ---------------------------------------------------------------------------------------------


def _dask_value(*arrays: Any, chunks: tuple[int, int], loss: Any = SCE, **options: Any) -> Any:
    da = pytest.importorskip("dask.array")
    from maskloss import dask as mdask

    lazy = [da.from_array(a, chunks=chunks + a.shape[2:]) for a in arrays]
    return mdask.evaluate(loss, *lazy, **options).compute(scheduler="sync")


DASK_EQUAL_TO_MEMORY = [
    # NaN logits under the mask, time chunks of 2
    pytest.param(lambda: _dask_value(LABELS, _garbage(LOGITS, MASK), MASK, chunks=(1, 2), from_logits=True),
                 lambda: SCE(LABELS, LOGITS, MASK, from_logits=True), id="dask-leak-nan-logits"),
    # labels 10**9 under the mask
    pytest.param(lambda: _dask_value(np.where(MASK, LABELS, 10**9), LOGITS, MASK, chunks=(2, 3), from_logits=True),
                 lambda: SCE(LABELS, LOGITS, MASK, from_logits=True), id="dask-leak-labels"),
    # shift=2 with each sequence in one chunk, per step
    pytest.param(lambda: _dask_value(LABELS, LOGITS, chunks=(1, T), from_logits=True, shift=2, reduction="none"),
                 lambda: SCE(LABELS, LOGITS, from_logits=True, shift=2, reduction="none"), id="dask-shift-one-chunk"),
    # sequence_mean with every step its own chunk
    pytest.param(lambda: _dask_value(LABELS, LOGITS, MASK, chunks=(1, 1), from_logits=True, reduction="sequence_mean"),
                 lambda: SCE(LABELS, LOGITS, MASK, from_logits=True, reduction="sequence_mean"),
                 id="dask-sequence-mean-every-step"),
]


@pytest.mark.parametrize(("lazy", "expected"), DASK_EQUAL_TO_MEMORY)
def test_dask_equals_in_memory(lazy: Any, expected: Any) -> None:
    value, want = lazy(), expected()
    assert np.shape(value) == np.shape(want)
    np.testing.assert_allclose(value, want, rtol=1e-12, atol=0)


DASK_REFUSED = [
    # shift= across time chunks: each block shifted inside itself, losing the steps at every
    # boundary (token_mean 1.46 instead of 1.39 here; 'none' had 3 of 4 columns)
    pytest.param(lambda: _dask_value(LABELS, LOGITS, MASK, chunks=(1, 2), from_logits=True, shift=1), ValueError,
                 r"shift=1 .* y_pred's step axis 1 is split into 3 chunks \(2, 2, 1\); keep each sequence in one chunk",
                 id="dask-shift-across-chunks"),
    # segment_ids= (packed documents may span chunks; the array was handed whole to every block)
    pytest.param(lambda: _dask_value(LOGITS, LOGITS, chunks=(3, T), loss=maskloss.mae, segment_ids=_SEGMENTS),
                 ValueError, r"maskloss.dask.evaluate does not take segment_ids=", id="dask-segment-ids"),
    # a (T,) sample weight (no silent broadcast)
    pytest.param(lambda: _dask_value(LOGITS, LOGITS, chunks=(3, T), loss=maskloss.mae, sample_weight=np.ones(T)),
                 ValueError, r"sample_weight must have shape \(3, 5\), got \(5,\)", id="dask-sample-weight-broadcast"),
    # an option the loss does not have
    pytest.param(lambda: _dask_value(LABELS, LOGITS, chunks=(3, T), bogus=1), TypeError,
                 r"sparse_categorical_crossentropy has no option bogus", id="dask-unknown-option"),
]


@pytest.mark.parametrize(("call", "error", "match"), DASK_REFUSED)
def test_dask_refuses_clearly(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_dask_shift_per_step_has_the_right_lazy_shape() -> None:
    # The lazy array of 'none' values with shift=2 claimed T columns but computed T - 2.
    da = pytest.importorskip("dask.array")
    from maskloss import dask as mdask

    lazy = mdask.evaluate(SCE, da.from_array(LABELS, chunks=(1, T)), da.from_array(LOGITS, chunks=(1, T, C)),
                          from_logits=True, shift=2, reduction="none")
    assert lazy.shape == (B, T - 2) and lazy.compute(scheduler="sync").shape == (B, T - 2)


@pytest.fixture
def npy_files(tmp_path: Any) -> Any:
    files = {"labels": LABELS, "logits": LOGITS, "mask": MASK, "fractional": LABELS + 0.5,
             "nan_logits": _garbage(LOGITS, MASK), "complex": LOGITS.astype(complex)}
    for name, value in files.items():
        np.save(tmp_path / f"{name}.npy", value)
    np.savez(tmp_path / "two.npz", a=LABELS, b=LABELS)
    (tmp_path / "garbage.npy").write_bytes(b"not an npy file")
    return tmp_path


CLI_ERRORS = [
    # fractional labels in a file
    pytest.param(["sparse_categorical_crossentropy", "fractional.npy", "logits.npy", "--from-logits"],
                 r"y_true must hold integer class labels; found 1?\d\.5", id="cli-fractional-labels"),
    # complex arrays in a file
    pytest.param(["mae", "complex.npy", "complex.npy"], r"must be an array of real numbers, got dtype complex128",
                 id="cli-complex"),
    # an .npz of two arrays
    pytest.param(["sparse_categorical_crossentropy", "two.npz", "logits.npy", "--from-logits"],
                 r"two\.npz' holds arrays \['a', 'b'\]; pass key=", id="cli-npz-two-arrays"),
    # a file that is not an array
    pytest.param(["sparse_categorical_crossentropy", "garbage.npy", "logits.npy", "--from-logits"],
                 r"cannot read '.*garbage\.npy' as a \.npy, \.npz or zarr array", id="cli-not-an-array"),
    # --label-smoothing 2
    pytest.param(["sparse_categorical_crossentropy", "labels.npy", "logits.npy", "--from-logits",
                  "--label-smoothing", "2"], r"label_smoothing must be in \[0, 1\], got 2\.0", id="cli-smoothing-2"),
    # --timeout inf
    pytest.param(["sparse_categorical_crossentropy", "labels.npy", "logits.npy", "--from-logits", "--timeout", "inf"],
                 r"--timeout must be a positive number of seconds, got inf", id="cli-timeout-inf"),
    # --from-logits on mae
    pytest.param(["mae", "logits.npy", "logits.npy", "--from-logits"], r"mae has no option from_logits",
                 id="cli-from-logits-on-mae"),
]


@pytest.mark.parametrize(("argv", "match"), CLI_ERRORS)
def test_cli_errors_are_one_line(npy_files: Any, argv: list[str], match: str) -> None:
    pytest.importorskip("dask")
    from maskloss.cli import main

    with pytest.raises(SystemExit) as info:
        main(["evaluate", *[str(npy_files / a) if a.endswith((".npy", ".npz")) else a for a in argv]])
    message = str(info.value.code)
    assert message.startswith("maskloss evaluate: error: ") and "\n" not in message, message
    assert __import__("re").search(match, message), message


def test_cli_nan_logits_under_the_mask_are_never_read(npy_files: Any, capsys: Any) -> None:
    # NaN predictions under the mask: the JSON value is the in-memory value of the clean batch
    pytest.importorskip("dask")
    import json

    from maskloss.cli import main

    assert main(["evaluate", "sparse_categorical_crossentropy", str(npy_files / "labels.npy"),
                 str(npy_files / "nan_logits.npy"), "--mask", str(npy_files / "mask.npy"), "--from-logits",
                 "--json"]) == 0
    value = json.loads(capsys.readouterr().out)["values"]["token_mean"]
    assert abs(value - float(SCE(LABELS, LOGITS, MASK, from_logits=True))) <= 1e-12


# ---------------------------------------------------------------------------------------------
# Caller arrays are never written into; threads give the same bits
# ---------------------------------------------------------------------------------------------

def _vag_linear(hidden: Any, weight: Any, labels: Any, mask: Any) -> Any:
    return maskloss.value_and_grad(maskloss.linear_cross_entropy)(hidden, weight, labels, mask)


NO_MUTATION = [
    # value_and_grad of the sparse cross-entropy with NaN under the mask
    pytest.param(lambda a: maskloss.value_and_grad(SCE)(a["labels"], a["garbage_logits"], a["mask"], from_logits=True),
                 id="mutation-vag-sce"),
    # value_and_grad of linear_cross_entropy
    pytest.param(lambda a: _vag_linear(a["hidden"], a["weight"], a["labels"], a["mask"]), id="mutation-vag-linear"),
    # reduce with a sample weight and segment ids
    pytest.param(lambda a: maskloss.reduce(a["logprobs"], a["mask"], sample_weight=a["weight_bt"],
                                           segment_ids=a["segments"]), id="mutation-reduce"),
    # pack, unpack and repad
    pytest.param(lambda a: maskloss.unpack(np.zeros((2, 6)), maskloss.pack(a["mask"], 6)) is not None
                 and maskloss.repad(a["logprobs"], a["mask"], side="left"), id="mutation-pack-repad"),
    # head.apply_head without out=
    pytest.param(lambda a: __import__("maskloss.head").head.apply_head(a["logits"].reshape(-1, C), temperature=2.0,
                                                                        cap=3.0), id="mutation-apply-head"),
    # the vocabulary-parallel partials
    pytest.param(lambda a: __import__("maskloss.vocab_parallel").vocab_parallel.vocab_partials(
        a["logits"].reshape(-1, C), a["labels"].reshape(-1), (0, C)), id="mutation-vocab-partials"),
]


@pytest.mark.parametrize("call", NO_MUTATION)
def test_caller_arrays_are_never_written_into(call: Any) -> None:
    arrays = {"labels": LABELS.copy(), "logits": LOGITS.copy(), "garbage_logits": _garbage(LOGITS, MASK),
              "mask": MASK.copy(), "hidden": HIDDEN.copy(), "weight": WEIGHT.copy(), "logprobs": LOGPROBS.copy(),
              "weight_bt": np.ones((B, T)), "segments": _SEGMENTS.copy()}
    before = {k: v.copy() for k, v in arrays.items()}
    call(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_threads_calling_at_once_give_the_same_bits() -> None:
    # 8 threads, each computing value_and_grad on its own batch, while the pool is resized
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    batches = [(rng.integers(0, C, (4, 300)), rng.normal(size=(4, 300, C))) for _ in range(8)]
    alone = [maskloss.value_and_grad(SCE)(y, p, from_logits=True) for y, p in batches]
    previous = maskloss.get_num_threads()
    try:
        maskloss.set_num_threads(2)
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda b: maskloss.value_and_grad(SCE)(b[0], b[1], from_logits=True), batches))
            maskloss.set_num_threads(3)
    finally:
        maskloss.set_num_threads(previous)
    for (v1, g1), (v2, g2) in zip(alone, together, strict=True):
        assert v1 == v2 and np.array_equal(g1, g2)


# ---------------------------------------------------------------------------------------------
# 2. Issue 25's package items that no test pinned yet
# ---------------------------------------------------------------------------------------------

def _root() -> Any:
    import pathlib

    return pathlib.Path(__file__).resolve().parent.parent


def test_readme_says_which_environment_conformance_needs() -> None:
    # Issue 25: after README command 1 (no framework), `maskloss conformance` exits 1 with
    # "NOTHING CHECKED"; the README must say which set-up command's environment it needs.
    text = " ".join((_root() / "README.md").read_text().split())
    assert "maskloss conformance" in text
    assert "run it in the environment of the second set-up command" in text
    assert '"NOTHING CHECKED"' in text and "--allow-none" in text


def test_setup_cfg_says_how_the_cpu_torch_wheel_is_chosen() -> None:
    # Issue 25: setup.cfg claimed "torch is pinned to the CPU build", which torch==2.13.0 does not select.
    text = (_root() / "setup.cfg").read_text()
    assert "pinned to the CPU build" not in text
    assert "https://download.pytorch.org/whl/cpu" in text and "PyPI's Linux wheel is the CUDA build" in text


# ---------------------------------------------------------------------------------------------
# Strategies: bad bounds are refused when the strategy is built, not when it draws
# ---------------------------------------------------------------------------------------------

STRATEGY_BOUNDS = [
    # min_batch above max_batch
    pytest.param(lambda st: st.padded_batches(min_batch=3, max_batch=2), r"min_batch=3 must be <= max_batch=2",
                 id="strategies-batch-bounds"),
    # an integer dtype
    pytest.param(lambda st: st.padded_batches(dtype="int8"), r"dtype='int8' must be one of", id="strategies-dtype"),
    # a NaN magnitude
    pytest.param(lambda st: st.padded_batches(max_magnitude=float("nan")), r"max_magnitude=nan must be a number",
                 id="strategies-magnitude-nan"),
    # a document length of 2**62
    pytest.param(lambda st: st.packed_batches(max_document_length=2**62), r"max_document_length=\d+ must be <= 1024",
                 id="strategies-document-length"),
    # a negative mask shape
    pytest.param(lambda st: st.masks(shape=(-1, 3)), r"shape\[0\]=-1 must be >= 1", id="strategies-mask-shape"),
]


@pytest.mark.parametrize(("build", "match"), STRATEGY_BOUNDS)
def test_strategies_refuse_bad_bounds_eagerly(build: Any, match: str) -> None:
    from hypothesis.errors import InvalidArgument

    from maskloss import strategies

    with pytest.raises(InvalidArgument, match=match):
        build(strategies)  # no .example(): the error comes at construction


def test_log_sum_exp_of_a_row_holding_plus_inf_is_inf() -> None:
    # z_loss of a +inf logit at a valid step was NaN (e^(inf - inf) in the running sum), where
    # lse = +inf and z lse^2 = +inf; the sparse cross-entropy of the same row was already inf.
    from maskloss.head import RunningLogSumExp, logsumexp

    logits = np.zeros((1, 2, 3))
    logits[0, 0, 1] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = maskloss.z_loss(logits, reduction="none")
        lse = logsumexp(np.array([[np.inf, 0.0], [0.0, 0.0]]))
    assert z[0, 0] == np.inf and z[0, 1] == np.log(3.0) ** 2  # the finite row keeps its bits
    assert lse[0] == np.inf and lse[1] == np.log(2.0)
    acc = RunningLogSumExp(1)  # in tiles: +inf in the second tile
    acc.add(np.array([[0.0, 1.0]]))
    acc.add(np.array([[np.inf]]))
    assert acc.value()[0] == np.inf
