"""Unit weights are not scaled (issue 19: "an unweighted call is scaled by 0.5 and back").

:func:`maskloss.reductions.power_of_two_scale` used to bring the largest weight into
[1/2, 1), so an unweighted call (every weight 1) halved its losses and doubled the value back:
exact for normal numbers, but a subnormal loss lost its last bits (``mse`` of errors of
``2.2e-162``, whose squares round to the smallest subnormal 5e-324, summed to 0.0).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from maskloss.reductions import power_of_two_scale

TINY = 2.2e-162  # its square, 4.84e-324, rounds to the smallest subnormal 5e-324 (math.ulp(0.0))


@pytest.mark.parametrize("reduction", ["sum", "token_mean", "sequence_mean", "batch_mean", "element_mean"])
def test_a_subnormal_loss_survives_an_unweighted_reduction(reduction):
    err = np.full((1, 2, 1), TINY)
    step = math.ulp(0.0)  # each step's squared error, computed in float64
    assert TINY * TINY == step
    expected = {"sum": 2 * step, "token_mean": step, "sequence_mean": step, "batch_mean": 2 * step,
                "element_mean": step}[reduction]
    assert maskloss.mse(np.zeros_like(err), err, reduction=reduction) == expected
    value, grad = maskloss.value_and_grad(maskloss.mse)(np.zeros_like(err), err, reduction=reduction)
    assert value == expected
    np.testing.assert_allclose(grad, 2 * TINY / {"sum": 1, "batch_mean": 1}.get(reduction, 2) * np.ones_like(err),
                               rtol=1e-15)


@given(st.floats(min_value=5e-324, max_value=1.7e308, allow_nan=False, allow_infinity=False))
def test_power_of_two_scale_brings_the_largest_weight_into_half_to_one(top):
    w = np.array([top, top / 3])
    scaled, exponent = power_of_two_scale(w)
    assert 0.5 <= scaled[0] <= 1.0
    assert np.array_equal(np.ldexp(scaled, exponent), w)  # exact: a power of two
    if math.frexp(top)[0] == 0.5:  # a power of two is brought to exactly 1
        assert scaled[0] == 1.0


def test_unit_weights_are_returned_unscaled():
    w = np.ones((2, 3))
    scaled, exponent = power_of_two_scale(w)
    assert exponent == 0 and np.array_equal(scaled, w)
