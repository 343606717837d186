"""One name for one idea (issue 19): ``step_losses`` is the per-step evaluation; ``per_step`` its deprecated name."""

from __future__ import annotations

import numpy as np
import pytest

import maskloss.losses
import maskloss.pipeline


def _step(rows, values, grad=False):
    return values * 2.0


def test_per_step_is_deprecated_and_equals_step_losses():
    valid = np.array([[True, False, True]])
    values = np.array([1.0, np.nan, 3.0])  # the masked value is never passed to the step
    expected = maskloss.pipeline.step_losses(_step, valid, values)
    np.testing.assert_array_equal(expected, [[2.0, 0.0, 6.0]])
    with pytest.warns(DeprecationWarning, match=r"per_step is deprecated; use maskloss\.pipeline\.step_losses"):
        old = maskloss.losses.per_step(_step, valid, values)
    np.testing.assert_array_equal(old, expected)
    assert maskloss.losses.step_losses is maskloss.pipeline.step_losses
