"""The docs table and figure of the post-training chapter compute their numbers with maskloss."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import maskloss

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _load(relative: str):
    spec = importlib.util.spec_from_file_location(relative.replace("/", "_")[:-3], DOCS / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_modes_table_numbers_come_from_maskloss():
    table = _load("tables/posttraining_modes.py")
    loss, mask = table.batch()
    text = table.render()
    rows = {r[0]: r for r in table.rows()}
    # token mean by hand on the same batch: sum of valid losses over the 9 valid tokens
    assert rows["token_mean"][1] == pytest.approx(np.where(mask, loss, 0).sum() / 9)
    assert rows["token_mean"][1] == pytest.approx(float(maskloss.aggregate(loss, mask)))
    assert f"{rows['sequence_mean'][1]:.4f}" in text
    # the additive modes are invariant everywhere, the per-piece means are not
    for mode in ("sum", "constant", "global_token_mean"):
        assert text.count("✓", text.index(f"`{mode}`"), text.index("\n", text.index(f"`{mode}`"))) == 3
    assert "NaN ✗" in text.split("`token_mean`")[1].split("\n")[0]


def test_length_bias_figure_uses_maskloss_weights():
    figure = _load("figures/f9_length_bias.py")
    lengths, w = figure.weights("sequence_mean")
    np.testing.assert_allclose(w, 1 / (4 * lengths), rtol=1e-12)  # 1 / (K L), K = 4 non-empty responses
    _, w_const = figure.weights("constant")
    np.testing.assert_allclose(w_const, 1 / (4 * figure.MAX_LEN), rtol=1e-12)
    fig = figure.draw()
    assert len(fig.axes[0].lines) == len(figure.MODES)


def test_batch_mean_is_exact_only_under_equal_splits_as_chapter_09_says():
    # Issue 24: chapter 09's table marks batch_mean exact (its splits are equal) while its text
    # listed only the additive modes; the text now says the ✓ holds for equal splits only.
    table = _load("tables/posttraining_modes.py")
    loss, mask = table.batch()
    full = table.value("batch_mean", loss, mask)
    equal = table.combined("batch_mean", loss, mask, [np.array([0, 1]), np.array([2, 3])])
    unequal = table.combined("batch_mean", loss, mask, [np.array([0]), np.array([1, 2, 3])])
    assert equal == pytest.approx(full, rel=1e-12)
    assert unequal != pytest.approx(full, rel=1e-3)
    chapter = " ".join((DOCS / "course" / "09-post-training.md").read_text(encoding="utf-8").split())
    assert "exact only when every piece holds the same number of responses" in chapter
