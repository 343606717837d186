"""check_loss from real code (issue 25): adapter dtype awareness and all_masked under shift."""

from __future__ import annotations

import numpy as np
import pytest

import maskloss
from maskloss.testing import Bounds, check_loss, jax_adapter, torch_adapter


def test_float32_torch_loss_passes_at_default_settings() -> None:
    # A correct torch loss computing in float32 (the generated float64 batch is cast by dtype=):
    # before the adapter recorded result_dtype, check_loss held it to the float64 row and failed.
    torch = pytest.importorskip("torch")

    def torch_mse(y_true, y_pred, mask):  # type: ignore[no-untyped-def]
        per_step = ((y_true - y_pred) ** 2).mean(-1)
        return per_step[mask].sum() / mask.sum()

    wrapped = torch_adapter(torch_mse, dtype=torch.float32)
    check_loss(wrapped, maskloss.mse, max_examples=30)
    assert wrapped.result_dtype == "float32"  # type: ignore[attr-defined]


def test_float32_torch_loss_still_fails_on_a_real_bug() -> None:
    # The float32 row is loose only to rounding: a wrong denominator is still caught.
    torch = pytest.importorskip("torch")

    def torch_mse_wrong(y_true, y_pred, mask):  # type: ignore[no-untyped-def]
        per_step = ((y_true - y_pred) ** 2).mean(-1)
        return per_step[mask].sum() / (mask.sum() + 1)

    with pytest.raises(AssertionError, match="agreement"):
        check_loss(torch_adapter(torch_mse_wrong, dtype=torch.float32), maskloss.mse, max_examples=30)


def test_float32_jax_loss_passes_at_default_settings() -> None:
    jnp = pytest.importorskip("jax.numpy")

    def jax_mse(y_true, y_pred, mask):  # type: ignore[no-untyped-def]
        per_step = ((y_true - y_pred) ** 2).mean(-1)
        return jnp.where(mask, per_step, 0.0).sum() / mask.sum()

    wrapped = jax_adapter(jax_mse, dtype=jnp.float32)
    check_loss(wrapped, maskloss.mse, max_examples=30)
    assert wrapped.result_dtype == "float32"  # type: ignore[attr-defined]


def _shifted_ce(labels, logits, mask):  # type: ignore[no-untyped-def]
    """HF's causal shift, token mean, 0 when no shifted label is valid (an all_masked=0 convention)."""
    lab, lg, m = labels[:, 1:], logits[:, :-1], mask[:, 1:]
    if not m.any():
        return 0.0
    z = lg - lg.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    safe = np.where(m, lab, 0)
    nll = -np.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return np.where(m, nll, 0.0).sum() / m.sum()


def test_all_masked_not_applied_while_shifted_steps_are_valid() -> None:
    # Left padding: the padded step just before the first token predicts a valid label, so junk
    # there gives a real NaN in oracle and candidate alike. all_masked=0.0 once replaced that NaN
    # (valid steps remain) by 0 and reported a correct loss as broken.
    check_loss(_shifted_ce, maskloss.sparse_categorical_crossentropy, shift=1,
               bounds=Bounds(all_masked=0.0, padding="left"), from_logits=True, max_examples=40)


def test_all_masked_still_applies_when_nothing_is_valid() -> None:
    # The other side of the rule: a loss giving NaN on an empty batch breaks all_masked=0.0.
    def nan_when_empty(labels, logits, mask):  # type: ignore[no-untyped-def]
        value = _shifted_ce(labels, logits, mask)
        return np.nan if not mask[:, 1:].any() else value

    with pytest.raises(AssertionError, match=r"expected value:  0\.0"):
        check_loss(nan_when_empty, maskloss.sparse_categorical_crossentropy, shift=1,
                   bounds=Bounds(all_masked=0.0, padding="left"), from_logits=True, max_examples=10)
