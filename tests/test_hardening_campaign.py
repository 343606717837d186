"""Issue 25 hardening: what the second attack campaign of w25a found, each pinned here.

- ``GlobalAveragePooling1D`` on sequences of 0 steps raised NumPy's "zero-size array to reduction
  operation maximum" (a regression of the overflow fix, caught by the campaign): it is NaN (0/0).
- ``set_num_threads(10**9)`` was accepted, and the next large call started one OS thread per
  2**17 elements of work (thousands: "can't start new thread"); ``set_num_threads(np.int64(2))``
  was refused as "must be a positive int".
"""

from __future__ import annotations

import numpy as np
import pytest

import maskloss
from maskloss.layers import GlobalAveragePooling1D


def test_pooling_of_no_steps_is_nan() -> None:
    out = GlobalAveragePooling1D()(np.ones((2, 0, 3)))
    assert out.shape == (2, 3) and np.isnan(out).all()
    masked = GlobalAveragePooling1D()(np.ones((2, 0, 3)), mask=np.zeros((2, 0), bool))
    assert masked.shape == (2, 3) and np.isnan(masked).all()


def test_thread_counts_beyond_the_cap_are_refused() -> None:
    previous = maskloss.get_num_threads()
    try:
        with pytest.raises(ValueError, match=r"n=1000000000 is more threads than maskloss starts \(at most 256"):
            maskloss.set_num_threads(10**9)
        assert maskloss.get_num_threads() == previous
        assert maskloss.set_num_threads(np.int64(2)) == previous
        assert maskloss.get_num_threads() == 2 and type(maskloss.get_num_threads()) is int
        maskloss.set_num_threads(256)
    finally:
        maskloss.set_num_threads(previous)


def test_the_environment_variable_is_capped_too() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "MASKLOSS_NUM_THREADS": "100000"}
    bad = subprocess.run([sys.executable, "-c", "import maskloss"], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert bad.returncode != 0 and "MASKLOSS_NUM_THREADS=100000 is more threads than maskloss starts" in bad.stderr


def test_dask_evaluate_refuses_a_numpy_ma_mask_too() -> None:
    # maskloss.dask read in-memory arguments with np.asarray, which dropped a numpy.ma mask
    # (the masked step was counted: 1.0986 = log 3 over all four steps).
    pytest.importorskip("dask")
    from maskloss import dask as mdask

    labels, logits = np.array([[0, 1, 2, 0]]), np.zeros((1, 4, 3))
    hidden = np.ma.array(np.ones((1, 4), bool), mask=[[0, 1, 0, 0]])
    for call in (lambda: mdask.evaluate(maskloss.sparse_categorical_crossentropy, labels, logits, hidden,
                                        from_logits=True),
                 lambda: mdask.evaluate(maskloss.sparse_categorical_crossentropy, labels,
                                        np.ma.array(logits, mask=logits == 0), from_logits=True)):
        with pytest.raises(TypeError, match=r"numpy\.ma masked array"):
            call()
    got = mdask.evaluate(maskloss.sparse_categorical_crossentropy, labels, logits, np.ma.array(np.ones((1, 4), bool)),
                         from_logits=True).compute()
    assert got == maskloss.sparse_categorical_crossentropy(labels, logits, from_logits=True)
