"""check_loss with like= a framework mirror (maskloss.testing.likes): each mirror passes against
itself with every property (split and recombine included), a planted bug of each family is caught,
and the recombination rules are what make split and recombine pass."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import maskloss.conventions as cv
from maskloss.testing import Bounds, LossCheckError, check_loss, likes, torch_adapter

MIRRORS = {spec.name: fn for fn, spec in likes._registry().items()}
REQUIRED = {"fairseq.label_smoothed_nll_loss": {"epsilon": 0.1}, "verl.agg_loss": {"loss_agg_mode": "token-mean"}}

# (mirror, options) pairs beyond the defaults: every reduction rule each mirror has.
VARIANTS = [
    ("torch.cross_entropy", {"ignore_index": -1, "label_smoothing": 0.2}),
    ("torch.cross_entropy", {"reduction": "sum"}),
    ("torch.cross_entropy", {"reduction": "none"}),
    ("torch.cross_entropy", {"weight": np.array([1.0, 2.0, 0.5]), "min_features": 3, "max_features": 3}),
    ("torch.nll_loss", {"reduction": "sum"}),
    ("torch.mse_loss", {"reduction": "sum"}),
    ("torch.l1_loss", {"reduction": "none"}),
    ("keras3.sparse_categorical_crossentropy", {"from_logits": True, "ignore_class": 0}),
    ("keras3.mean_squared_error", {"reduction": "mean_with_sample_weight"}),
    ("keras3.categorical_crossentropy", {"reduction": "sum", "label_smoothing": 0.1}),
    ("keras3.binary_crossentropy", {"reduction": "none"}),
    ("tf_keras.mean_absolute_error", {"version": "2.10"}),
    ("tf_keras.sparse_categorical_crossentropy", {"from_logits": True, "reduction": "sum"}),
    ("allennlp.sequence_cross_entropy_with_logits", {"average": "token", "label_smoothing": 0.1}),
    ("allennlp.sequence_cross_entropy_with_logits", {"average": None}),
    ("fairseq.label_smoothed_nll_loss", {"epsilon": 0.1, "version": "0.10.2"}),
    ("fairseq.label_smoothed_nll_loss", {"epsilon": 0.1, "reduce": False}),
    ("t5x.compute_weighted_cross_entropy", {"label_smoothing": 0.1, "z_loss": 1e-4, "loss_normalizing_factor": 7.0}),
    ("tfa.sequence_loss", {"average_across_timesteps": False, "average_across_batch": False,
                           "sum_over_timesteps": True, "sum_over_batch": True}),
    ("tfa.sequence_loss", {"average_across_batch": False}),
    ("tfa.sequence_loss", {"average_across_timesteps": False, "average_across_batch": False}),
    ("hf.for_causal_lm_loss", {"num_items_in_batch": 5.0}),
    ("keras2.masked_objective_value", {"epsilon": 1e-7}),
    ("optax.poly_loss_cross_entropy", {"epsilon": 1.0}),
    *[("verl.agg_loss", {"loss_agg_mode": m}) for m in
      ("token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")],
    *[("verl.agg_loss", {"loss_agg_mode": m, "version": "0.4"}) for m in
      ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")],
]


def _run(name, options, candidate=None, **extra):
    fn = MIRRORS[name]
    spec = likes.like_of(fn)
    opts = dict(options)
    for key in ("min_features", "max_features"):
        if key in opts:
            extra[key] = opts.pop(key)
    sizes = []

    def spy(*args, **kwargs):
        sizes.append(np.asarray(args[0]).shape[0])
        return (candidate or fn)(*args, **kwargs)

    spy.__name__ = getattr(candidate or fn, "__name__", "spy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no property may be skipped silently, nor with a warning here
        check_loss(spy, fn, max_examples=25, bounds=Bounds(weights=spec.takes_weights, **extra), **opts)
    return sizes


@pytest.mark.parametrize("name", sorted(MIRRORS))
def test_each_mirror_passes_against_itself(name):
    sizes = _run(name, REQUIRED.get(name, {}))
    assert min(sizes) < max(sizes)  # micro-batches ran: split and recombine was checked


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=[f"{n}-{o}" for n, o in VARIANTS])
def test_each_reduction_rule_recombines(name, options):
    _run(name, options)


def test_a_wrong_recombination_rule_fails_split_and_recombine():
    """Split and recombine can fail: with the token count replaced by the number of rows, the
    mirror itself no longer recombines (so the registry's counts are what make it pass)."""
    fn = cv.torch.cross_entropy
    spec = likes.like_of(fn)
    wrong = dataclasses.replace(spec, denominator=lambda b, o: float(b.mask.shape[0]))
    likes._TABLE[fn] = wrong
    try:
        with pytest.raises(LossCheckError) as info:
            check_loss(fn, fn, max_examples=50)
        assert info.value.property == "split and recombine"
    finally:
        likes._TABLE[fn] = spec


def test_tfa_per_time_step_ratios_say_split_does_not_apply():
    with pytest.warns(UserWarning, match=r"split and recombine not checked for .*tfa.sequence_loss.*per time step"):
        check_loss(cv.tfa.sequence_loss, cv.tfa.sequence_loss, average_across_timesteps=False, max_examples=10)


# ---- planted bugs, one (or more) per family ---------------------------------------------------


def _torch_mean_over_rows(input, target, **o):  # padding counted in the denominator
    o = {**o, "reduction": "sum"}
    return cv.torch.cross_entropy(input, target, **o) / target.size


def _keras_times_mask(y_true, y_pred, mask=None, sample_weight=None, **o):  # NaN * 0 leaks
    per_step = np.mean(np.square(y_pred - y_true), axis=-1) * mask
    w = 1.0 if sample_weight is None else sample_weight
    return (per_step * w).sum() / mask.sum() if mask.sum() else 0.0


def _tf_keras_old_mean(y_true, y_pred, **o):  # TF 2.10's mean over every step, not the valid ones
    return cv.tf_keras.mean_absolute_error(y_true, y_pred, **o, version="2.10")


def _allennlp_batch_over_b(logits, targets, weights, **o):  # divides by B, empty rows counted
    per_seq = cv.allennlp.sequence_cross_entropy_with_logits(logits, targets, weights, average=None)
    return per_seq.sum() / weights.shape[0]


def _fairseq_old_rule(lprobs, target, epsilon, **o):  # the <= 0.10 rule where 0.12 is asked for
    return cv.fairseq.label_smoothed_nll_loss(lprobs, target, epsilon, **{**o, "version": "0.10.2"})


def _t5x_without_entropy(logits, targets, weights, **o):  # a cross-entropy, not T5X's KL
    loss, z, s = cv.t5x.compute_weighted_cross_entropy(logits, targets, weights, **o)
    _, _, h = cv.t5x._soft_target_terms(logits.shape[-1], o.get("label_smoothing", 0.0))
    return loss + h * weights.sum(), z, s


def _tfa_avg_for_sum(logits, targets, weights, **o):  # sum_over flags read as averages
    return cv.tfa.sequence_loss(logits, targets, weights)


def _optax_no_where(logits, labels, where=None, **o):  # the mask multiplied in afterwards: NaN * 0
    return cv.optax.softmax_cross_entropy_with_integer_labels(logits, np.where(where, labels, 0)) * where


def _hf_trainer_count(logits, labels, vocab_size, **o):  # HF Trainer's count: unshifted labels
    return cv.hf.for_causal_lm_loss(logits, labels, vocab_size, num_items_in_batch=(labels != -100).sum())


def _keras2_weighted_mean(scores, mask, weights, **o):  # a weighted mean, not Keras 2's nnz rule
    w = np.ones(mask.shape[0]) if weights is None else weights
    w = np.broadcast_to(w if w.ndim == 2 else w[:, None], mask.shape)
    return np.where(mask, scores * w, 0).sum() / np.where(mask, w, 0).sum()


def _verl_mean_of_seq_means(loss_mat, loss_mask, **o):  # seq-mean-token-mean for token-mean
    return cv.verl.agg_loss(loss_mat, loss_mask, "seq-mean-token-mean")


BUGS = [
    ("torch.cross_entropy", _torch_mean_over_rows, {}, "padding amount"),
    ("keras3.mean_squared_error", _keras_times_mask, {}, "padding content"),
    ("tf_keras.mean_absolute_error", _tf_keras_old_mean, {}, "padding amount"),
    ("allennlp.sequence_cross_entropy_with_logits", _allennlp_batch_over_b, {}, "agreement"),
    ("fairseq.label_smoothed_nll_loss", _fairseq_old_rule, {"epsilon": 0.1}, "agreement"),
    ("t5x.compute_weighted_cross_entropy", _t5x_without_entropy, {"label_smoothing": 0.1}, "agreement"),
    ("tfa.sequence_loss", _tfa_avg_for_sum, {"average_across_timesteps": False, "average_across_batch": False,
                                            "sum_over_timesteps": True, "sum_over_batch": True}, "agreement"),
    ("optax.softmax_cross_entropy_with_integer_labels", _optax_no_where, {}, "padding content"),
    ("hf.for_causal_lm_loss", _hf_trainer_count, {}, "agreement"),
    # Keras 2 divides by mean(m), so this bug breaks agreement and also the padding-amount
    # comparison against the mirror; which of the two check_loss meets first depends on the
    # examples hypothesis draws, and those depend on which modules are loaded (its local constants).
    ("keras2.masked_objective_value", _keras2_weighted_mean, {}, ("agreement", "padding amount")),
    ("verl.agg_loss", _verl_mean_of_seq_means, {"loss_agg_mode": "token-mean"}, "agreement"),
]


@pytest.mark.parametrize(("name", "bug", "options", "prop"), BUGS, ids=[b[0] for b in BUGS])
def test_a_planted_bug_of_each_family_is_caught(name, bug, options, prop):
    fn = MIRRORS[name]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(LossCheckError) as info:
            check_loss(bug, fn, bounds=Bounds(weights=likes.like_of(fn).takes_weights), **options)
    assert info.value.property in ((prop,) if isinstance(prop, str) else prop), str(info.value)
    assert f"maskloss.conventions.{name}(" in str(info.value)


# ---- the real framework through a mirror ------------------------------------------------------


def test_real_torch_cross_entropy_passes_against_its_mirror():
    torch = pytest.importorskip("torch")
    f = torch_adapter(torch.nn.functional.cross_entropy)
    check_loss(f, cv.torch.cross_entropy, max_examples=40)
    check_loss(f, cv.torch.cross_entropy, label_smoothing=0.1, ignore_index=-1, max_examples=40)
    check_loss(f, cv.torch.cross_entropy, reduction="sum", max_examples=20)
    check_loss(torch_adapter(torch.nn.functional.nll_loss), cv.torch.nll_loss, max_examples=20)


def test_real_torch_mse_with_weight_leaks_as_its_mirror_says():
    """torch's mse_loss(weight=mask) multiplies: its mirror reproduces the NaN, so torch passes,
    and a selecting candidate (the masked truth) is told it differs from torch."""
    torch = pytest.importorskip("torch")
    check_loss(torch_adapter(torch.nn.functional.mse_loss), cv.torch.mse_loss, max_examples=30)

    def selecting(input, target, weight=None, reduction="mean"):
        err = np.where(weight > 0, np.square(input - target), 0.0)
        return err.sum() / weight.sum()

    with pytest.raises(LossCheckError, match="padding content"):
        check_loss(selecting, cv.torch.mse_loss, max_examples=30)


# ---- bad input ----------------------------------------------------------------------------------


def test_contradicting_options_are_named():
    ce = cv.torch.cross_entropy
    with pytest.raises(ValueError, match=r"option epsilon=0.1 does not apply to like=maskloss.conventions.torch.cross"):
        check_loss(ce, ce, epsilon=0.1)
    with pytest.raises(ValueError, match=r"needs the option epsilon="):
        check_loss(cv.fairseq.label_smoothed_nll_loss, cv.fairseq.label_smoothed_nll_loss)
    with pytest.raises(ValueError, match=r"kind='dense' contradicts"):
        check_loss(ce, ce, bounds=Bounds(kind="dense"))
    with pytest.raises(ValueError, match=r"shift=1 does not apply.*shifts the labels itself"):
        check_loss(cv.hf.for_causal_lm_loss, cv.hf.for_causal_lm_loss, shift=1)
    with pytest.raises(ValueError, match=r"weights=True does not apply to .*torch.cross_entropy"):
        check_loss(ce, ce, bounds=Bounds(weights=True))
    with pytest.raises(ValueError, match=r"grad= is not supported"):
        check_loss(ce, ce, grad=ce)
    with pytest.raises(ValueError, match=r"smoothing_rule='others' does not apply to .*a framework mirror"):
        check_loss(ce, ce, smoothing_rule="others")
    with pytest.raises(ValueError, match=r"pad_label=0 contradicts ignore_index=-100"):
        check_loss(ce, ce, bounds=Bounds(pad_label=0))


@pytest.mark.parametrize(
    ("fn", "why"),
    [
        (cv.trl.grpo_loss, "check_aggregation"),
        (cv.verl.compute_policy_loss, "check_aggregation"),
        (cv.keras2.weighted_masked_objective, "masked_objective_value"),
        (cv.optax.sigmoid_binary_cross_entropy, "no mask"),
        (cv.torch.binary_cross_entropy, "with_logits"),
        (cv.fairseq.sample_size, "not a loss"),
    ],
)
def test_a_mirror_that_is_no_loss_says_what_to_use(fn, why):
    with pytest.raises(ValueError, match=why):
        check_loss(fn, fn)
