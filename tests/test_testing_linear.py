"""check_loss(like=maskloss.linear_cross_entropy): passes correct torch LM-head losses, catches the planted bugs.

The planted bugs are the fused-kernel bugs of issue 21, written small in torch:
Liger#968/#680/#1298 (reduction="none" backward scaled by grad_output[0]; zero gradients
when ignore_index occurs), Liger#243 (label_smoothing dropped on the fused path),
Liger#830 (weight gradient accumulated in bfloat16 chunk by chunk), NeMo Automodel#3804
(chunked "mean" summing the chunks' means: num_chunks x the loss) and CCE#52 (a bias
bug giving negative losses: the bias in the target logit but not in the log-sum-exp).
"""

from __future__ import annotations

import pytest

import maskloss
from maskloss.testing import Bounds, LossCheckError, check_loss, torch_adapter, torch_linear_grad

torch = pytest.importorskip("torch")
F = torch.nn.functional
IGNORE = -100
FAST = {"max_examples": 15, "bounds": Bounds(max_batch=3, max_steps=5)}


def _logits(h, weight, bias):
    z = h @ weight.T
    return z if bias is None else z + bias


def naive(hidden, weight, labels, mask, bias=None, *, label_smoothing=0.0, reduction="mean", chunk_size=None):
    """The correct naive LM head: select the valid rows, then F.cross_entropy(h @ W.T + b)."""
    valid = mask & (labels != IGNORE)
    h, y = hidden[valid], labels[valid]
    if chunk_size is None or reduction == "none":
        per = F.cross_entropy(_logits(h, weight, bias), y, label_smoothing=label_smoothing, reduction="none")
    else:  # chunked over the valid rows, summed, divided once: chunking changes nothing
        per = torch.cat([F.cross_entropy(_logits(h[i:i + chunk_size], weight, bias), y[i:i + chunk_size],
                                         label_smoothing=label_smoothing, reduction="none")
                         for i in range(0, h.shape[0], chunk_size)] or [h.new_zeros(0)])
    if reduction == "none":
        return torch.zeros(mask.shape, dtype=per.dtype).masked_scatter(valid, per)
    return per.sum() if reduction == "sum" else per.sum() / valid.sum()


def _check(fn, grad=True, **kwargs):
    options = {"ignore_index": IGNORE, **FAST, **kwargs}
    check_loss(fn, maskloss.linear_cross_entropy, adapter=torch_adapter,
               grad=torch_linear_grad(fn) if grad else None, **options)


# --- correct implementations pass ----------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
def test_the_naive_torch_head_passes_with_its_gradients(bias):
    _check(naive, bias=bias)


def test_label_smoothing_and_sum_pass():
    def smoothed_sum(hidden, weight, labels, mask, bias=None):
        return naive(hidden, weight, labels, mask, bias, label_smoothing=0.1, reduction="sum")

    _check(smoothed_sum, bias=True, label_smoothing=0.1, reduction="sum")


def test_reduction_none_vjp_passes():
    def per_token(hidden, weight, labels, mask, bias=None):
        return naive(hidden, weight, labels, mask, bias, reduction="none")

    _check(per_token, bias=True, reduction="none")


def test_a_correct_chunked_head_passes_chunk_invariance():
    _check(naive, bias=True, chunk_arg="chunk_size", chunk_sizes=(1, 2, 3))


def test_float32_against_the_table_and_bfloat16_against_the_naive_reference():
    _check(naive, dtype="float32", bias=True)
    bf16 = torch_adapter(naive, dtype=torch.bfloat16)
    check_loss(lambda *a, **k: naive(*[x.float() if x.is_floating_point() else x for x in a],
                                     **{n: v.float() for n, v in k.items()}),
               maskloss.linear_cross_entropy, adapter=lambda f: torch_adapter(f, dtype=torch.bfloat16),
               dtype="bfloat16", reference_lowp=bf16, ignore_index=IGNORE, **FAST)


# --- planted bugs are caught -----------------------------------------------------------------


def _caught(fn, prop_words, grad=True, **kwargs):
    with pytest.raises(LossCheckError) as exc:
        _check(fn, grad=grad, **kwargs)
    assert any(word in str(exc.value) for word in prop_words), str(exc.value)
    return exc.value


class _GradInForward(torch.autograd.Function):
    """Liger's pattern: gradients of sum(values) computed in the forward pass, then scaled in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, mask, bug):
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True) for x in (hidden, weight)]
            b = None if bias is None else bias.detach().requires_grad_(True)
            values = naive(leaves[0], leaves[1], labels, mask, b, reduction="none")
            grads = torch.autograd.grad(values.sum(), leaves + ([b] if b is not None else []))
        ctx.grads, ctx.bug, ctx.ignored = grads, bug, bool((labels == IGNORE).any())
        return values.detach()

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.bug == "grad_output[0]":
            scale = grad_output.reshape(-1)[0]  # one scalar for every token
            grads = [g * scale for g in ctx.grads]
        else:  # "ignore zeroes": a kernel that returns early on an ignored row zeroes everything
            grads = [torch.zeros_like(g) if ctx.ignored else g for g in ctx.grads]
        return grads[0], grads[1], (grads[2] if len(grads) > 2 else None), None, None, None


def test_catches_reduction_none_backward_scaled_by_grad_output_0():
    def liger_968(hidden, weight, labels, mask, bias=None):
        return _GradInForward.apply(hidden, weight, bias, labels, mask, "grad_output[0]")

    err = _caught(liger_968, ["agreement"], bias=True, reduction="none")
    assert "d_hidden" in str(err) or "d_weight" in str(err)


def test_catches_zero_gradients_with_ignore_index():
    def liger_680(hidden, weight, labels, mask, bias=None):
        return _GradInForward.apply(hidden, weight, bias, labels, mask, "ignore zeroes").sum() / \
            (mask & (labels != IGNORE)).sum()

    _caught(liger_680, ["agreement", "padding", "batch order", "single-token"])


def test_catches_label_smoothing_not_passed_through():
    def liger_243(hidden, weight, labels, mask, bias=None, label_smoothing=0.1):
        return naive(hidden, weight, labels, mask, bias)  # the fused path forgets label_smoothing

    _caught(liger_243, ["agreement"], grad=False, label_smoothing=0.1)


def test_catches_chunked_mean_times_the_number_of_chunks():
    def nemo_3804(hidden, weight, labels, mask, bias=None, chunk_size=None):
        valid = mask & (labels != IGNORE)
        h, y = hidden[valid], labels[valid]
        step = chunk_size or max(1, h.shape[0])
        return sum(F.cross_entropy(_logits(h[i:i + step], weight, bias), y[i:i + step])
                   for i in range(0, h.shape[0], step))

    err = _caught(nemo_3804, ["chunk invariance"], grad=False, chunk_arg="chunk_size", chunk_sizes=(1, 2))
    assert err.property == "chunk invariance"


def test_catches_the_cce_bias_bug():
    def cce_52(hidden, weight, labels, mask, bias=None):
        valid = mask & (labels != IGNORE)
        h, y = hidden[valid], labels[valid]
        z = h @ weight.T
        target = z.gather(1, y[:, None])[:, 0] + bias[y]  # bias in the target logit only
        return (torch.logsumexp(z, dim=1) - target).mean()  # can be negative

    _caught(cce_52, ["agreement"], grad=False, bias=True)


class _Bf16Accumulate(torch.autograd.Function):
    """Liger#830: the weight gradient summed chunk by chunk in bfloat16 (``fixed=True`` sums in float32)."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, mask, fixed):
        valid = mask & (labels != IGNORE)
        h, y = hidden[valid].float(), labels[valid]
        w = weight.float()
        z = h @ w.T
        per = F.cross_entropy(z, y, reduction="none")
        dz = torch.softmax(z, dim=1)
        dz[torch.arange(y.shape[0]), y] -= 1.0
        dw = torch.zeros(weight.shape, dtype=torch.float32 if fixed else torch.bfloat16)
        for i in range(h.shape[0]):  # one token per chunk
            dw += (dz[i:i + 1].T @ h[i:i + 1]).to(dw.dtype)
        dh = torch.zeros(hidden.shape, dtype=torch.float32)
        dh[valid] = dz @ w
        ctx.save_for_backward(dh.to(hidden.dtype), dw.to(weight.dtype))
        return per.sum().to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        dh, dw = ctx.saved_tensors
        return dh * grad_output, dw * grad_output, None, None, None


@pytest.mark.parametrize("fixed", [True, False])
def test_catches_weight_gradient_accumulated_in_bfloat16(fixed):
    def liger_830(hidden, weight, labels, mask, bias=None):
        return _Bf16Accumulate.apply(hidden, weight, labels, mask, fixed)

    def naive_sum(hidden, weight, labels, mask, bias=None):
        return naive(hidden, weight, labels, mask, bias, reduction="sum")

    bf16 = {"adapter": lambda f: torch_adapter(f, dtype=torch.bfloat16)}
    kwargs = {"dtype": "bfloat16", "reference_lowp": naive_sum, "reference_lowp_grad": torch_linear_grad(naive_sum),
              "grad": torch_linear_grad(liger_830), "ignore_index": IGNORE, "reduction": "sum",
              "max_examples": 15, "bounds": Bounds(max_batch=4, max_steps=40), "atol": 1e-3}
    if fixed:
        check_loss(liger_830, maskloss.linear_cross_entropy, **bf16, **kwargs)
    else:
        with pytest.raises(LossCheckError, match="d_weight"):
            check_loss(liger_830, maskloss.linear_cross_entropy, **bf16, **kwargs)


def test_options_that_do_not_apply_are_refused():
    with pytest.raises(ValueError, match="shift=1"):
        check_loss(naive, maskloss.linear_cross_entropy, shift=1)
    with pytest.raises(ValueError, match="generates"):
        check_loss(naive, maskloss.linear_cross_entropy, mask=None)
