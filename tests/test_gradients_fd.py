"""value_and_grad against central finite differences of the slow loop oracles.

The finite differences are taken on ``tests/oracles.py`` (Python loops, ``math`` on
floats, no code shared with maskloss), so the analytic gradient is checked against an
independent value, for every loss x reduction x option that ``tests/cases.py`` draws
(sample weights per sequence and per step, class weights, label smoothing,
``ignore_index``, probabilities and logits), with garbage at the masked steps.

Points are moved away from kinks first: MAE errors smaller than 1e-3 are pushed to 0.5,
probabilities are kept <= 0.99 so ``p + h`` stays a probability.

Tolerance: central differences with step ``h = 1e-6 * max(1, |x|)`` have truncation
error ``h^2 f'''/6`` (at most ~1e-9 relative at p = 0.01) and rounding error
``~1e-16 |L| / h = 1e-10 |L|`` (every loss here is a sum of non-negative terms, so
``|L|`` bounds them); we require ``|fd - grad| <= 1e-6 + 1e-9 |L| + 1e-6 |grad|``
elementwise. The ``|L|`` term matters only for ill-conditioned draws, such as a class
weight of 1e-186 in a token_mean denominator, where no finite difference resolves
the gradient.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

import maskloss
from maskloss.gradients import value_and_grad
from tests.cases import KINDS, Case, cases

SCALAR = maskloss.SCALAR_REDUCTIONS
RTOL = ATOL = 1e-6
ROUNDING = 1e-9  # times |L|: 10x the rounding error of a central difference with h = 1e-6


def away_from_kinks(case: Case) -> Case:
    """Move valid predictions off MAE's kink and keep probabilities strictly inside (0, 1)."""
    valid = case.mask[..., None]
    pred = case.y_pred.copy()
    if case.kind == "mae":
        with np.errstate(invalid="ignore"):
            near = valid & (np.abs(np.where(valid, case.y_true - pred, 1.0)) < 1e-3)
        pred = np.where(near, np.where(valid, case.y_true, 0.0) + 0.5, pred)
    elif case.kind in ("binary", "categorical", "sparse") and not case.options.get("from_logits"):
        pred = np.where(valid, np.minimum(pred, 0.99), pred)
    return case.with_arrays(y_pred=pred)


def counted(case: Case) -> np.ndarray:
    """Steps that count: the mask, minus ignored labels."""
    steps = case.mask.copy()
    if case.kind == "sparse" and case.options.get("ignore_index") is not None:
        steps &= case.y_true != case.options["ignore_index"]
    return steps


def oracle_fd(case: Case) -> dict[str, np.ndarray]:
    """Central differences of every scalar reduction of the loop oracle, at counted steps only."""
    grads = {r: np.zeros(case.y_pred.shape) for r in SCALAR}
    for b, t in zip(*np.nonzero(counted(case)), strict=True):
        for k in range(case.y_pred.shape[-1]):
            x = float(case.y_pred[b, t, k])
            h = 1e-6 * max(1.0, abs(x))
            plus, minus = case.y_pred.copy(), case.y_pred.copy()
            plus[b, t, k] = x + h
            minus[b, t, k] = x - h
            up = case.with_arrays(y_pred=plus).oracle()
            down = case.with_arrays(y_pred=minus).oracle()
            for r in SCALAR:
                grads[r][b, t, k] = (up[r] - down[r]) / (2 * h)
    return grads


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_matches_finite_differences_of_the_oracle(kind):
    @settings(max_examples=40)
    @given(case=cases(kinds=(kind,), max_batch=3, max_steps=4))
    def check(case):
        case = away_from_kinks(case)
        expected = oracle_fd(case)
        values = case.oracle()
        keep = counted(case)
        for reduction in SCALAR:
            value, grad = value_and_grad(case.function)(
                case.y_true, case.y_pred, case.mask, reduction=reduction, **case.options
            )
            if math.isnan(values[reduction]):
                assert math.isnan(value)
                assert np.all(grad == 0.0)  # nothing counts: torch's all-zero gradient
                continue
            np.testing.assert_allclose(value, values[reduction], rtol=1e-11, atol=1e-12)
            atol = ATOL + ROUNDING * abs(values[reduction])
            np.testing.assert_allclose(grad, expected[reduction], rtol=RTOL, atol=atol, err_msg=reduction)
            assert np.all(grad[~keep] == 0.0)

    check()


def test_finite_difference_check_can_fail():
    """The harness itself notices a wrong gradient (a sign flip on one element)."""
    y_true = np.array([[[1.0, 0.0]]])
    y_pred = np.array([[[0.3, -0.2]]])
    case = Case("mse", y_true, y_pred, np.ones((1, 1), dtype=bool))
    _, grad = value_and_grad(maskloss.mse)(y_true, y_pred)
    expected = oracle_fd(case)["token_mean"]
    np.testing.assert_allclose(grad, expected, rtol=RTOL, atol=ATOL)
    wrong = grad.copy()
    wrong[0, 0, 0] *= -1
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(wrong, expected, rtol=RTOL, atol=ATOL)
