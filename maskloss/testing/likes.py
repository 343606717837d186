r"""``check_loss(candidate, like=<a framework mirror>)``: how each mirror of :mod:`maskloss.conventions` is called.

Each entry (:class:`Like`) says how check_loss calls the mirror, and the candidate the
same way, on a generated padded batch (argument order, how the mask is expressed:
``ignore_index`` in the labels, a ``mask=``, step ``weights`` or ``where``), which
options it takes, and the denominator :math:`D` of its value: every mirror's value is an
additive numerator over the sequences divided by :math:`D` (``1`` for a sum, ``None``
for per-step or per-sequence outputs, which concatenate), so micro-batches recombine as
:math:`\sum_p (D_p / D)\,\text{value}_p` and split and recombine runs for every mirror.
:data:`NOT_LOSSES` lists the public functions of the conventions that are not
``(targets, predictions)`` losses and what to use instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskloss import pointwise
from maskloss.strategies import PaddedBatch

__all__ = ["NOT_LOSSES", "Like", "like_of"]

Call = Callable[[Callable[..., Any], PaddedBatch, dict[str, Any]], Any]
Denominator = Callable[[PaddedBatch, dict[str, Any]], "float | None"]


@dataclass(frozen=True)
class Like:
    """How check_loss runs one mirror (and the candidate, called the same way)."""

    name: str
    kind: str
    call: Call
    denominator: Denominator
    defaults: dict[str, Any] = field(default_factory=dict)  # options and their defaults
    required: tuple[str, ...] = ()
    label_fill: str | None = None  # the option whose value padded labels hold (ignore_index)
    logits: Callable[[dict[str, Any]], bool] = lambda o: True
    takes_weights: bool = False
    reads_padding: str = ""  # why the convention's value depends on padded content ("": never)
    not_applicable: Callable[[dict[str, Any]], dict[str, str]] = lambda o: {}
    min_features: int | None = None
    how: str = ""  # the call, for messages and docs


# ---- pieces of calls ----------------------------------------------------------------------------


def _flat(b: PaddedBatch) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    c = b.y_pred.shape[-1]
    return b.y_pred.reshape(-1, c), b.y_true.reshape(-1)


def _rows_back(value: Any, b: PaddedBatch) -> Any:
    """A per-row output of flattened inputs back to the ``(B, T)`` steps."""
    arr = np.asarray(value)
    return arr.reshape(b.mask.shape) if arr.ndim and arr.size == b.mask.size else value


def _log_softmax(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    with np.errstate(all="ignore"):
        return pointwise.log_softmax(np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])).reshape(x.shape)


def _step_weights(b: PaddedBatch) -> np.ndarray[Any, Any]:
    """The mask as float step weights, times the sample weight where one is drawn (selected)."""
    w = np.ones(b.mask.shape) if b.sample_weight is None else np.broadcast_to(
        b.sample_weight if b.sample_weight.ndim == 2 else b.sample_weight[:, None], b.mask.shape
    )
    with np.errstate(invalid="ignore"):
        return np.where(b.mask, w, 0.0)


def _scores(b: PaddedBatch) -> np.ndarray[Any, Any]:
    """Per-step mean squared error (Keras's ``mse``): the scores the score-taking mirrors reduce."""
    with np.errstate(all="ignore"):
        scores: np.ndarray[Any, Any] = np.mean(
            np.square(b.y_pred.astype(np.float64) - b.y_true.astype(np.float64)), axis=-1
        )
    return scores


def _count(valid: np.ndarray[Any, Any]) -> float:
    return float(np.count_nonzero(valid))


def _nonempty(valid: np.ndarray[Any, Any]) -> float:
    return float(np.count_nonzero(valid.any(axis=1)))


def _labels_valid(b: PaddedBatch, ignore: int | None) -> np.ndarray[Any, Any]:
    return b.mask if ignore is None else b.mask & (b.y_true != ignore)


# ---- torch --------------------------------------------------------------------------------------


def _torch_ce(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any], log_probs: bool = False) -> Any:
    x, t = _flat(b)
    return _rows_back(fn(_log_softmax(x) if log_probs else x, t, **o), b)


def _torch_ce_den(b: PaddedBatch, o: dict[str, Any]) -> float | None:
    red = o.get("reduction", "mean")
    if red == "none":
        return None
    if red == "sum":
        return 1.0
    valid = _labels_valid(b, o.get("ignore_index", -100))
    cw = o.get("weight")
    if cw is None:
        return _count(valid)
    return float(np.sum(np.where(valid, np.asarray(cw, dtype=np.float64)[np.where(valid, b.y_true, 0)], 0.0)))


def _torch_weighted(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any]) -> Any:
    w = np.broadcast_to(_step_weights(b)[..., None], b.y_pred.shape)
    return fn(b.y_pred, b.y_true.astype(np.float64), weight=np.ascontiguousarray(w), **o)


def _torch_elementwise_den(weighted_mean: bool) -> Denominator:
    def den(b: PaddedBatch, o: dict[str, Any]) -> float | None:
        red = o.get("reduction", "mean")
        if red == "none":
            return None
        if red == "sum":
            return 1.0
        if weighted_mean:  # mse_loss / l1_loss with weight: sum(w l) / sum(w)
            return float(_step_weights(b).sum() * b.y_pred.shape[-1])
        return float(b.y_pred.size)  # bce: the mean over every element, padding included

    return den


_TORCH_MULTIPLIES = (
    "torch multiplies the loss by weight=mask, so NaN * 0 at padded steps is NaN in torch too: "
    "the candidate is held to torch's value on the junk batch"
)


# ---- Keras --------------------------------------------------------------------------------------


def _keras(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any]) -> Any:
    w = b.sample_weight
    if w is not None and w.ndim == 1:
        w = w[:, None]  # one weight per sequence: Keras aligns weights to the right
    return fn(b.y_true, b.y_pred, mask=b.mask, sample_weight=w, **o)


def _keras_den(tf_keras: bool) -> Denominator:
    def den(b: PaddedBatch, o: dict[str, Any]) -> float | None:
        red = o.get("reduction", "sum_over_batch_size")
        if red in ("none", None):
            return None
        if red == "sum":
            return 1.0
        valid = _labels_valid(b, o.get("ignore_class")) if b.kind == "sparse" else b.mask
        if tf_keras:
            from maskloss.conventions.tf_keras import VALID_STEP_MEAN_SINCE, parse_version

            if parse_version(o.get("version")) < VALID_STEP_MEAN_SINCE:
                return float(valid.size)
            return _count(valid)
        if red == "mean_with_sample_weight":
            w = b.sample_weight
            if w is None:
                return _count(valid)
            w2 = np.broadcast_to(w if w.ndim == 2 else w[:, None], valid.shape)
            with np.errstate(invalid="ignore"):
                return float(np.where(valid, w2, 0.0).sum())
        return _count(valid)

    return den


# ---- the others ---------------------------------------------------------------------------------


def _allennlp(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any]) -> Any:
    return fn(b.y_pred, b.y_true, _step_weights(b), **o)


def _allennlp_den(b: PaddedBatch, o: dict[str, Any]) -> float | None:
    average = o.get("average", "batch")
    w = _step_weights(b)
    if average is None:
        return None
    if average == "token":
        return float(w.sum()) + 1e-13  # AllenNLP: weights.sum() + tiny
    return float((w.sum(axis=1) > 0).sum()) + 1e-13  # num_non_empty_sequences + tiny


def _fairseq(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any]) -> Any:
    x, t = _flat(b)
    loss = fn(_log_softmax(x), t, **o)[0]  # (loss, nll_loss): the loss
    return _rows_back(np.asarray(loss)[..., 0] if np.ndim(loss) == 2 else loss, b)


def _fairseq_den(b: PaddedBatch, o: dict[str, Any]) -> float | None:
    return 1.0 if o.get("reduce", True) else None


def _t5x(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any]) -> Any:
    return fn(b.y_pred, b.y_true, _step_weights(b), **o)[0]  # (loss, z_loss, weight_sum): the loss


def _tfa(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any]) -> Any:
    return fn(b.y_pred, b.y_true, _step_weights(b), **o)


def _tfa_flags(o: dict[str, Any]) -> tuple[bool, bool, bool, bool]:
    return (
        bool(o.get("average_across_timesteps", True)),
        bool(o.get("average_across_batch", True)),
        bool(o.get("sum_over_timesteps", False)),
        bool(o.get("sum_over_batch", False)),
    )


def _tfa_den(b: PaddedBatch, o: dict[str, Any]) -> float | None:
    avg_t, avg_b, sum_t, sum_b = _tfa_flags(o)
    w = _step_weights(b)
    if avg_t and avg_b:
        return float(w.sum())
    if sum_t and sum_b:
        return float(np.count_nonzero(w))
    return None  # per-sequence (B,) or per-step (B, T): concatenated; (T,) has no split


def _tfa_not_applicable(o: dict[str, Any]) -> dict[str, str]:
    avg_t, avg_b, sum_t, sum_b = _tfa_flags(o)
    if (avg_b or sum_b) and not (avg_t or sum_t):
        return {
            "split and recombine": (
                "the value is one ratio per time step across the batch (shape (T,)): two micro-batches "
                "recombine only with per-step counts, not with one weight per micro-batch"
            )
        }
    return {}


def _optax(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any]) -> Any:
    return fn(b.y_pred, b.y_true, where=b.mask, **o)


def _optax_poly(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any]) -> Any:
    return fn(b.y_pred, b.y_true, where=b.mask[..., None], **o)  # poly_loss does not expand a row mask


def _hf(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any]) -> Any:
    return fn(b.y_pred, b.y_true, b.y_pred.shape[-1], **o)


def _hf_den(b: PaddedBatch, o: dict[str, Any]) -> float | None:
    if o.get("num_items_in_batch") is not None:
        return 1.0
    return _count(b.y_true[:, 1:] != o.get("ignore_index", -100))


def _keras2(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any]) -> Any:
    return fn(_scores(b), b.mask, b.sample_weight, **o)


def _keras2_den(b: PaddedBatch, o: dict[str, Any]) -> float | None:
    # value = (sum L m w / N) / ((sum m / N + eps) * nnz(w) / K)
    den = _count(b.mask) + o.get("epsilon", 0.0) * b.mask.size
    w = b.sample_weight
    if w is not None:
        den *= np.count_nonzero(w) / w.size
    return float(den)


def _verl(fn: Callable[..., Any], b: PaddedBatch, o: dict[str, Any]) -> Any:
    return fn(_scores(b), b.mask, **o)


def _verl_den(b: PaddedBatch, o: dict[str, Any]) -> float | None:
    mode, old = o["loss_agg_mode"], o.get("version", "0.9") == "0.4"
    if mode == "token-sum":
        return 1.0
    if mode == "token-mean":
        return _count(b.mask) + (1e-8 if old else 0.0)
    sequences = float(b.mask.shape[0]) if old else _nonempty(b.mask)
    if mode == "seq-mean-token-sum-norm":
        return float(b.mask.shape[1]) if old else sequences * b.mask.shape[1]
    return sequences


# ---- the registry -------------------------------------------------------------------------------


def _registry() -> dict[Callable[..., Any], Like]:
    from maskloss.conventions import allennlp, fairseq, hf, keras2, keras3, optax, t5x, tf_keras, tfa, verl
    from maskloss.conventions import torch as torch_conv

    table: dict[Callable[..., Any], Like] = {}
    ce_opts = {"weight": None, "ignore_index": -100, "reduction": "mean", "label_smoothing": 0.0}
    table[torch_conv.cross_entropy] = Like(
        "torch.cross_entropy", "sparse", _torch_ce, _torch_ce_den, ce_opts, label_fill="ignore_index",
        how="fn(logits.reshape(-1, C), labels.reshape(-1), **options); padded labels hold ignore_index",
    )
    nll_opts = {k: v for k, v in ce_opts.items() if k != "label_smoothing"}
    table[torch_conv.nll_loss] = Like(
        "torch.nll_loss", "sparse", lambda f, b, o: _torch_ce(f, b, o, log_probs=True), _torch_ce_den, nll_opts,
        label_fill="ignore_index",
        how="fn(log_softmax(logits).reshape(-1, C), labels.reshape(-1), **options); padded labels hold ignore_index",
    )
    for fn, kind, weighted in (
        (torch_conv.mse_loss, "regression", True),
        (torch_conv.l1_loss, "regression", True),
        (torch_conv.binary_cross_entropy_with_logits, "binary", False),
    ):
        table[fn] = Like(
            f"torch.{fn.__name__}", kind, _torch_weighted, _torch_elementwise_den(weighted), {"reduction": "mean"},
            takes_weights=True, reads_padding=_TORCH_MULTIPLIES,
            how="fn(y_pred, y_true, weight=mask (times sample_weight) broadcast to y_pred, **options)",
        )
    for module, tf in ((keras3, False), (tf_keras, True)):
        extra = {"version": None} if tf else {}
        red = {"reduction": "sum_over_batch_size", **extra}
        prefix = "tf_keras" if tf else "keras3"
        how = "fn(y_true, y_pred, mask=mask, sample_weight=w (B, 1) or (B, T), **options)"
        smooth = {"from_logits": False, "label_smoothing": 0.0, **red}
        sparse = {"from_logits": False, "ignore_class": None, **red}
        for fn, kind, opts, logits in (
            (module.mean_squared_error, "regression", red, False),
            (module.mean_absolute_error, "regression", red, False),
            (module.binary_crossentropy, "binary", smooth, None),
            (module.categorical_crossentropy, "dense", smooth, None),
            (module.sparse_categorical_crossentropy, "sparse", sparse, None),
        ):
            table[fn] = Like(
                f"{prefix}.{fn.__name__}", kind, _keras, _keras_den(tf), opts,
                logits=(lambda o: bool(o.get("from_logits", False))) if logits is None else (lambda o: False),
                takes_weights=True, how=how,
            )
    table[allennlp.sequence_cross_entropy_with_logits] = Like(
        "allennlp.sequence_cross_entropy_with_logits", "sparse", _allennlp, _allennlp_den,
        {"average": "batch", "label_smoothing": None, "gamma": None, "alpha": None}, takes_weights=True,
        how="fn(logits, targets, weights=mask (times sample_weight), **options)",
    )
    table[fairseq.label_smoothed_nll_loss] = Like(
        "fairseq.label_smoothed_nll_loss", "sparse", _fairseq, _fairseq_den,
        {"epsilon": None, "ignore_index": 1, "reduce": True, "version": "0.12"}, required=("epsilon",),
        label_fill="ignore_index", min_features=3,
        how="fn(log_softmax(logits).reshape(-1, C), target.reshape(-1), **options)[0]; padded targets hold "
        "ignore_index (fairseq's padding_idx, default 1)",
    )
    table[t5x.compute_weighted_cross_entropy] = Like(
        "t5x.compute_weighted_cross_entropy", "sparse", _t5x, lambda b, o: 1.0,
        {"label_smoothing": 0.0, "z_loss": 0.0, "loss_normalizing_factor": None}, takes_weights=True,
        how="fn(logits, targets, weights=mask (times sample_weight), **options)[0] (a sum, over the factor)",
    )
    table[tfa.sequence_loss] = Like(
        "tfa.sequence_loss", "sparse", _tfa, _tfa_den,
        {"average_across_timesteps": True, "average_across_batch": True, "sum_over_timesteps": False,
         "sum_over_batch": False}, takes_weights=True, not_applicable=_tfa_not_applicable,
        how="fn(logits, targets, weights=mask (times sample_weight), **options)",
    )
    optax_losses: tuple[tuple[Callable[..., Any], str], ...] = (
        (optax.softmax_cross_entropy_with_integer_labels, "sparse"),
        (optax.softmax_cross_entropy, "dense"),
        (optax.poly_loss_cross_entropy, "dense"),
    )
    for ofn, kind in optax_losses:
        optax_opts: dict[str, Any] = {"epsilon": 2.0} if ofn is optax.poly_loss_cross_entropy else {}
        table[ofn] = Like(
            f"optax.{ofn.__name__}", kind, _optax_poly if optax_opts else _optax, lambda b, o: None, optax_opts,
            how="fn(logits, labels, where=mask, **options): one loss per step, 0 where masked"
            + (" (where=mask[..., None]: poly_loss does not expand a row mask)" if optax_opts else ""),
        )
    table[hf.for_causal_lm_loss] = Like(
        "hf.for_causal_lm_loss", "sparse", _hf, _hf_den, {"ignore_index": -100, "num_items_in_batch": None},
        label_fill="ignore_index",
        reads_padding=(
            "the causal shift: with left padding the prediction at a padded step scores the first valid label"
        ),
        how="fn(logits, labels, vocab_size=C, **options); unshifted labels, ignore_index at padding "
        "(the mirror shifts)",
    )
    table[keras2.masked_objective_value] = Like(
        "keras2.masked_objective_value", "regression", _keras2, _keras2_den, {"epsilon": 0.0}, takes_weights=True,
        reads_padding="Keras 2 counts the weights at padded steps in nnz(w)",
        how="fn(scores, mask, weights, **options), scores = the per-step mean squared error (B, T)",
    )
    table[keras2.keras23_objective] = Like(
        "keras2.keras23_objective", "regression", _keras2, lambda b, o: float(b.mask.size), {}, takes_weights=True,
        how="fn(scores, mask, weights), scores = the per-step mean squared error (B, T)",
    )
    table[verl.agg_loss] = Like(
        "verl.agg_loss", "regression", _verl, _verl_den, {"loss_agg_mode": None, "version": "0.9"},
        required=("loss_agg_mode",),
        reads_padding="verl multiplies the losses by the mask in its sequence modes (NaN * 0 is NaN in verl too)",
        how="fn(loss_mat, loss_mask, **options), loss_mat = the per-step mean squared error (B, T)",
    )
    return table


_TABLE: dict[Callable[..., Any], Like] | None = None


def _not_losses() -> dict[Callable[..., Any], str]:
    from maskloss.conventions import allennlp, fairseq, keras2, optax, t5x, tf_keras, tfa, trl, verl
    from maskloss.conventions import torch as torch_conv

    aggregation = (
        "a policy loss of log-probabilities and advantages, not a (targets, predictions) loss; check the "
        "aggregation of its per-token losses with maskloss.testing.check_aggregation"
    )
    helper = "a helper of the convention, not a loss"
    return {
        trl.grpo_loss: aggregation,
        trl.dpo_loss: aggregation,
        verl.compute_policy_loss: aggregation,
        verl.kl_penalty: "a per-token KL estimate, not a masked loss",
        fairseq.sample_size: helper,
        fairseq.update_loss: helper,
        t5x.get_loss_normalizing_factor_and_weights: helper,
        t5x.convert_special_loss_normalizing_factor_to_enum: helper,
        allennlp.tiny_value_of_dtype: helper,
        tf_keras.parse_version: helper,
        tfa.SequenceLoss: "the Keras class; pass its function, maskloss.conventions.tfa.sequence_loss",
        keras2.weighted_masked_objective: (
            "a wrapper factory; pass maskloss.conventions.keras2.masked_objective_value (which takes the scores)"
        ),
        torch_conv.binary_cross_entropy: (
            "torch raises on the junk probabilities at padded steps (NaN is not in [0, 1]); use "
            "binary_cross_entropy_with_logits"
        ),
        optax.sigmoid_binary_cross_entropy: "it takes no mask (no where=): not a masked loss",
        optax.safe_softmax_cross_entropy: "it takes no mask (no where=): not a masked loss",
    }


def like_of(fn: Callable[..., Any]) -> Like | None:
    """The registry entry of a mirror, None for anything else; ValueError for a mirror that is no loss."""
    global _TABLE
    module = getattr(fn, "__module__", "") or ""
    if not module.startswith("maskloss.conventions."):
        return None
    if _TABLE is None:
        _TABLE = _registry()
    if fn in _TABLE:
        return _TABLE[fn]
    why = _not_losses().get(fn, "no entry in maskloss.testing.likes")
    raise ValueError(
        f"like={module.rsplit('.', 1)[-1]}.{getattr(fn, '__name__', fn)} cannot be checked against: {why}"
    )


def registered() -> list[Like]:
    """Every registered mirror (for docs and tests)."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _registry()
    return list(_TABLE.values())


NOT_LOSSES = _not_losses
