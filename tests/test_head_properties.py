"""Hypothesis invariants of the LM-head options (issue 20), drawn by ``maskloss.strategies.head_options``.

On drawn batches and drawn combinations of ``z_loss`` / ``softcap`` (none, a cap, a huge cap) /
``temperature`` / ``shift`` / ``label_smoothing`` with its ``smoothing_rule``:

- padding never changes the value: junk (NaN, +-inf, huge values, out-of-range labels) at every
  prediction and label the loss must not read changes no bit of the value, and gives exactly 0
  gradient there; more padding at the end changes no reduction but ``element_mean``;
- a huge softcap (:data:`maskloss.strategies.HUGE_SOFTCAP`) is no softcap, value and gradient;
- ``z_loss=0`` is no z-loss (OLMo-core#702 added the term when it was off), and a z-loss
  :math:`z > 0` adds exactly ``maskloss.z_loss`` per step;
- KL(p || p) = 0 and JSD(p || p) = 0, with a zero gradient;
- ``value_and_grad``'s value is the function's value, for every head loss.

With ``shift=s`` a prediction at step ``t`` scores the label at ``t + s`` (the mask is in the
labels' positions), so the predictions "under the mask" are those whose scored label is masked
or beyond the row, not those at masked steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import maskloss
from maskloss.head import apply_head
from maskloss.strategies import HUGE_SOFTCAP, PaddedBatch, head_options, padded_batches

BATCHES = padded_batches("sparse", from_logits=True, weights=True)
DENSE = padded_batches("dense", from_logits=True)
REDUCTIONS = st.sampled_from(maskloss.SCALAR_REDUCTIONS)
JUNK = (np.nan, np.inf, -np.inf, 1e308, -1e308)


def sparse_ce(batch: PaddedBatch, options: dict[str, Any], **kw: Any) -> Any:
    return maskloss.sparse_categorical_crossentropy(
        batch.y_true, batch.y_pred, batch.mask, from_logits=True, sample_weight=batch.sample_weight,
        **{**options, **kw})


def read_predictions(mask: np.ndarray[Any, Any], shift: int) -> np.ndarray[Any, Any]:
    """The steps whose prediction scores a valid label (the label at ``t + shift``)."""
    read = np.zeros_like(mask)
    steps = mask.shape[1]
    if shift < steps:
        read[:, : steps - shift] = mask[:, shift:]
    return read


@given(BATCHES, head_options(), REDUCTIONS, st.data())
def test_junk_where_nothing_is_read_changes_no_bit_and_gets_no_gradient(
    batch: PaddedBatch, options: dict[str, Any], reduction: str, data: st.DataObject
) -> None:
    read = read_predictions(batch.mask, options["shift"])
    junk_pred = data.draw(st.sampled_from(JUNK), label="prediction junk")
    junk_label = data.draw(st.sampled_from([-1, batch.y_pred.shape[-1], 10**6]), label="label junk")
    junked = batch._replace(
        y_pred=np.where(read[..., None], batch.y_pred, junk_pred),
        y_true=np.where(batch.mask, batch.y_true, junk_label),
    )
    clean, grad = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(
        batch.y_true, batch.y_pred, batch.mask, from_logits=True, sample_weight=batch.sample_weight,
        reduction=reduction, **options)
    dirty, dirty_grad = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(
        junked.y_true, junked.y_pred, junked.mask, from_logits=True, sample_weight=junked.sample_weight,
        reduction=reduction, **options)
    np.testing.assert_equal(dirty, clean)  # NaN-aware: a batch with nothing valid is NaN on both sides
    np.testing.assert_equal(dirty_grad, grad)
    assert np.all(dirty_grad[~read] == 0)


@given(BATCHES, head_options(), st.sampled_from(("sum", "token_mean", "sequence_mean")), st.integers(1, 3))
def test_more_padding_at_the_end_changes_no_reduction_but_element_mean(
    batch: PaddedBatch, options: dict[str, Any], reduction: str, extra: int
) -> None:
    pad = ((0, 0), (0, extra))
    weight = batch.sample_weight
    longer = batch._replace(
        y_true=np.pad(batch.y_true, pad, constant_values=-1),
        y_pred=np.pad(batch.y_pred, (*pad, (0, 0)), constant_values=np.nan),
        mask=np.pad(batch.mask, pad),
        sample_weight=weight if weight is None or weight.ndim == 1 else np.pad(weight, pad),
    )
    expected = sparse_ce(batch, options, reduction=reduction)
    got = sparse_ce(longer, options, reduction=reduction)
    # the same valid rows in the same order: equal, to the rounding of a sum laid out anew
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0)


@given(BATCHES, head_options(huge_softcap=False), REDUCTIONS)
def test_a_huge_softcap_is_no_softcap(batch: PaddedBatch, options: dict[str, Any], reduction: str) -> None:
    fn = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)
    args = (batch.y_true, batch.y_pred, batch.mask)
    kw = dict(options, from_logits=True, sample_weight=batch.sample_weight, reduction=reduction)
    huge = fn(*args, **{**kw, "softcap": HUGE_SOFTCAP})
    none = fn(*args, **{**kw, "softcap": None})
    # HUGE_SOFTCAP leaves the logits as they are (but a logit below 1e-217, capped to 0), and no cap takes
    # the fused cross-entropy where a cap takes the head's path: equal to the rounding of the two paths
    # (hypothesis found a gradient 1 ulp apart on the logits (0, 3.3e-296, 0))
    np.testing.assert_allclose(huge[0], none[0], rtol=1e-14, atol=0)
    np.testing.assert_allclose(huge[1], none[1], rtol=1e-14, atol=1e-15)


def test_a_cap_that_acts_is_far_outside_that_tolerance() -> None:
    x = np.array([[[8.0, 0.0, -8.0]]])  # 50 tanh(8 / 50) = 7.93: the value moves by ~1e-2, not 1e-14
    loss = maskloss.sparse_categorical_crossentropy
    none = loss([[1]], x, from_logits=True)
    assert abs(loss([[1]], x, from_logits=True, softcap=50.0) - none) > 1e-3
    assert loss([[1]], x, from_logits=True, softcap=HUGE_SOFTCAP) == none


@given(BATCHES, head_options(), REDUCTIONS)
def test_z_loss_zero_is_no_z_loss(batch: PaddedBatch, options: dict[str, Any], reduction: str) -> None:
    fn = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)
    args = (batch.y_true, batch.y_pred, batch.mask)
    kw = dict(options, from_logits=True, sample_weight=batch.sample_weight, reduction=reduction)
    del kw["z_loss"]
    for f in (fn, maskloss.sparse_categorical_crossentropy):  # the gradient path and the value-only path
        np.testing.assert_equal(f(*args, **kw, z_loss=0.0), f(*args, **kw))
        np.testing.assert_equal(f(*args, **kw, z_loss=0), f(*args, **kw))
    # and on no logits, with every other option: the plain cross-entropy of the head's logits
    plain = {**kw, "temperature": 1.0, "softcap": None}
    x = apply_head(batch.y_pred.reshape(-1, batch.y_pred.shape[-1]), temperature=options["temperature"],
                                 cap=options["softcap"]).reshape(batch.y_pred.shape)
    np.testing.assert_allclose(maskloss.sparse_categorical_crossentropy(*args, **kw, z_loss=0.0),
                               maskloss.sparse_categorical_crossentropy(batch.y_true, x, batch.mask, **plain),
                               rtol=1e-12)
    term = maskloss.z_loss(batch.y_pred, batch.mask, coefficient=0.0, temperature=options["temperature"],
                           softcap=options["softcap"], reduction="none")
    assert np.all(term == 0)


@given(BATCHES, head_options(max_shift=0), st.floats(1e-6, 1.0))
def test_a_z_loss_adds_the_z_loss_term_at_every_valid_step(
    batch: PaddedBatch, options: dict[str, Any], z: float
) -> None:
    kw = dict(options, reduction="none")
    batch = batch._replace(sample_weight=None)  # maskloss.z_loss takes no sample weight
    with_z = sparse_ce(batch, kw, z_loss=z)
    without = sparse_ce(batch, kw, z_loss=0.0)
    term = maskloss.z_loss(batch.y_pred, batch.mask, coefficient=z, temperature=options["temperature"],
                           softcap=options["softcap"], reduction="none")
    np.testing.assert_allclose(with_z - without, term, rtol=1e-9, atol=1e-12)
    assert np.all(term[~batch.mask] == 0) and np.all(term[batch.mask] >= 0)


@given(DENSE, st.booleans(), st.floats(0.0, 1.0), REDUCTIONS)
def test_the_divergence_of_a_distribution_from_itself_is_zero(
    batch: PaddedBatch, logits: bool, beta: float, reduction: str
) -> None:
    x = batch.y_pred
    p = x if logits else np.exp(x - x.max(axis=-1, keepdims=True))
    if not logits:
        p = p / p.sum(axis=-1, keepdims=True)
    kw = dict(from_logits=logits, target_from_logits=logits, reduction=reduction)
    for name, fn, extra in (("kl", maskloss.kl_divergence, {}), ("jsd", maskloss.jensen_shannon, {"beta": beta})):
        value, grad = maskloss.value_and_grad(fn)(p, p, batch.mask, **kw, **extra)
        if batch.mask.any() or reduction == "sum":
            # KL: the same log on both sides, exactly 0; JSD: the mixture m = beta p + (1 - beta) p is p
            # only to an ulp, so each step is 0 to about 1e-16 and a sum of up to 24 steps to 1e-13
            assert value == 0 if name == "kl" else abs(value) <= 1e-13, (name, value)
        # w.r.t. logits the gradient is 0; w.r.t. probabilities KL's is -q/p = -1 per class (times the
        # reduction's scale), normal to the simplex: its component along the simplex is 0
        along = grad - grad.mean(axis=-1, keepdims=True) if not logits else grad
        np.testing.assert_allclose(along, 0.0, atol=1e-14, err_msg=name)


@given(BATCHES, head_options(), REDUCTIONS)
def test_value_and_grad_value_is_the_function_value(
    batch: PaddedBatch, options: dict[str, Any], reduction: str
) -> None:
    kw = dict(options, from_logits=True, sample_weight=batch.sample_weight, reduction=reduction)
    args = (batch.y_true, batch.y_pred, batch.mask)
    fn = maskloss.sparse_categorical_crossentropy
    np.testing.assert_equal(maskloss.value_and_grad(fn)(*args, **kw)[0], fn(*args, **kw))
    head = dict(coefficient=options["z_loss"], temperature=options["temperature"], softcap=options["softcap"],
                reduction=reduction)
    np.testing.assert_equal(maskloss.value_and_grad(maskloss.z_loss)(batch.y_pred, batch.mask, **head)[0],
                            maskloss.z_loss(batch.y_pred, batch.mask, **head))
    np.testing.assert_equal(maskloss.value_and_grad(maskloss.entropy)(batch.y_pred, batch.mask, reduction=reduction)[0],
                            maskloss.entropy(batch.y_pred, batch.mask, reduction=reduction))
    target = np.roll(batch.y_pred, 1, axis=-1)
    for fn2 in (maskloss.kl_divergence, maskloss.jensen_shannon):
        div = dict(from_logits=True, target_from_logits=True, reduction=reduction)
        np.testing.assert_equal(maskloss.value_and_grad(fn2)(target, batch.y_pred, batch.mask, **div)[0],
                                fn2(target, batch.y_pred, batch.mask, **div))


@given(head_options())
def test_the_drawn_options_are_valid_and_shrink_towards_the_defaults(options: dict[str, Any]) -> None:
    assert set(options) == {"z_loss", "softcap", "temperature", "shift", "label_smoothing", "smoothing_rule"}
    assert options["z_loss"] >= 0 and options["temperature"] > 0 and options["shift"] >= 0
    assert options["softcap"] is None or options["softcap"] > 0
    assert (options["smoothing_rule"] == "uniform") or options["label_smoothing"] > 0


def test_the_simplest_draw_is_every_default() -> None:
    from hypothesis import find

    simplest = find(head_options(), lambda o: True)
    assert simplest == {"z_loss": 0.0, "softcap": None, "temperature": 1.0, "shift": 0, "label_smoothing": 0.0,
                        "smoothing_rule": "uniform"}


def test_every_option_is_drawn() -> None:
    from hypothesis import find

    find(head_options(), lambda o: o["softcap"] == HUGE_SOFTCAP)
    find(head_options(), lambda o: o["softcap"] is not None and o["softcap"] < 50.0)
    find(head_options(), lambda o: o["z_loss"] > 0 and o["temperature"] != 1.0 and o["shift"] == 2)
    find(head_options(), lambda o: o["smoothing_rule"] == "others")
    from hypothesis.errors import NoSuchExample

    with pytest.raises(NoSuchExample):
        find(head_options(huge_softcap=False), lambda o: o["softcap"] == HUGE_SOFTCAP)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_z_loss": -1.0}, r"max_z_loss=-1.0 must be a finite number >= 0"),
        ({"max_z_loss": float("nan")}, r"max_z_loss=nan must be a finite number"),
        ({"min_softcap": 0.0}, r"min_softcap=0.0 must be a finite number > 0"),
        ({"min_softcap": 60.0}, r"min_softcap=60.0 must be <= max_softcap=50.0"),
        ({"max_softcap": float("inf")}, r"max_softcap=inf must be a finite number > 0"),
        ({"huge_softcap": 1}, r"huge_softcap=1 must be True or False"),
        ({"min_temperature": -2}, r"min_temperature=-2 must be a finite number > 0"),
        ({"min_temperature": 5.0}, r"min_temperature=5.0 must be <= max_temperature=4.0"),
        ({"max_shift": -1}, r"max_shift=-1 must be >= 0"),
        ({"max_shift": 1.5}, r"max_shift=1.5 must be an int"),
        ({"max_label_smoothing": 1.5}, r"max_label_smoothing=1.5 must be a finite number >= 0 and <= 1"),
        ({"max_z_loss": "0.1"}, r"max_z_loss='0.1' must be a real number"),
        ({"smoothing_rules": ("others_except_pad",)}, r"'others_except_pad' needs ignore_index="),
        ({"smoothing_rules": ()}, r"smoothing_rules=\(\) must be one of .* or a non-empty sequence"),
    ],
)
def test_bad_bounds_are_refused_when_the_strategy_is_made(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        head_options(**kwargs)
