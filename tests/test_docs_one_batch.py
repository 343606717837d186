"""The "one batch, many answers" numbers of docs/course/07-frameworks.md, re-run on the real
frameworks on every run of the suite, so the page never shows a stale run. The doctests
there check the maskloss mirrors; this checks the frameworks give the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

# The batch of the page: 4 and 1 valid steps, 3 classes, right padded with -100 (junk logits).
LOGITS = np.array(
    [
        [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [1.5, -0.5, 0.0], [0.2, 0.1, -0.3]],
        [[-1.0, 0.0, 1.0], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0]],
    ]
)
LABELS = np.array([[0, 2, 1, 1], [2, -100, -100, -100]])
CW = np.array([1.0, 2.0, 0.5])


@pytest.mark.framework("torch")
def test_torch_gives_the_numbers_of_the_page() -> None:
    torch = pytest.importorskip("torch")
    ce = torch.nn.functional.cross_entropy
    x = torch.tensor(np.moveaxis(LOGITS, -1, 1))
    y = torch.tensor(LABELS)
    w = torch.tensor(CW)
    assert ce(x, y).item() == pytest.approx(0.829189, abs=5e-7)
    assert ce(x, y, weight=w).item() == pytest.approx(1.197401, abs=5e-7)
    assert ce(x, y, weight=w, label_smoothing=0.1).item() == pytest.approx(1.232443, abs=5e-7)
    # fairseq >= 0.12's eps/(C-1) rule at eps = 0.1, C = 3 is torch's eps/C rule at 0.15.
    assert ce(x, y, label_smoothing=0.15).item() == pytest.approx(0.932189, abs=5e-7)
    assert np.isnan(ce(x, torch.full_like(y, -100)).item())


@pytest.mark.framework("transformers")
def test_transformers_gives_the_numbers_of_the_page() -> None:
    torch = pytest.importorskip("torch")
    loss_utils = pytest.importorskip("transformers.loss.loss_utils")
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    loss = loss_utils.ForCausalLMLoss
    assert loss(logits, labels, 3).item() == pytest.approx(2.572504, abs=1e-6)  # float32 inside
    assert loss(logits, labels, 3, num_items_in_batch=5).item() == pytest.approx(1.543503, abs=1e-6)
    assert np.isnan(loss(logits, torch.full_like(labels, -100), 3).item())
