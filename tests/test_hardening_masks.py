"""Issue 25 hardening: mask_from_lengths refuses masks that cannot fit and allocates only the mask.

Without the fix ``maxlen=2**40`` tried to allocate 8 TiB (an int64 ``arange`` of the steps,
then a MemoryError from NumPy), and ``maxlen=2**25`` peaked at 5x the mask (the int64 step
indices and the comparison's temporaries). The expected masks are built with a loop.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import maskloss


@pytest.mark.parametrize(("lengths", "maxlen"), [([1, 2], 2**40), ([0], 2**62), (np.zeros(2**10, int), 2**55)])
def test_masks_that_cannot_fit_are_refused(lengths: list[int], maxlen: int) -> None:
    with pytest.raises(ValueError, match=rf"maxlen={maxlen} with {len(lengths)} sequences needs a mask of .* bytes"):
        maskloss.mask_from_lengths(lengths, maxlen)


@pytest.mark.parametrize("side", ["right", "left"])
def test_only_the_mask_is_allocated(side: str) -> None:
    steps = 2**22  # 4 MiB per sequence: far above the chunk of step indices
    tracemalloc.start()
    try:
        mask = maskloss.mask_from_lengths([3, steps - 5], steps, side=side)  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the mask plus one bounded chunk of step indices (2**16 int64, and its comparison's buffer)
    assert peak < mask.nbytes + 2**21, peak / mask.nbytes
    assert mask.sum(axis=1).tolist() == [3, steps - 5]
    valid = np.flatnonzero(mask[0])
    assert valid.tolist() == ([0, 1, 2] if side == "right" else [steps - 3, steps - 2, steps - 1])


@pytest.mark.parametrize("side", ["right", "left"])
def test_chunked_columns_match_a_loop(side: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import maskloss.masks as masks

    monkeypatch.setattr(masks, "_COLUMNS", 3)  # several chunks and a partial last one
    lengths, steps = [0, 1, 4, 7, 7], 7
    got = maskloss.mask_from_lengths(lengths, steps, side=side)  # type: ignore[arg-type]
    want = [[(t < n) if side == "right" else (t >= steps - n) for t in range(steps)] for n in lengths]
    assert got.tolist() == want
