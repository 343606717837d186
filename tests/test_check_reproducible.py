"""check_loss's derandomised search does not depend on what the caller has imported.

Hypothesis draws "local constants" from every local module in ``sys.modules``; without
``maskloss.testing._search.no_local_constants`` the batches a candidate sees change after
importing a module full of constants (both tests fail without it).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import maskloss
from maskloss.testing import check_aggregation, check_loss


def _constants_module(tmp_path: Path, name: str) -> None:
    """A fresh local module of many int and float constants, importable from ``tmp_path``."""
    lines = [f"I{i} = {v}" for i, v in enumerate([*range(-7, 40), 123, 4096, 2**20, 65535])]
    lines += [f"F{i} = {v!r}" for i, v in enumerate([0.1, 0.25, -0.75, 1.5, 2.5, -3.125, 7.75, 1e-3, 0.33, 12.5])]
    (tmp_path / f"{name}.py").write_text("\n".join(lines) + "\n")


def _import_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    _constants_module(tmp_path, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.setitem(sys.modules, name, importlib.import_module(name))


def _seen_by_check_loss() -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []

    def candidate(y_true: Any, y_pred: Any, mask: Any) -> Any:
        seen.append((np.shape(y_pred), np.asarray(y_pred).tobytes(), np.asarray(mask).tobytes()))
        return maskloss.mse(y_true, y_pred, mask)

    check_loss(candidate, maskloss.mse, max_examples=40, derandomize=True)
    return seen


def test_check_loss_batches_do_not_depend_on_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _seen_by_check_loss()
    _import_fresh(tmp_path, monkeypatch, "maskloss_repro_constants_a")
    after = _seen_by_check_loss()
    assert len(before) > 40
    assert after == before


def test_check_aggregation_batches_do_not_depend_on_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def seen() -> list[bytes]:
        out: list[bytes] = []

        def candidate(loss: Any, mask: Any) -> Any:
            out.append(np.asarray(loss).tobytes() + np.asarray(mask).tobytes())
            return maskloss.aggregate(loss, mask, mode="token_mean")

        check_aggregation(candidate, "token_mean", max_examples=100)
        return out

    before = seen()
    _import_fresh(tmp_path, monkeypatch, "maskloss_repro_constants_b")
    assert seen() == before


def test_local_constants_restored_after_check_loss() -> None:
    from hypothesis.internal.conjecture import providers

    original = providers._get_local_constants
    check_loss(lambda t, p, m: maskloss.mse(t, p, m), maskloss.mse, max_examples=3)
    assert providers._get_local_constants is original
