"""Vocabulary shards: merged partial sums equal the unsharded loss and torch's gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import maskloss
import maskloss.vocab_parallel as vp

CUTS = [(0, 3), (3, 4), (4, 9), (9, 11)]  # uneven shards of V = 11


def _batch(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=3.0, size=(6, 11)), rng.integers(0, 11, size=6)


def _merged(logits, labels):
    return vp.merge_vocab_partials([vp.vocab_partials(logits[:, a:b], labels, (a, b)) for a, b in CUTS])


def _loop_loss(z, y, eps, rule, zeta):
    """Per-token loss, one loop over classes: the slow oracle."""
    out = []
    for row, label in zip(z, y, strict=True):
        lse = float(np.log(sum(np.exp(v) for v in row)))
        nll = [lse - v for v in row]
        if rule == "uniform":
            smooth = sum(nll) / len(row)
        else:
            smooth = sum(n for c, n in enumerate(nll) if c != label) / (len(row) - 1)
        out.append((1 - eps) * nll[label] + eps * smooth + zeta * lse**2)
    return np.array(out)


@pytest.mark.parametrize("seed", range(3))
def test_merged_lse_and_plain_ce_match_maskloss_unsharded(seed):
    logits, labels = _batch(seed)
    got = vp.merged_cross_entropy(_merged(logits, labels))
    want = maskloss.sparse_categorical_crossentropy(labels, logits, from_logits=True, reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)


@pytest.mark.parametrize("rule", ["uniform", "others"])
@pytest.mark.parametrize("zeta", [0.0, 1e-2])
def test_smoothing_rules_and_z_loss_match_the_loop_oracle(rule, zeta):
    logits, labels = _batch(1)
    got = vp.merged_cross_entropy(_merged(logits, labels), label_smoothing=0.1, smoothing_rule=rule, z_loss=zeta)
    np.testing.assert_allclose(got, _loop_loss(logits, labels, 0.1, rule, zeta), rtol=1e-13)


def test_uniform_smoothing_matches_maskloss_sparse_ce():
    logits, labels = _batch(2)
    got = vp.merged_cross_entropy(_merged(logits, labels), label_smoothing=0.2)
    want = maskloss.sparse_categorical_crossentropy(
        labels, logits, from_logits=True, label_smoothing=0.2, reduction="none"
    )
    np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize("rule", ["uniform", "others"])
def test_shard_gradients_match_torch_autograd(rule):
    logits, labels = _batch(3)
    merged = _merged(logits, labels)
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    lse = torch.logsumexp(z, dim=1)
    target = z.gather(1, torch.tensor(labels)[:, None])[:, 0]
    total = z.sum(dim=1)
    mean = total / 11 if rule == "uniform" else (total - target) / 10
    loss = lse - 0.9 * target - 0.1 * mean + 0.01 * lse**2
    loss.sum().backward()
    assert z.grad is not None
    for a, b in CUTS:
        got = vp.vocab_shard_grad(logits[:, a:b], labels, (a, b), merged,
                                  label_smoothing=0.1, smoothing_rule=rule, z_loss=0.01)
        np.testing.assert_allclose(got, z.grad.numpy()[:, a:b], rtol=1e-12, atol=1e-15)


def test_the_local_vocabulary_size_is_the_megatron_737_bug():
    # smoothing each shard with its own size instead of V = 11 changes the loss
    logits, labels = _batch(4)
    right = vp.merged_cross_entropy(_merged(logits, labels), label_smoothing=0.1)
    parts = [vp.vocab_partials(logits[:, a:b], labels, (a, b)) for a, b in CUTS]
    local = sum(p.logit_sum / (p.vocab_range[1] - p.vocab_range[0]) for p in parts) / len(parts)
    wrong = _merged(logits, labels).lse - 0.9 * _merged(logits, labels).target_logit - 0.1 * local
    assert np.max(np.abs(wrong - right)) > 1e-3


def test_shards_that_leave_a_gap_are_named():
    logits, labels = _batch(0)
    parts = [vp.vocab_partials(logits[:, 0:3], labels, (0, 3)), vp.vocab_partials(logits[:, 4:11], labels, (4, 11))]
    with pytest.raises(ValueError, match=r"\(0, 3\) and \(4, 11\) leave a gap"):
        vp.merge_vocab_partials(parts)
    with pytest.raises(ValueError, match=r"logits must have shape \(N, 2\)"):
        vp.vocab_partials(logits[:, 0:3], labels, (0, 2))


@pytest.mark.parametrize("seed", range(3))
def test_token_log_probs_from_the_merged_partials_match_maskloss_and_torch(seed):
    # the post-training log-probs, log p(y) = z_y - lse, from per-shard partial sums (target logit held by
    # one shard, lse merged) against maskloss.token_logprobs on the whole vocabulary and torch's log_softmax
    logits, labels = _batch(seed)
    merged = _merged(logits, labels)
    got = merged.target_logit - merged.lse
    want = maskloss.token_logprobs(labels[None, :], logits[None, :, :])[0]
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)
    ref = torch.tensor(logits).log_softmax(-1).gather(1, torch.tensor(labels)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("rule", ["uniform", "others"])
@pytest.mark.parametrize("zeta", [0.0, 1e-2])
def test_shard_gradients_match_central_differences_on_every_shard(rule, zeta):
    # the second way for the gradient: central differences of the merged loss, every logit of every shard
    logits, labels = _batch(5)
    merged = _merged(logits, labels)

    def loss(z):
        return vp.merged_cross_entropy(_merged(z, labels), label_smoothing=0.1, smoothing_rule=rule, z_loss=zeta).sum()

    h = 1e-6
    for a, b in CUTS:
        got = vp.vocab_shard_grad(logits[:, a:b], labels, (a, b), merged,
                                  label_smoothing=0.1, smoothing_rule=rule, z_loss=zeta)
        fd = np.zeros_like(got)
        for i, c in np.ndindex(got.shape):
            up, down = logits.copy(), logits.copy()
            up[i, a + c] += h
            down[i, a + c] -= h
            fd[i, c] = (loss(up) - loss(down)) / (2 * h)
        np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_z_loss_matches_maskloss_sparse_ce(eps):
    # merged z-loss (zeta * lse^2) against the library's own head option on the unsharded logits
    logits, labels = _batch(6)
    got = vp.merged_cross_entropy(_merged(logits, labels), label_smoothing=eps, z_loss=1e-2)
    want = maskloss.sparse_categorical_crossentropy(labels, logits, from_logits=True, label_smoothing=eps,
                                                    z_loss=1e-2, reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-13)
