"""check_loss's own parameters are about checking only (issue 19): at most 16, none a convention.

The conventions (``shift``, ``smoothing_rule``, ``smoothing_form``) are options of ``like`` and are
computed by it; what to generate is one :class:`maskloss.testing.Bounds` or the user's own
``batches=`` strategy; the old keywords keep working with a DeprecationWarning saying what to use.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from hypothesis import strategies as st

import maskloss
from maskloss import loss_options
from maskloss.strategies import padded_batches
from maskloss.testing import Bounds, LossCheckError, check_loss

SCE = maskloss.sparse_categorical_crossentropy


def _named(fn):
    return [n for n, p in inspect.signature(fn).parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]


def test_at_most_16_named_parameters_none_a_convention():
    names = _named(check_loss)
    assert len(names) <= 16, names
    conventions = {*loss_options.CONVENTION_OPTIONS, "scale", "weight_normalization"}
    assert not conventions & set(names), names
    assert "batches" in names and "bounds" in names


def _mse(y_true, y_pred, mask):
    per_step = np.square(np.where(mask[..., None], y_true - y_pred, 0.0)).mean(-1)
    return per_step.sum() / mask.sum()


def _shapes_spy(fn):
    shapes = []

    def spy(*args, **kwargs):
        shapes.append(np.shape(args[2]))
        return fn(*args, **kwargs)

    spy.__name__ = fn.__name__
    return spy, shapes


def test_bounds_reach_the_generator():
    spy, shapes = _shapes_spy(_mse)
    check_loss(spy, maskloss.mse, bounds=Bounds(max_batch=2, max_steps=3), max_examples=15)
    assert max(s[0] for s in shapes) <= 2 + 0 and max(s[1] for s in shapes) <= 3 + 2  # + 2: padding amount
    spy, shapes = _shapes_spy(_mse)
    check_loss(spy, maskloss.mse, max_examples=15)
    assert max(s[0] for s in shapes) > 2  # the default bound (4) draws larger batches


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"max_batch": 2}, "bounds=maskloss.testing.Bounds(max_batch=2)"),
        ({"padding": "left", "max_steps": 3}, "Bounds(padding='left', max_steps=3)"),
        ({"weights": True}, "Bounds(weights=True)"),
        ({"all_masked": 0.0}, "Bounds(all_masked=0.0)"),
    ],
)
def test_old_bound_keywords_warn_and_map(old, new):
    def candidate(y_true, y_pred, mask, sample_weight=None):
        return maskloss.mse(y_true, y_pred, mask, sample_weight=sample_weight)

    with pytest.warns(DeprecationWarning, match=r"check_loss\(.*\) is deprecated; use .*" + new.replace("(", r"\(")
                      .replace(")", r"\)").replace(".", r"\.")) as record:
        if "all_masked" in old:
            with pytest.raises(LossCheckError, match="all-masked batch"):  # mse's NaN is not 0: the value arrived
                check_loss(candidate, maskloss.mse, max_examples=5, **old)
        else:
            check_loss(candidate, maskloss.mse, max_examples=5, **old)
    assert record[0].filename == __file__  # points at the caller


def test_scale_and_weight_normalization_of_a_maskloss_loss_are_its_options():
    # Every pipeline loss computes scale= and weight_normalization= (maskloss.loss_options): no
    # deprecation with maskloss.mse; with a like that does not take them they still warn
    # (tests/test_check_loss_forwards_options.py).
    def doubled(y_true, y_pred, mask):
        return 2.0 * _mse(y_true, y_pred, mask)

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        check_loss(doubled, maskloss.mse, scale=2.0, max_examples=10)
        with pytest.raises(ValueError, match="draws none"):
            check_loss(doubled, maskloss.mse, weight_normalization="numerator")


def test_bounds_and_old_keywords_together_is_an_error():
    with pytest.raises(TypeError, match=r"got bounds= and the deprecated max_batch=2"):
        check_loss(_mse, maskloss.mse, bounds=Bounds(), max_batch=2)
    with pytest.raises(TypeError, match=r"bounds must be a maskloss.testing.Bounds.*\{'max_batch': 2\}"):
        check_loss(_mse, maskloss.mse, bounds={"max_batch": 2})


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("max_batch", 0, ValueError, r"max_batch must be an int in \[1, 1024\], got 0"),
        ("max_steps", 2**40, ValueError, r"max_steps must be an int in \[1, 1024\]"),
        ("weights", "tokens", ValueError, r"weights must be one of .*'tokens'"),
        ("allow_empty_rows", "no", TypeError, r"allow_empty_rows must be True or False, got 'no'"),
        ("all_masked", "zero", TypeError, r"all_masked must be a float"),
        ("kind", 3, TypeError, r"kind must be a batch kind"),
    ],
)
def test_bounds_validates_eagerly(field, value, error, match):
    with pytest.raises(error, match=match):
        Bounds(**{field: value})


def test_bounds_is_frozen():
    with pytest.raises(AttributeError):
        Bounds().max_batch = 3  # type: ignore[misc]


# ---- conventions are like's options, computed by like


def _shifted_none(labels, logits, mask):
    """HF's ForCausalLMLoss with reduction='none' (labels[:, 1:] against logits[:, :-1]), 0 at padding."""
    lab, lg, m = labels[:, 1:], logits[:, :-1], mask[:, 1:]
    safe = np.where(m, lab, 0)
    lg = np.where(m[..., None], lg, 0.0)
    top = lg.max(-1, keepdims=True)
    logp = lg - top - np.log(np.exp(lg - top).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, safe[..., None], -1)[..., 0]
    return np.where(m, nll, 0.0)


def test_shift_with_reduction_none_is_computed_by_like():
    # Before: "shift=1 needs a scalar reduction" (the checker shifted, and could not for 'none').
    check_loss(_shifted_none, SCE, from_logits=True, shift=1, reduction="none", max_examples=30)
    with pytest.raises(LossCheckError, match="agreement"):  # the unshifted loss is caught
        check_loss(lambda y, p, m: _shifted_none(np.pad(y, ((0, 0), (1, 0))), np.pad(p, ((0, 0), (0, 1), (0, 0))),
                                                 np.pad(m, ((0, 0), (1, 0)))),
                   SCE, from_logits=True, shift=1, reduction="none", max_examples=30)


def test_shift_is_not_applied_twice():
    # like=SCE computes shift=2 itself: a candidate shifting once by 2 passes (shifting the batch
    # and then asking like to shift again would score labels[:, 4:]).
    def shifted_sum(labels, logits, mask):
        return float(SCE(labels[:, 2:], logits[:, :-2], mask[:, 2:], from_logits=True, reduction="sum"))

    check_loss(shifted_sum, SCE, from_logits=True, shift=2, reduction="sum", max_examples=30)


def test_convention_that_does_not_apply_names_it():
    with pytest.raises(ValueError, match=r"option smoothing_form='kl' does not apply to maskloss.mse.*sparse_categ"):
        check_loss(_mse, maskloss.mse, smoothing_form="kl")
    with pytest.raises(ValueError, match=r"shift=1 is the causal.*kind='regression'"):
        check_loss(_mse, maskloss.mse, shift=1)


def test_grad_with_a_smoothing_rule_needs_no_expected_grad():
    options = {"from_logits": True, "label_smoothing": 0.1, "smoothing_rule": "others", "smoothing_form": "kl"}
    value_and_grad = maskloss.value_and_grad(SCE)

    def candidate(labels, logits, mask):
        return SCE(labels, logits, mask, **options)

    def grad(labels, logits, mask):
        return value_and_grad(labels, logits, mask, **options)[1]

    check_loss(candidate, SCE, grad=grad, max_examples=15, **options)

    def wrong_grad(labels, logits, mask):  # the uniform rule's gradient: a different target
        return value_and_grad(labels, logits, mask, from_logits=True, label_smoothing=0.1)[1]

    with pytest.raises(LossCheckError, match=r"\(gradient\)"):
        check_loss(candidate, SCE, grad=wrong_grad, max_examples=15, **options)


# ---- batches=: the user's own strategy


def test_user_batches_are_the_ones_checked():
    seen = []

    def spy(y_true, y_pred, mask):
        seen.append(mask.shape)
        return _mse(y_true, y_pred, mask)

    mine = padded_batches("regression", max_batch=1, max_steps=2, padding="right", allow_empty_rows=False)
    check_loss(spy, maskloss.mse, batches=mine, max_examples=10)
    drawn = [shape for shape in seen if shape != (2, 3)]  # (2, 3): the all-masked batch, checked afterwards
    assert drawn and all(shape[0] == 1 and shape[1] <= 2 + 2 for shape in drawn)  # + 2: padding amount


def test_user_batches_find_the_bug_they_draw():
    def wrong_when_large(y_true, y_pred, mask):  # wrong only on batches of 6 or more sequences
        return _mse(y_true, y_pred, mask) + (mask.shape[0] >= 6)

    check_loss(wrong_when_large, maskloss.mse, max_examples=20)  # the default bound (4 sequences) never sees it
    large = padded_batches("regression", min_batch=6, max_batch=8)  # min_batch, not .filter: no rejected draws
    with pytest.raises(LossCheckError, match="agreement"):
        check_loss(wrong_when_large, maskloss.mse, batches=large, max_examples=20)


def test_user_batches_bad_input():
    with pytest.raises(TypeError, match=r"batches must be a hypothesis strategy"):
        check_loss(_mse, maskloss.mse, batches=[1, 2])
    with pytest.raises(ValueError, match=r"bounds max_batch=8 would be ignored"):
        check_loss(_mse, maskloss.mse, batches=padded_batches("regression"), bounds=Bounds(max_batch=8))
    with pytest.raises(TypeError, match=r"must draw maskloss.strategies.PaddedBatch values, drew int"):
        check_loss(_mse, maskloss.mse, batches=st.just(3), max_examples=2)
    with pytest.raises(ValueError, match=r"drew a batch of kind='sparse'; like's batches are kind='regression'"):
        check_loss(_mse, maskloss.mse, batches=padded_batches("sparse"), max_examples=2)


def test_packed_keeps_working_and_refuses_bounds():
    from tests.test_packed_check import per_document_mean

    check_loss(per_document_mean, SCE, packed="position_ids", from_logits=True, reduction="sequence_mean",
               max_examples=5)
    with pytest.raises(ValueError, match=r"check_loss\(packed=\.\.\.\) does not take max_batch=2"):
        check_loss(per_document_mean, SCE, packed="position_ids", bounds=Bounds(max_batch=2))


def test_new_form_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_loss(_mse, maskloss.mse, bounds=Bounds(max_batch=2, weights=False), max_examples=5)


# ---- issue 25: every failing property is reported; known= sets a finding aside


def _leak_and_wrong_denominator(labels, logits, mask):
    """Two bugs: ``loss * mask`` (NaN at padding leaks) and a mean over sequences of per-sequence sums."""
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, np.clip(labels, 0, logits.shape[-1] - 1)[..., None], -1)[..., 0]
    return (nll * mask).sum() / mask.shape[0]  # token_mean wants / mask.sum()


def test_every_failing_property_is_reported():
    with pytest.raises(LossCheckError) as info:
        check_loss(_leak_and_wrong_denominator, SCE, from_logits=True, max_examples=30)
    err = info.value
    assert err.property == "agreement"  # the first, in full
    assert "padding content" in err.others  # the NaN leak, by name, value and smallest batch
    found = err.others["padding content"]
    assert isinstance(found.batch.mask, np.ndarray) and not found.gradient
    assert "more propert" in str(err) and "- padding content: candidate" in str(err)


def test_known_sets_a_finding_aside():
    def leak_only(labels, logits, mask):
        return _leak_and_wrong_denominator(labels, logits, mask) * mask.shape[0] / mask.sum()

    with pytest.raises(LossCheckError) as info:
        check_loss(leak_only, SCE, from_logits=True, max_examples=30)
    assert info.value.property == "padding content"
    # the leak set aside, the property checks pass (before: no known=, the leak was the only report)
    check_loss(leak_only, SCE, from_logits=True, max_examples=30, known={"nan_leak"})
    with pytest.raises(LossCheckError) as info:  # a second bug is not hidden by the known one
        check_loss(_leak_and_wrong_denominator, SCE, from_logits=True, max_examples=30, known="padding_content")
    assert info.value.property == "agreement" and "padding content" not in info.value.others


def test_known_bad_input():
    with pytest.raises(ValueError, match=r"known='nan leak' is not a property of check_loss.*'agreement'"):
        check_loss(_mse, maskloss.mse, known={"nan leak"})
    with pytest.raises(TypeError, match=r"known= entries must be property names \(str\), got 3"):
        check_loss(_mse, maskloss.mse, known=[3])
