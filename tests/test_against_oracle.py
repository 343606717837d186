"""Every loss x reduction x weighting against the slow loop oracles in ``oracles.py``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import maskloss
from tests.cases import KINDS, assert_matches, cases


@pytest.mark.parametrize("kind", KINDS)
def test_every_reduction_matches_the_loop_oracle(kind):
    @given(case=cases(kinds=(kind,)))
    def check(case):
        expected = case.oracle()
        for reduction in maskloss.REDUCTIONS:
            assert_matches(case.run(reduction), expected[reduction], rtol=1e-11, atol=1e-12)

    check()


@given(case=cases())
def test_results_are_float64(case):
    for reduction in maskloss.REDUCTIONS:
        out = case.run(reduction)
        assert np.asarray(out).dtype == np.float64
        if reduction == "none":
            assert out.shape == case.mask.shape
        else:
            assert isinstance(out, np.float64)
