"""Bad input gets a ValueError/TypeError that names the argument and shows the bad value or shapes."""

from __future__ import annotations

import re

import numpy as np
import pytest

import maskloss

Y = np.zeros((2, 3, 4))
P = np.full((2, 3, 4), 0.25)
LABELS = np.zeros((2, 3), dtype=int)


def raises(exc, *fragments):
    """pytest.raises whose message must contain every fragment (escaped)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


@pytest.mark.parametrize(
    "fn", [maskloss.mae, maskloss.mse, maskloss.binary_crossentropy, maskloss.categorical_crossentropy]
)
def test_mismatched_shapes(fn):
    with raises(ValueError, "y_true", "y_pred", "(2, 3, 4)", "(2, 3, 5)"):
        fn(Y, np.zeros((2, 3, 5)))


def test_sparse_shapes():
    with raises(ValueError, "y_pred", "(2, 3)", "(2, 4, 4)"):
        maskloss.sparse_categorical_crossentropy(LABELS, np.zeros((2, 4, 4)))


def test_mask_of_the_wrong_shape():
    with raises(ValueError, "mask", "(2, 3)", "(3, 2)"):
        maskloss.mae(Y, P, np.ones((3, 2), bool))
    with raises(ValueError, "mask", "(2, 3)", "(2, 3, 4)"):
        maskloss.mae(Y, P, np.ones((2, 3, 4), bool))


def test_mask_with_values_other_than_0_and_1():
    mask = np.ones((2, 3))
    mask[1, 2] = 2.0
    with raises(ValueError, "mask", "2.0", "(1, 2)"):
        maskloss.mae(Y, P, mask)


def test_unknown_reduction_lists_the_valid_ones():
    with raises(ValueError, "reduction", "'mean'", "'token_mean'", "'element_mean'"):
        maskloss.mae(Y, P, reduction="mean")
    with raises(ValueError, "reduction"):
        maskloss.reduce(np.zeros((2, 3)), reduction=None)


def test_label_outside_the_classes_at_a_valid_step():
    labels = LABELS.copy()
    labels[1, 1] = 4
    with raises(ValueError, "y_true", "4", "(1, 1)", "[0, 4)"):
        maskloss.sparse_categorical_crossentropy(labels, P)
    labels[1, 1] = -100
    with raises(ValueError, "y_true", "-100", "ignore_index"):
        maskloss.sparse_categorical_crossentropy(labels, P)


def test_non_integer_labels():
    with raises(ValueError, "y_true", "0.5"):
        maskloss.sparse_categorical_crossentropy(np.full((2, 3), 0.5), P)
    with raises(TypeError, "y_true", "bool"):
        maskloss.sparse_categorical_crossentropy(np.zeros((2, 3), bool), P)


@pytest.mark.parametrize("bad", [-0.5, 1.5, np.nan])
def test_probabilities_outside_0_1_at_a_valid_step(bad):
    p = P.copy()
    p[0, 2, 1] = bad
    for fn in (maskloss.binary_crossentropy, maskloss.categorical_crossentropy):
        with raises(ValueError, "y_pred", "probabilities", "(0, 2)", "from_logits"):
            fn(Y, p)
    with raises(ValueError, "y_pred", "(0, 2)"):
        maskloss.sparse_categorical_crossentropy(LABELS, p)


def test_bad_probabilities_under_the_mask_are_fine():
    p = P.copy()
    p[0, 2] = [-5, 7, np.nan, np.inf]
    mask = np.ones((2, 3), bool)
    mask[0, 2] = False
    assert np.isfinite(maskloss.categorical_crossentropy(np.eye(4)[LABELS], p, mask))


@pytest.mark.parametrize(
    ("weight", "fragments"),
    [
        (np.ones(3), ("sample_weight", "(3,)", "(2, 3)")),
        (np.ones((2, 4)), ("sample_weight", "(2, 4)")),
        (np.ones((2, 3, 1, 1)), ("sample_weight", "(2, 3, 1, 1)")),
        (np.array([1.0, -1.0]), ("sample_weight", ">= 0", "-1.0")),
        (np.array([1.0, np.nan]), ("sample_weight", "nan")),
    ],
)
def test_bad_sample_weights(weight, fragments):
    with raises(ValueError, *fragments):
        maskloss.mae(Y, P, sample_weight=weight)


@pytest.mark.parametrize(
    ("weight", "fragments"),
    [
        (np.ones(3), ("class_weight", "(4,)", "(3,)")),
        (np.array([1.0, 1.0, -2.0, 1.0]), ("class_weight", "-2.0", "class 2")),
        (np.array([1.0, np.inf, 1.0, 1.0]), ("class_weight", "inf")),
    ],
)
def test_bad_class_weights(weight, fragments):
    with raises(ValueError, *fragments):
        maskloss.sparse_categorical_crossentropy(LABELS, P, class_weight=weight)
    with raises(ValueError, *fragments):
        maskloss.categorical_crossentropy(Y, P, class_weight=weight)


@pytest.mark.parametrize("fn", [maskloss.mae, maskloss.categorical_crossentropy])
@pytest.mark.parametrize("bad", [["a", "b"], {"x": 1}, None, np.array([1 + 2j])])
def test_non_numeric_arrays(fn, bad):
    with raises(TypeError, "y_pred"):
        fn(np.zeros((1, 1, 2)), bad)


def test_ragged_lists_are_a_type_error():
    with raises(TypeError, "y_true"):
        maskloss.mae([[[1.0], [1.0, 2.0]]], [[[1.0], [1.0]]])


@pytest.mark.parametrize(("eps", "exc"), [(-0.1, ValueError), (1.5, ValueError), ("0.1", TypeError), (True, TypeError)])
def test_label_smoothing_outside_0_1(eps, exc):
    for call in (
        lambda: maskloss.categorical_crossentropy(Y, P, label_smoothing=eps),
        lambda: maskloss.sparse_categorical_crossentropy(LABELS, P, label_smoothing=eps),
        lambda: maskloss.binary_crossentropy(Y, P, label_smoothing=eps),
    ):
        with raises(exc, "label_smoothing", repr(eps)):
            call()


def test_flags_and_ids_must_have_the_right_type():
    with raises(TypeError, "from_logits", "'yes'"):
        maskloss.categorical_crossentropy(Y, P, from_logits="yes")
    with raises(TypeError, "ignore_index", "1.5"):
        maskloss.sparse_categorical_crossentropy(LABELS, P, ignore_index=1.5)
    with raises(ValueError, "y_pred", "last axis has size 0"):
        maskloss.categorical_crossentropy(np.zeros((1, 1, 0)), np.zeros((1, 1, 0)))


def test_mask_builders_reject_nonsense():
    with raises(ValueError, "lengths", "1-D"):
        maskloss.mask_from_lengths([[1, 2]])
    with raises(ValueError, "lengths", ">= 0"):
        maskloss.mask_from_lengths([1, -2])
    with raises(TypeError, "lengths", "whole numbers"):
        maskloss.mask_from_lengths([1.5])
    with raises(ValueError, "maxlen=2", "lengths"):
        maskloss.mask_from_lengths([3], 2)
    with raises(TypeError, "maxlen"):
        maskloss.mask_from_lengths([1], 2.0)
    with raises(ValueError, "side", "'up'"):
        maskloss.mask_from_lengths([1], 2, side="up")
    with raises(ValueError, "sentinel", "(3,)", "(2,)"):
        maskloss.mask_from_sentinel(np.zeros((1, 2, 3)), [0, 1])
    with raises(TypeError, "pad_id"):
        maskloss.mask_from_ids([[1, 2]], "0")
    with raises(TypeError, "value"):
        maskloss.mask_from_padding(np.zeros((1, 2, 3)), value="0")
    with raises(ValueError, "mask", "2-D"):
        maskloss.lengths_from_mask([1, 0])
    with raises(ValueError, "x", "(1, 2)", "(2, 2)"):
        maskloss.repad(np.zeros((2, 2)), [[1, 0]])


# --- hardening (issue 11): each of these used to give a bare error or a wrong answer ---


@pytest.mark.parametrize(
    ("lengths", "fragments"),
    [
        ([np.inf], ("lengths", "finite", "inf", "index 0")),
        ([2, np.nan], ("lengths", "finite", "nan", "index 1")),
        ([1e19], ("lengths", "2**63", "1e+19")),
        (np.array([np.iinfo(np.uint64).max], np.uint64), ("lengths", "2**63", "18446744073709551615")),
        ([2.0**63], ("lengths", "2**63")),
    ],
)
def test_mask_from_lengths_says_what_is_wrong_with_huge_lengths(lengths, fragments):
    with raises(ValueError, *fragments) as info:
        maskloss.mask_from_lengths(lengths, 3)
    assert ">= 0" not in str(info.value)  # the old, false message (an int64 cast wrapped)


def test_mask_from_lengths_messages_show_plain_values():
    with raises(ValueError, "found -2 at index 1") as info:
        maskloss.mask_from_lengths(np.array([1, -2]))
    assert "np." not in str(info.value) and "array(" not in str(info.value)
    with raises(ValueError, "maxlen=2", "lengths are [3]"):
        maskloss.mask_from_lengths(np.array([3]), np.int64(2))


def test_mask_from_lengths_keeps_the_largest_uint64_that_fits():
    big = np.array([0, 2], dtype=np.uint64)
    np.testing.assert_array_equal(maskloss.mask_from_lengths(big, 2), [[False, False], [True, True]])


@pytest.mark.parametrize(
    ("x", "fill", "exc", "fragments"),
    [
        (np.array([[1, 2, 3]]), 1.5, ValueError, ("fill=1.5", "int64")),
        (np.array([[1, 2, 3]]), np.nan, ValueError, ("fill=nan", "int64")),
        (np.array([[1, 2, 3]], np.uint8), 300, ValueError, ("fill=300", "uint8")),
        (np.array([[1, 2, 3]], np.uint8), -1, ValueError, ("fill=-1", "uint8")),
        (np.array([[1.0, 2, 3]], np.float16), 1e6, ValueError, ("fill=1000000.0", "float16")),
        (np.array([[1, 2, 3]]), "x", TypeError, ("fill", "'x'")),
        (np.array([[1, 2, 3]]), None, TypeError, ("fill", "None")),
        (np.array([[1, 2, 3]]), True, TypeError, ("fill", "True")),
    ],
)
def test_repad_refuses_a_fill_that_does_not_fit(x, fill, exc, fragments):
    with raises(exc, *fragments):
        maskloss.repad(x, [[1, 0, 1]], fill=fill)


def test_repad_fills_that_fit_are_written_exactly():
    x, _ = maskloss.repad(np.array([[1, 2, 3]], np.uint8), [[1, 0, 1]], fill=np.int64(255))
    assert x.dtype == np.uint8 and x.tolist() == [[1, 3, 255]]
    y, _ = maskloss.repad(np.array([[1.0, 2, 3]], np.float32), [[1, 0, 1]], fill=np.nan)
    assert y.dtype == np.float32 and np.isnan(y[0, 2])
    z, _ = maskloss.repad(np.array([[1.0, 2, 3]], np.float32), [[1, 0, 1]], fill=0.1)
    assert z[0, 2] == np.float32(0.1)  # rounding into a float dtype is fine


@pytest.mark.parametrize(
    ("parts", "fragments"),
    [
        ([1, 2], ("parts[0]", "MaskedTotals", "int 1")),
        ("single", ("single MaskedTotals", "concat([totals])")),
        (5, ("parts", "list of MaskedTotals", "int 5")),
        ("ab", ("parts", "list of MaskedTotals", "'ab'")),
        ("with_none", ("parts[1]", "MaskedTotals", "None")),
    ],
)
def test_masked_totals_concat_validates_its_parts(parts, fragments):
    from maskloss.reductions import MaskedTotals

    t = MaskedTotals.from_terms(np.ones((1, 2)), np.ones((1, 2)))
    parts = {"single": t, "with_none": [t, None]}.get(parts, parts) if isinstance(parts, str) else parts
    with raises(TypeError, *fragments):
        MaskedTotals.concat(parts)


def test_masked_totals_concat_takes_any_iterable():
    from maskloss.reductions import MaskedTotals

    t = MaskedTotals.from_terms(np.array([[1.0, 2.0]]), np.array([[1.0, 1.0]]))
    merged = MaskedTotals.concat(p for p in (t, t))
    assert merged.numerator.tolist() == [3.0, 3.0]  # 1 + 2 per sequence, two sequences


@pytest.mark.parametrize(
    ("actual", "expected", "kw", "exc", "fragments"),
    [
        (None, float("nan"), {}, TypeError, ("actual", "None")),  # a candidate that forgot to return
        (1.0, None, {}, TypeError, ("expected", "None")),
        ("nan", float("nan"), {}, TypeError, ("actual", "'nan'")),
        ("1.0", 1.0, {}, TypeError, ("actual", "real numbers")),
        (1 + 0j, 1.0, {}, TypeError, ("actual", "complex")),
        (1.0, 1.0, {"rtol": -1}, ValueError, ("rtol", ">= 0", "-1")),
        (1.0, 1.0, {"atol": float("nan")}, ValueError, ("atol", "finite", "nan")),
        (1.0, 1.0, {"atol": "x"}, TypeError, ("atol", "'x'")),
        (1.0, 1.0, {"rtol": True}, TypeError, ("rtol", "True")),
        ([1.0, 2.0], [1.0, 2.0], {"reference_lowp": [1.0, 2.0, 3.0]}, ValueError, ("reference_lowp", "(2,)", "(3,)")),
        (1.0, 1.0, {"reference_lowp": "x"}, TypeError, ("reference_lowp", "'x'")),
    ],
)
def test_assert_loss_close_validates_everything(actual, expected, kw, exc, fragments):
    from maskloss.testing import assert_loss_close

    with raises(exc, *fragments):
        assert_loss_close(actual, expected, **kw)


def test_assert_loss_close_still_compares_valid_input():
    from maskloss.testing import assert_loss_close

    assert_loss_close(1.0, 1.0, rtol=0, atol=0)  # equal values pass at zero tolerance
    assert_loss_close(np.float32(0.5), 0.5, rtol=np.float64(0.0), atol=np.int64(0))
    with pytest.raises(AssertionError, match="loss mismatch"):
        assert_loss_close(1.0, 1.5, rtol=0, atol=0.1)


@pytest.mark.parametrize(
    ("call", "plain"),
    [
        (lambda: maskloss.sparse_categorical_crossentropy(np.array([[5]]), np.zeros((1, 1, 3))), "label 5 "),
        (lambda: maskloss.sparse_categorical_crossentropy(np.array([[1.5]]), np.zeros((1, 1, 3))), "found 1.5"),
        (lambda: maskloss.mae(Y, P, np.full((2, 3), 2)), "found 2 "),
        (lambda: maskloss.mae(Y, P, sample_weight=np.full((2, 3), -1.0)), "found -1.0"),
        (
            lambda: maskloss.sparse_categorical_crossentropy(LABELS, P, class_weight=np.array([1, -2, 1, 1])),
            "found -2.0",
        ),
        (lambda: maskloss.mask_from_lengths(np.array([1, -3], np.int32)), "found -3"),
    ],
)
def test_error_messages_show_plain_values(call, plain):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    assert plain in message
    assert "np." not in message and "array(" not in message
