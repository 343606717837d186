"""Issue 19's refactor changes no number: a broad sweep of public calls stays bit for bit.

The expected encodings in tests/data/sweep_before_issue19.json were produced by
``python -m tests.sweep_issue19`` at commit 8fb1e78, before the refactor (not from the code
under test after it); every call is recomputed here and compared exactly (raw bytes of each
output, so NaNs and signed zeros count, and the output's type, dtype and shape).
"""

from __future__ import annotations

import json

from tests.sweep_issue19 import DATA, sweep


def test_sweep_is_bit_identical_to_before_issue19() -> None:
    expected = json.loads(DATA.read_text())
    assert "8fb1e78" in expected["header"]
    now = sweep()
    assert sorted(now) == sorted(expected["calls"]), "the sweep's list of calls changed"
    changed = [name for name, value in now.items() if value != expected["calls"][name]]
    assert not changed, f"{len(changed)} of {len(now)} public calls changed, e.g. {changed[:10]}"


def test_sweep_detects_a_one_ulp_change() -> None:
    # The comparison is exact: the next float after a recorded value encodes differently.
    import numpy as np

    from tests.sweep_issue19 import encode

    value = np.float64(0.1)
    assert encode(value) != encode(np.nextafter(value, 1.0))
    assert encode(np.float64(0.0)) != encode(np.float64(-0.0))
