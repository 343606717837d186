"""Masked losses from public code, re-created in NumPy from their formulas.

Each function is written the way its source computes (multiplying by the mask where the
source does, dividing by what the source divides by), with check_loss's call shape
``(labels_or_targets, predictions, mask)``, mask True at valid steps. The docstring names
the repository, file and function. ``tests/test_real_code.py`` gives each its verdict
under ``maskloss.testing.check_loss`` with documented options and no wrapper;
``docs/tables/real_code.py`` turns the same table (``CASES``) into the gallery page.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

import maskloss
from maskloss.testing import Bounds

SPARSE = maskloss.sparse_categorical_crossentropy


def _log_softmax(x: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    x = np.asarray(x, dtype=dtype)
    top = x.max(-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


def _nll_every_step(labels: np.ndarray, logits: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """-log p(label) at every step, padding included: needs a valid id at padded steps."""
    return -np.take_along_axis(_log_softmax(logits, dtype), labels[..., None], -1)[..., 0]


def d2l_masked_softmax_ce(labels, logits, mask):
    """d2l-ai/d2l-en, ``d2l/torch.py``, ``MaskedSoftmaxCELoss.forward``: unweighted CE at every
    step, ``(unweighted_loss * weights).mean(dim=1)``, then averaged over the batch: the
    denominator is num_steps, padding included, and NaN * 0 leaks."""
    per_step = _nll_every_step(labels, logits)
    return float((per_step * mask).mean(axis=1).mean())


def allennlp_sequence_ce(labels, logits, mask):
    """allenai/allennlp, ``allennlp/nn/util.py``, ``sequence_cross_entropy_with_logits``
    (average="batch"): ``-log_probs.gather(targets) * weights``, per-sequence sums over
    ``weights.sum(1) + tiny``, summed over ``num_non_empty_sequences + tiny``."""
    tiny = 1e-13  # tiny_value_of_dtype(float64)
    w = mask.astype(np.float64)
    nll = _nll_every_step(labels, logits) * w
    per_seq = nll.sum(1) / (w.sum(1) + tiny)
    return float(per_seq.sum() / ((w.sum(1) > 0).sum() + tiny))


def keras22_weighted_masked_objective(y_true, y_pred, mask):
    """keras-team/keras 2.2.4, ``engine/training_utils.py``, ``weighted_masked_objective``
    (with ``mean_squared_error``): ``score_array *= mask; score_array /= K.mean(mask)``,
    then ``K.mean(score_array)``: a token mean, but by multiplication."""
    score = np.mean(np.square(y_pred - y_true), axis=-1)
    m = mask.astype(np.float64)
    score = score * m
    score = score / np.mean(m)
    return float(np.mean(score))


def keras225_weighted_masked_objective(y_true, y_pred, mask):
    """keras-team/keras 2.2.5, same function: ``score_array /= K.mean(mask) + K.epsilon()``,
    here with the mask selected (``np.where``) so that only the epsilon differs."""
    score = np.mean(np.square(y_pred - y_true), axis=-1)
    m = mask.astype(np.float64)
    score = np.where(mask, score, 0.0) / (np.mean(m) + 1e-7)
    return float(np.mean(score))


def _hf_causal(labels, logits, num_items_in_batch):
    """transformers, ``src/transformers/loss/loss_utils.py``, ``ForCausalLMLoss``: shift, CE
    with ``ignore_index=-100`` summed, divided by ``num_items_in_batch``."""
    shift_labels = labels[:, 1:]
    shift_logits = logits[:, :-1]
    valid = shift_labels != -100
    nll = _nll_every_step(np.where(valid, shift_labels, 0), shift_logits)
    return float(np.where(valid, nll, 0.0).sum() / num_items_in_batch)


def hf_causal_lm_trainer_count(labels, logits, mask):
    """transformers ``ForCausalLMLoss`` with ``num_items_in_batch`` as ``Trainer`` counts it
    before transformers PR #46204 (merged May 2026; ``src/transformers/trainer.py``,
    ``get_batch_samples``: ``(labels != -100).sum()`` on the unshifted labels), one token per
    sequence too many. transformers 5.24 counts ``labels[..., 1:]`` instead."""
    return _hf_causal(labels, logits, (labels != -100).sum())


def hf_causal_lm_shifted_count(labels, logits, mask):
    """transformers ``ForCausalLMLoss`` with ``num_items_in_batch`` counting the shifted
    labels, ``(labels[:, 1:] != -100).sum()``: what the loss divides by."""
    return _hf_causal(labels, logits, (labels[:, 1:] != -100).sum())


def hf_label_smoother(labels, logits, mask, epsilon=0.1):
    """transformers, ``src/transformers/trainer_pt_utils.py``, ``LabelSmoother.__call__``:
    ``masked_fill_`` at ``labels == -100``, ``(1 - eps) * nll / num_active + eps * smoothed /
    (num_active * C)``."""
    log_probs = -_log_softmax(logits)
    padding = labels == -100
    safe = np.clip(labels, 0, None)
    nll = np.take_along_axis(log_probs, safe[..., None], -1)[..., 0]
    smoothed = log_probs.sum(-1)
    nll = np.where(padding, 0.0, nll)
    smoothed = np.where(padding, 0.0, smoothed)
    active = padding.size - padding.sum()
    return float((1 - epsilon) * nll.sum() / active + epsilon * smoothed.sum() / (active * logits.shape[-1]))


def _verl_masked_mean(values, mask):
    return (values * mask).sum() / (mask.sum() + 1e-8)


def verl_value_loss_token_mean(returns, vpreds, mask):
    """volcengine/verl, ``trainer/ppo/core_algos.py``, ``compute_value_loss`` with
    ``loss_agg_mode="token-mean"`` (``agg_loss`` -> ``masked_mean``: ``(x * mask).sum() /
    (mask.sum() + 1e-8)``), ``0.5 * max(vf_losses1, vf_losses2)``; at the first PPO epoch
    the old values equal the predictions, so the clipped term equals the unclipped one."""
    vf = np.square(vpreds[..., 0] - returns[..., 0])
    return float(0.5 * _verl_masked_mean(np.maximum(vf, vf), mask))


def verl_value_loss_seq_mean_token_sum(returns, vpreds, mask):
    """verl's ``agg_loss`` with ``loss_agg_mode="seq-mean-token-sum"``:
    ``torch.sum(loss * mask, dim=-1)`` per sequence, then the mean over sequences."""
    vf = np.square(vpreds[..., 0] - returns[..., 0])
    return float(0.5 * np.mean(np.sum(vf * mask, axis=-1)))


def fairseq_label_smoothed_nll(target, logits, mask, epsilon=0.1, ignore_index=1):
    """facebookresearch/fairseq, ``fairseq/criterions/label_smoothed_cross_entropy.py``,
    ``label_smoothed_nll_loss`` (reduce=True) on ``lprobs = log_softmax(logits)``:
    ``masked_fill_(pad_mask, 0)``, ``eps_i = epsilon / (C - 1)``,
    ``(1 - epsilon - eps_i) * nll + eps_i * smooth``: the ε/(C-1) rule, a sum."""
    lprobs = _log_softmax(logits)
    pad = target == ignore_index
    nll = -np.take_along_axis(lprobs, np.where(pad, 0, target)[..., None], -1)[..., 0]
    smooth = -lprobs.sum(-1)
    nll, smooth = np.where(pad, 0.0, nll), np.where(pad, 0.0, smooth)
    eps_i = epsilon / (lprobs.shape[-1] - 1)
    return float((1.0 - epsilon - eps_i) * nll.sum() + eps_i * smooth.sum())


def opennmt_label_smoothing_loss(target, logits, mask, label_smoothing=0.1, padding_idx=1):
    """OpenNMT/OpenNMT-py (1.x/2.x), ``onmt/utils/loss.py``, ``LabelSmoothingLoss.forward`` on
    ``output = log_softmax(logits)`` (the generator's ``LogSoftmax``), rows ``(B*T, C)``:
    ``one_hot`` filled with ``label_smoothing / (C - 2)`` and 0 at ``padding_idx``;
    ``model_prob.scatter_(1, target, confidence)``; ``masked_fill_(target == padding_idx, 0)``;
    ``F.kl_div(output, model_prob, reduction='sum')`` = ``sum(xlogy(q, q) - q * output)``: the
    eps/(C-2) rule without the pad class, the KL form, a sum; ``0 * output`` at padded rows."""
    c = logits.shape[-1]
    output = _log_softmax(logits).reshape(-1, c)
    t = target.reshape(-1)
    model_prob = np.full((t.size, c), label_smoothing / (c - 2))
    model_prob[:, padding_idx] = 0.0
    model_prob[np.arange(t.size), np.where(t == padding_idx, 0, t)] = 1.0 - label_smoothing
    model_prob[t == padding_idx] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        xlogy = np.where(model_prob > 0, model_prob * np.log(model_prob), 0.0)
    return float(np.sum(xlogy - model_prob * output))


def tf_tutorial_masked_loss(label, pred, mask):
    """tensorflow/text, ``docs/tutorials/transformer.ipynb``, ``masked_loss``: ``mask = label
    != 0``; ``loss *= mask``; ``reduce_sum(loss) / reduce_sum(mask)`` (float32, as Keras)."""
    m = (label != 0).astype(np.float32)
    loss = _nll_every_step(label, pred, np.float32)
    loss = loss * m
    return np.float32(loss.sum() / m.sum())


def chatbot_mask_nll_objective(target, logits, mask):
    """pytorch/tutorials, ``beginner_source/chatbot_tutorial.py``, ``maskNLLLoss`` in the
    ``train`` loop: per time step ``crossEntropy.masked_select(mask).mean()``, summed over
    the T steps (``loss += mask_loss``) and back-propagated: T times the token mean it prints
    only when every step has the same number of valid tokens."""
    probs = np.exp(_log_softmax(logits))
    total = 0.0
    for t in range(target.shape[1]):  # the tutorial's decoder loop over time
        ce = -np.log(np.take_along_axis(probs[:, t], target[:, t, None], -1)[:, 0])
        total += ce[mask[:, t]].mean()
    return float(total)


def saits_masked_mae_cal(target, inputs, mask):
    """WenjieDu/SAITS, ``modeling/utils.py``, ``masked_mae_cal``: ``torch.sum(torch.abs(inputs
    - target) * mask) / (torch.sum(mask) + 1e-9)`` with an elementwise mask."""
    m = np.broadcast_to(mask[..., None], target.shape).astype(np.float64)
    return float(np.sum(np.abs(inputs - target) * m) / (np.sum(m) + 1e-9))


def graph_wavenet_masked_mae(labels, preds, mask):
    """nnzhan/Graph-WaveNet, ``util.py``, ``masked_mae``, with its mask taken from the mask:
    ``mask /= mean(mask)``, NaN -> 0, ``loss * mask``, NaN -> 0, ``mean(loss)``. The
    ``where(isnan)`` after the product hides NaN * 0 (and 0 / 0 when nothing is valid)."""
    m = np.broadcast_to(mask[..., None], labels.shape).astype(np.float64)
    m = m / np.mean(m)
    m = np.where(np.isnan(m), 0.0, m)
    loss = np.abs(preds - labels) * m
    loss = np.where(np.isnan(loss), 0.0, loss)
    return float(np.mean(loss))


class Case(NamedTuple):
    name: str
    candidate: Any
    like: Any
    options: dict[str, Any]
    verdict: str  # "passes" or the first failing property
    finding: str


CASES = [
    Case(
        "d2l MaskedSoftmaxCELoss",
        d2l_masked_softmax_ce,
        SPARSE,
        {"from_logits": True, "bounds": Bounds(pad_label=0)},
        "padding amount",
        "denominator num_steps (padding counted)",
    ),
    Case(
        "d2l MaskedSoftmaxCELoss (as element_mean)",
        d2l_masked_softmax_ce,
        SPARSE,
        {"from_logits": True, "bounds": Bounds(pad_label=0), "reduction": "element_mean"},
        "padding content",
        "NaN * 0 leaks through loss * mask",
    ),
    Case(
        "AllenNLP sequence_cross_entropy_with_logits",
        allennlp_sequence_ce,
        SPARSE,
        {"from_logits": True, "bounds": Bounds(pad_label=0), "reduction": "sequence_mean"},
        "padding content",
        "NaN * 0 leaks through the weights",
    ),
    Case(
        "Keras 2.2 weighted_masked_objective",
        keras22_weighted_masked_objective,
        maskloss.mse,
        {},
        "padding content",
        "NaN * 0 leaks through score_array *= mask",
    ),
    Case(
        "Keras 2.2.5 weighted_masked_objective (+ epsilon)",
        keras225_weighted_masked_objective,
        maskloss.mse,
        {},
        "agreement",
        "a tiny constant offset: K.epsilon() in the denominator",
    ),
    Case(
        "HF ForCausalLMLoss, Trainer's count",
        hf_causal_lm_trainer_count,
        SPARSE,
        {"from_logits": True, "ignore_index": -100, "shift": 1, "reduction": "token_mean"},
        "agreement",
        "num_items_in_batch counts unshifted labels (transformers before PR #46204)",
    ),
    Case(
        "HF ForCausalLMLoss, shifted count",
        hf_causal_lm_shifted_count,
        SPARSE,
        {"from_logits": True, "ignore_index": -100, "shift": 1},
        "passes",
        "correct",
    ),
    Case(
        "HF LabelSmoother",
        hf_label_smoother,
        SPARSE,
        {"from_logits": True, "ignore_index": -100, "label_smoothing": 0.1},
        "passes",
        "correct: masked_fill selects, the eps/C rule",
    ),
    Case(
        "verl value loss, token-mean",
        verl_value_loss_token_mean,
        maskloss.mse,
        {"scale": 0.5, "bounds": Bounds(min_features=1, max_features=1)},
        "agreement",
        "a tiny constant offset: mask.sum() + 1e-8 (then, with rtol=1e-7: NaN * 0 leaks)",
    ),
    Case(
        "verl value loss, seq-mean-token-sum",
        verl_value_loss_seq_mean_token_sum,
        maskloss.mse,
        {"scale": 0.5, "reduction": "batch_mean", "bounds": Bounds(min_features=1, max_features=1)},
        "padding content",
        "NaN * 0 leaks through loss * mask",
    ),
    Case(
        "fairseq label_smoothed_nll_loss",
        fairseq_label_smoothed_nll,
        SPARSE,
        {
            "from_logits": True,
            "ignore_index": 1,
            "reduction": "sum",
            "label_smoothing": 0.1,
            "smoothing_rule": "others",
        },
        "passes",
        "correct: the eps/(C-1) rule (smoothing_rule='others'), a sum",
    ),
    Case(
        "OpenNMT-py LabelSmoothingLoss",
        opennmt_label_smoothing_loss,
        SPARSE,
        {
            "from_logits": True,
            "ignore_index": 1,
            "reduction": "sum",
            "label_smoothing": 0.1,
            "smoothing_rule": "others_except_pad",
            "smoothing_form": "kl",
            "bounds": Bounds(min_features=3),
        },
        "padding content",
        "the rule and form agree (eps/(C-2) without the pad class, KL); kl_div's 0 * output leaks NaN",
    ),
    Case(
        "TF transformer tutorial masked_loss (float32)",
        tf_tutorial_masked_loss,
        SPARSE,
        {"from_logits": True, "ignore_index": 0},
        "padding content",
        "NaN * 0 leaks through loss *= mask",
    ),
    Case(
        "PyTorch chatbot tutorial maskNLLLoss",
        chatbot_mask_nll_objective,
        SPARSE,
        {"from_logits": True, "bounds": Bounds(pad_label=0)},
        "padding amount",
        "a sum of per-step means: a fully padded step is NaN, not T times the token mean",
    ),
    Case(
        "SAITS masked_mae_cal",
        saits_masked_mae_cal,
        maskloss.mae,
        {},
        "agreement",
        "a tiny constant offset: sum(mask) + 1e-9 (then, with rtol=1e-8: NaN * 0 leaks)",
    ),
    Case(
        "Graph WaveNet masked_mae",
        graph_wavenet_masked_mae,
        maskloss.mae,
        {"bounds": Bounds(all_masked=0.0)},
        "passes",
        "correct on padded batches: where(isnan) after the product; 0 when nothing is valid",
    ),
]

#: Repository, file and function each candidate re-creates (the gallery's source column).
SOURCES = {
    d2l_masked_softmax_ce: "d2l-ai/d2l-en `d2l/torch.py` `MaskedSoftmaxCELoss`",
    allennlp_sequence_ce: "allenai/allennlp `allennlp/nn/util.py` `sequence_cross_entropy_with_logits`",
    keras22_weighted_masked_objective: "keras-team/keras 2.2.4 `engine/training_utils.py` `weighted_masked_objective`",
    keras225_weighted_masked_objective: "keras-team/keras 2.2.5 `engine/training_utils.py` `weighted_masked_objective`",
    hf_causal_lm_trainer_count: "huggingface/transformers `loss/loss_utils.py` `ForCausalLMLoss` + `trainer.py` count",
    hf_causal_lm_shifted_count: "huggingface/transformers `loss/loss_utils.py` `ForCausalLMLoss`",
    hf_label_smoother: "huggingface/transformers `trainer_pt_utils.py` `LabelSmoother`",
    verl_value_loss_token_mean: "volcengine/verl `trainer/ppo/core_algos.py` `compute_value_loss`, `agg_loss`",
    verl_value_loss_seq_mean_token_sum: "volcengine/verl `trainer/ppo/core_algos.py` `compute_value_loss`, `agg_loss`",
    fairseq_label_smoothed_nll: (
        "facebookresearch/fairseq `criterions/label_smoothed_cross_entropy.py` `label_smoothed_nll_loss`"
    ),
    opennmt_label_smoothing_loss: "OpenNMT/OpenNMT-py `onmt/utils/loss.py` `LabelSmoothingLoss`",
    tf_tutorial_masked_loss: "tensorflow/text `docs/tutorials/transformer.ipynb` `masked_loss`",
    chatbot_mask_nll_objective: "pytorch/tutorials `beginner_source/chatbot_tutorial.py` `maskNLLLoss`",
    saits_masked_mae_cal: "WenjieDu/SAITS `modeling/utils.py` `masked_mae_cal`",
    graph_wavenet_masked_mae: "nnzhan/Graph-WaveNet `util.py` `masked_mae`",
}
