"""Issue 25 hardening (numerics half): each test fails without its fix."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

import maskloss
from maskloss.pointwise import expm1_minus_x


def _k3_mpmath(x: float) -> float:
    """The exact k3 = e^x - 1 - x at the float64 value x, in 60 significant digits."""
    with mpmath.workdps(60):
        xm = mpmath.mpf(x)
        return float(mpmath.exp(xm) - 1 - xm)


@pytest.mark.parametrize(
    "x",
    [2.0**-60, -(2.0**-60), 1e-8, -1e-8, 1e-4, -3e-3, 0.1, -0.25, 0.4999, -0.4999, 0.5, -0.5, 0.7, -2.0, 5.0, 30.0],
)
def test_k3_is_accurate_near_zero(x: float) -> None:
    # np.expm1(x) - x gave 0 at 2^-60 (100% error) and 1e-8 relative error at 1e-8.
    want = _k3_mpmath(x)
    got = maskloss.kl_estimate(np.array([[0.0]]), np.array([[x]]), estimator="k3")[0, 0]
    assert got == pytest.approx(want, rel=4e-16, abs=0.0)
    assert float(expm1_minus_x(np.array(x))) == pytest.approx(want, rel=4e-16, abs=0.0)


def test_k3_masked_and_nonfinite_garbage_stays_out() -> None:
    lp = np.array([[0.0, np.nan, 1e-9]])
    ref = np.array([[1e-9, np.inf, 0.0]])
    got = maskloss.kl_estimate(lp, ref, np.array([[True, False, True]]), estimator="k3")
    assert got[0, 1] == 0.0
    assert got[0, 0] == pytest.approx(_k3_mpmath(1e-9), rel=4e-16)
    assert got[0, 2] == pytest.approx(_k3_mpmath(-1e-9), rel=4e-16)


@pytest.mark.parametrize(
    ("value", "error"),
    [(None, TypeError), ("abc", TypeError), ([0.1], TypeError), ("0.1", TypeError), (True, TypeError),
     (-0.1, ValueError), (0.6, ValueError), (float("nan"), ValueError)],
)
def test_dpo_label_smoothing_is_validated(value: object, error: type[Exception]) -> None:
    # float(label_smoothing) gave bare float() errors, and accepted the string "0.1".
    with pytest.raises(error, match="label_smoothing"):
        maskloss.dpo_loss([-1.0], [-2.0], [-1.0], [-1.0], label_smoothing=value)  # type: ignore[arg-type]


def test_dpo_label_smoothing_numpy_scalar_is_accepted() -> None:
    a = maskloss.dpo_loss([-1.0], [-2.0], [-1.0], [-1.0], label_smoothing=np.float32(0.25))
    b = maskloss.dpo_loss([-1.0], [-2.0], [-1.0], [-1.0], label_smoothing=0.25)
    assert a.tolist() == b.tolist()


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [({"rtol": -1}, ValueError, "rtol"), ({"rtol": float("nan")}, ValueError, "rtol"),
     ({"rtol": "x"}, TypeError, "rtol"), ({"atol": -1e-9}, ValueError, "atol"),
     ({"max_batch": 2**40}, ValueError, "max_batch"), ({"max_batch": 0}, ValueError, "max_batch"),
     ({"max_steps": 2**40}, ValueError, "max_steps"), ({"max_steps": 2.0}, ValueError, "max_steps")],
)
def test_check_loss_options_are_validated_first(kwargs: dict[str, object], error: type[Exception], name: str) -> None:
    # rtol=-1/nan reported a "mismatch" of equal values, rtol="x" a format-code error, and
    # max_batch=2**40 could end in a 74 GiB MemoryError.
    from maskloss.testing import Bounds, check_loss

    options = dict(kwargs)  # the sizes are fields of Bounds (check_loss(max_batch=) is deprecated)
    sizes = {k: options.pop(k) for k in ("max_batch", "max_steps") if k in options}
    with pytest.raises(error, match=name):
        check_loss(maskloss.mae, maskloss.mae, max_examples=2, bounds=Bounds(**sizes) if sizes else None,  # type: ignore[arg-type]
                   **options)


def test_global_token_mean_refuses_a_count_below_the_valid_tokens() -> None:
    # A global count smaller than this micro-batch's 4 valid tokens cannot be a count of the step.
    loss = np.array([[1.0, 1.0, 1.0], [4.0, np.nan, np.nan]])
    mask = np.array([[1, 1, 1], [1, 0, 0]], dtype=bool)
    with pytest.raises(ValueError, match="global_count=3 is below this micro-batch's own 4 valid tokens"):
        maskloss.aggregate(loss, mask, mode="global_token_mean", global_count=3)
    # exactly the micro-batch's own count is the one-micro-batch step: the token mean (7 / 4)
    assert float(maskloss.aggregate(loss, mask, mode="global_token_mean", global_count=4)) == 1.75
