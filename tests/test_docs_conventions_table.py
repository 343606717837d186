"""The typed conventions table of chapter 7 checked against the mirrors it links to.

The table (docs/reference/framework-conventions.md, section "The table") is written by hand because
its cells quote framework code. Its "all masked" column is a claim about each mirror, so
every row's claim is recomputed here: the mirror on a batch with no valid step (or, where the
cell says so, an empty batch). Each row is addressed by its first two cells, so a reordered,
added or removed row fails this test until the table and the test agree again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from maskloss.conventions import allennlp, fairseq, hf, keras2, keras3, optax, t5x, tf_keras, tfa
from maskloss.conventions import torch as tc

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "framework-conventions.md"
B, T, C = 2, 3, 4
RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(B, T, C))
LABELS = RNG.integers(1, C, size=(B, T))
NOTHING = np.zeros((B, T), dtype=bool)
SCORES = RNG.uniform(0.5, 2.0, size=(B, T))


def table_rows() -> list[list[str]]:
    """The cells of every row of the conventions table, header and rule excluded."""
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| framework (versions)"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def is_nan(x: object) -> bool:
    return bool(np.all(np.isnan(np.asarray(x, dtype=np.float64))))


def is_zero(x: object) -> bool:
    return bool(np.all(np.asarray(x, dtype=np.float64) == 0.0))


def torch_index_targets() -> None:
    ignored = np.full((B, T), -100)
    logits = LOGITS.transpose(0, 2, 1)  # torch's (N, C, d1)
    assert is_nan(tc.cross_entropy(logits, ignored))
    assert is_nan(tc.cross_entropy(logits, ignored, label_smoothing=0.1))
    assert is_nan(tc.nll_loss(logits, ignored))
    assert is_zero(tc.cross_entropy(logits, ignored, reduction="sum"))


def torch_probability_targets() -> None:
    assert is_nan(tc.cross_entropy(np.zeros((0, C)), np.zeros((0, C))))


def torch_binary() -> None:
    empty = np.zeros((0,))
    assert is_nan(tc.binary_cross_entropy(empty, empty))
    assert is_nan(tc.binary_cross_entropy_with_logits(empty, empty))


def torch_regression() -> None:
    zero_weight = np.zeros((B, T))
    assert is_nan(tc.l1_loss(SCORES, SCORES + 1.0, weight=zero_weight))
    assert is_nan(tc.mse_loss(SCORES, SCORES + 1.0, weight=zero_weight))


def optax_rows() -> None:
    labels = np.eye(C)[LABELS]
    assert is_zero(optax.softmax_cross_entropy_with_integer_labels(LOGITS, LABELS, where=NOTHING))
    assert is_zero(optax.softmax_cross_entropy(LOGITS, labels, where=NOTHING))


def hf_causal() -> None:
    ignored = np.full((B, T), -100)
    assert is_nan(hf.for_causal_lm_loss(LOGITS, ignored, C))
    assert is_nan(hf.for_causal_lm_loss(LOGITS, ignored, C, num_items_in_batch=0))
    assert math.isinf(hf.for_causal_lm_loss(LOGITS, LABELS, C, num_items_in_batch=0))


def keras3_mean() -> None:
    assert is_zero(keras3.mean_squared_error(SCORES[..., None], SCORES[..., None] + 1, mask=NOTHING))


def keras3_mean_with_sample_weight() -> None:
    weight = np.ones((B, T))
    y, p = SCORES[..., None], SCORES[..., None] + 1
    value = keras3.mean_squared_error(y, p, mask=NOTHING, sample_weight=weight, reduction="mean_with_sample_weight")
    assert is_zero(value)


def keras_sum() -> None:
    y, p = SCORES[..., None], SCORES[..., None] + 1
    assert is_zero(keras3.mean_squared_error(y, p, mask=NOTHING, reduction="sum"))
    assert is_zero(tf_keras.mean_squared_error(y, p, mask=NOTHING, reduction="sum"))


def tf_keras_mean() -> None:
    assert is_nan(tf_keras.mean_squared_error(SCORES[..., None], SCORES[..., None] + 1, mask=NOTHING))


def keras23_padding_counted() -> None:
    y, p = SCORES[..., None], SCORES[..., None] + 1
    assert is_zero(tf_keras.mean_squared_error(y, p, mask=NOTHING, version="2.10"))
    assert is_zero(keras2.keras23_objective(SCORES, NOTHING))


def keras2_weighted_masked_objective() -> None:
    assert is_nan(keras2.masked_objective_value(SCORES, NOTHING))


def keras225_epsilon() -> None:
    assert is_zero(keras2.masked_objective_value(SCORES, NOTHING, epsilon=keras2.EPSILON_2_2_5))


def tfa_sequence_loss_function_default() -> None:
    assert is_zero(tfa.sequence_loss(LOGITS, LABELS, np.zeros((B, T))))


def tfa_sequence_loss_class_default() -> None:
    value = tfa.sequence_loss(
        LOGITS,
        LABELS,
        np.zeros((B, T)),
        average_across_timesteps=False,
        average_across_batch=False,
        sum_over_timesteps=True,
        sum_over_batch=True,
    )
    assert is_zero(value)


def tfa_one_axis() -> None:
    zero = np.zeros((B, T))
    for flags in (
        dict(average_across_timesteps=True, average_across_batch=False),
        dict(average_across_timesteps=False, average_across_batch=True),
        dict(average_across_timesteps=False, average_across_batch=False, sum_over_timesteps=True),
        dict(average_across_timesteps=False, average_across_batch=False, sum_over_batch=True),
        dict(average_across_timesteps=False, average_across_batch=False),
    ):
        assert is_zero(tfa.sequence_loss(LOGITS, LABELS, zero, **flags)), flags


def allennlp_batch() -> None:
    assert is_zero(allennlp.sequence_cross_entropy_with_logits(LOGITS, LABELS, np.zeros((B, T))))


def allennlp_token_and_none() -> None:
    zero = np.zeros((B, T))
    assert is_zero(allennlp.sequence_cross_entropy_with_logits(LOGITS, LABELS, zero, average="token"))
    assert is_zero(allennlp.sequence_cross_entropy_with_logits(LOGITS, LABELS, zero, average=None))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)


def fairseq_new() -> None:
    padding = np.ones((B, T), dtype=int)  # fairseq's pad index 1
    loss, _ = fairseq.label_smoothed_nll_loss(_log_softmax(LOGITS), padding, 0.1, ignore_index=1)
    size = fairseq.sample_size(padding, padding_idx=1)
    assert is_zero(loss) and size == 0
    assert is_zero(fairseq.update_loss([loss], [size]))  # "divides by 1"


def fairseq_old() -> None:
    padding = np.ones((B, T), dtype=int)
    loss, _ = fairseq.label_smoothed_nll_loss(_log_softmax(LOGITS), padding, 0.1, ignore_index=1, version="0.10.2")
    assert is_zero(loss)


def t5x_raw_sums() -> None:
    loss, z_loss, weight_sum = t5x.compute_weighted_cross_entropy(LOGITS, LABELS, np.zeros((B, T)))
    assert is_zero(loss) and is_zero(z_loss) and is_zero(weight_sum)


def t5x_factors() -> None:
    batch = {"decoder_target_tokens": np.zeros((B, T), dtype=int)}  # all pad (id 0)
    for name, expect_nan in (
        ("NUM_REAL_TARGET_TOKENS", True),
        ("AVERAGE_PER_SEQUENCE", True),
        ("NUM_TOTAL_TARGET_TOKENS", False),
    ):
        factor, weights = t5x.get_loss_normalizing_factor_and_weights(name, batch)
        loss, _, _ = t5x.compute_weighted_cross_entropy(LOGITS, LABELS, weights, loss_normalizing_factor=factor)
        assert (is_nan(loss) if expect_nan else is_zero(loss)), (name, loss)


def flax_examples() -> None:
    loss, _, weight_sum = t5x.compute_weighted_cross_entropy(LOGITS, LABELS, np.zeros((B, T)), label_smoothing=0.1)
    with np.errstate(invalid="ignore"):
        assert is_nan(np.float64(loss) / np.float64(weight_sum))


# (first cell starts with, second cell contains, "all masked" cell starts with, the check)
ROWS: list[tuple[str, str, str, Callable[[], None]]] = [
    ("torch", "index targets", "NaN (`\"sum\"`: 0)", torch_index_targets),
    ("torch", "probability targets", "NaN (empty)", torch_probability_targets),
    ("torch", "binary_cross_entropy", "NaN (empty)", torch_binary),
    ("torch", "l1_loss", "NaN", torch_regression),
    ("optax", "where=", "0 per row", optax_rows),
    ("transformers", "ForCausalLMLoss", "NaN (also with `num_items_in_batch=0`", hf_causal),
    ("Keras 3.0", "sum_over_batch_size", "0", keras3_mean),
    ("Keras 3.7", "mean_with_sample_weight", "0", keras3_mean_with_sample_weight),
    ("Keras 3, tf_keras", '"sum"', "0", keras_sum),
    ("tf.keras TF >= 2.11", "sum_over_batch_size", "NaN", tf_keras_mean),
    ("Keras 2.3", "mask merged", "0", keras23_padding_counted),
    ("Keras 2.0-2.2.4", "weighted_masked_objective", "NaN", keras2_weighted_masked_objective),
    ("Keras 2.2.5", "weighted_masked_objective", "0", keras225_epsilon),
    ("TF Addons 0.x", "function default", "0", tfa_sequence_loss_function_default),
    ("TF Addons", "class default", "0", tfa_sequence_loss_class_default),
    ("TF Addons", "one axis", "0", tfa_one_axis),
    ("AllenNLP", '`average="batch"`', "0", allennlp_batch),
    ("AllenNLP", '`average="token"`', "0", allennlp_token_and_none),
    ("fairseq >= 0.12", "label_smoothed_nll_loss", "0 (divides by 1)", fairseq_new),
    ("fairseq <= 0.10", "label_smoothed_nll_loss", "0", fairseq_old),
    ("T5X", "compute_weighted_cross_entropy", "0 (raw sums)", t5x_raw_sums),
    ("T5X", "normalising factors", "NaN (`0/0`) for `NUM_REAL_TARGET_TOKENS`", t5x_factors),
    ("flax examples", "compute_weighted_cross_entropy", "NaN", flax_examples),
]


def test_the_table_has_exactly_the_rows_this_test_checks() -> None:
    rows = table_rows()
    assert len(rows) == len(ROWS), [row[:2] for row in rows]
    for cells, (framework, function, all_masked, _) in zip(rows, ROWS, strict=True):
        assert cells[0].startswith(framework), cells[:2]
        assert function in cells[1], cells[:2]
        assert cells[3].startswith(all_masked), (cells[:2], cells[3])


@pytest.mark.parametrize("check", [row[3] for row in ROWS], ids=[f"{r[0]}: {r[1]}" for r in ROWS])
def test_the_all_masked_cell_is_what_the_mirror_returns(check: Callable[[], None]) -> None:
    check()

