"""Large vocabularies are processed in bounded chunks: the chunk size never changes a result."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from maskloss import _rows
from tests.cases import assert_matches, cases


@given(case=cases(), chunk=st.integers(1, 12))
def test_tiny_chunks_give_the_same_result_as_one_chunk(case, chunk):
    whole = {r: case.run(r) for r in maskloss.REDUCTIONS}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_rows, "CHUNK_ELEMENTS", chunk)
        for reduction in maskloss.REDUCTIONS:
            assert_matches(case.run(reduction), whole[reduction], rtol=1e-13, atol=0)


def test_chunks_are_bounded_and_cover_every_row_once():
    rows = np.arange(1000)
    pieces = list(_rows.row_chunks(rows, width=_rows.CHUNK_ELEMENTS // 64))
    assert all(len(p) <= 64 for p in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces), rows)
