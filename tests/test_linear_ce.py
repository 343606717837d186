"""maskloss.linear_cross_entropy against a loop oracle, the dense sparse CE and torch autograd."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maskloss
from maskloss import linear as linear_module
from maskloss.linear import linear_cross_entropy, linear_cross_entropy_value_and_grad
from tests.oracles_linear import linear_sparse

SCALAR = ["sum", "token_mean", "sequence_mean", "batch_mean", "element_mean"]
OPTIONS = [
    {},
    {"ignore_index": 2},
    {"label_smoothing": 0.2},
    {"label_smoothing": 0.1, "class_weight": [0.5, 1.0, 2.0, 0.0, 1.5, 1.0, 0.25]},
    {"z_loss": 1e-2},
    {"softcap": 1.5},
    {"temperature": 0.7},
    {"z_loss": 1e-3, "softcap": 2.0, "temperature": 1.3, "label_smoothing": 0.05},
    {"sample_weight": "steps"},
]


def _batch(seed: int = 0, B: int = 3, T: int = 5, H: int = 4, V: int = 7):
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((B, T, H))
    weight = rng.standard_normal((V, H))
    bias = rng.standard_normal(V)
    labels = rng.integers(0, V, (B, T))
    mask = rng.random((B, T)) > 0.3
    mask[0, 0] = True
    hidden[~mask] = np.nan  # never read
    labels[~mask] = 10**6  # out of range: never read
    return hidden, weight, bias, labels, mask


def _options(opts: dict, mask: np.ndarray) -> dict:
    out = dict(opts)
    if out.get("sample_weight") == "steps":
        out["sample_weight"] = np.random.default_rng(1).random(mask.shape) + 0.1
    return out


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 2 rows by 3 classes, so every test crosses token and vocabulary tiles."""
    monkeypatch.setattr(linear_module, "TOKEN_TILE", 2)
    monkeypatch.setattr(linear_module, "VOCAB_TILE", 3)


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "plain")
@pytest.mark.parametrize("tiles", ["default", "small"])
def test_value_matches_the_loop_oracle(opts, tiles, monkeypatch):
    if tiles == "small":
        monkeypatch.setattr(linear_module, "TOKEN_TILE", 2)
        monkeypatch.setattr(linear_module, "VOCAB_TILE", 3)
    hidden, weight, bias, labels, mask = _batch()
    kw = _options(opts, mask)
    expected = linear_sparse(hidden, weight, labels, mask, bias=bias, **kw)
    for reduction in SCALAR:
        got = linear_cross_entropy(hidden, weight, labels, mask, bias=bias, reduction=reduction, **kw)
        assert isinstance(got, np.float64)
        np.testing.assert_allclose(got, expected[reduction], rtol=1e-13, err_msg=reduction)
    none = linear_cross_entropy(hidden, weight, labels, mask, bias=bias, reduction="none", **kw)
    np.testing.assert_allclose(none, np.array(expected["none"]), rtol=1e-13, atol=0)


@pytest.mark.parametrize("opts", OPTIONS[:4] + OPTIONS[-1:], ids=lambda o: ",".join(o) or "plain")
def test_equals_the_dense_sparse_cross_entropy(opts, small_tiles):
    """Without head options it is sparse_categorical_crossentropy of the materialised logits."""
    hidden, weight, bias, labels, mask = _batch(2)
    kw = _options(opts, mask)
    logits = np.where(mask[..., None], hidden, 0.0) @ weight.T + bias
    for reduction in ["none", *SCALAR]:
        dense = maskloss.sparse_categorical_crossentropy(
            labels, logits, mask, from_logits=True, reduction=reduction, **kw
        )
        got = linear_cross_entropy(hidden, weight, labels, mask, bias=bias, reduction=reduction, **kw)
        np.testing.assert_allclose(got, dense, rtol=1e-13, atol=1e-15, err_msg=reduction)


def _torch_loss(torch, h, W, b, labels, mask, reduction, opts):
    """The same loss written with torch ops on the valid rows (float64), for autograd."""
    import torch.nn.functional as F

    valid = mask.copy()
    if "ignore_index" in opts:
        valid &= labels != opts["ignore_index"]
    rows = np.flatnonzero(valid.reshape(-1))
    hv = h.reshape(-1, h.shape[-1])[torch.as_tensor(rows)]
    z = hv @ W.T + b
    z = z / opts.get("temperature", 1.0)
    if opts.get("softcap") is not None:
        z = opts["softcap"] * torch.tanh(z / opts["softcap"])
    y = torch.as_tensor(labels.reshape(-1)[rows])
    cw = opts.get("class_weight")
    cw_t = None if cw is None else torch.tensor(cw, dtype=torch.float64)
    per_row = F.cross_entropy(z, y, weight=cw_t, label_smoothing=opts.get("label_smoothing", 0.0), reduction="none")
    per_row = per_row + opts.get("z_loss", 0.0) * torch.logsumexp(z, dim=1) ** 2
    sw = opts.get("sample_weight")
    w = torch.ones(len(rows), dtype=torch.float64) if sw is None else torch.as_tensor(sw.reshape(-1)[rows])
    d = w if cw_t is None else w * cw_t[y]
    n = w * per_row
    seq = torch.as_tensor(rows // mask.shape[1])
    if reduction == "sum":
        return n.sum()
    if reduction == "token_mean":
        return n.sum() / d.sum()
    if reduction == "batch_mean":
        return n.sum() / mask.shape[0]
    if reduction == "element_mean":
        return n.sum() / mask.size
    num = torch.zeros(mask.shape[0], dtype=torch.float64).index_add(0, seq, n)
    den = torch.zeros(mask.shape[0], dtype=torch.float64).index_add(0, seq, d)
    keep = den > 0
    return (num[keep] / den[keep]).mean()


@pytest.mark.framework("torch")
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "plain")
@pytest.mark.parametrize("reduction", ["token_mean", "sum", "sequence_mean"])
def test_gradients_match_torch_autograd(opts, reduction, small_tiles):
    torch = pytest.importorskip("torch")
    hidden, weight, bias, labels, mask = _batch(3)
    kw = _options(opts, mask)
    value, (dh, dw, db) = linear_cross_entropy_value_and_grad(
        hidden, weight, labels, mask, bias=bias, reduction=reduction, **kw
    )
    h = torch.tensor(np.where(mask[..., None], hidden, 0.0), requires_grad=True)
    W = torch.tensor(weight, requires_grad=True)
    b = torch.tensor(bias, requires_grad=True)
    loss = _torch_loss(torch, h, W, b, labels, mask, reduction, kw)
    loss.backward()
    np.testing.assert_allclose(value, loss.item(), rtol=1e-13)
    np.testing.assert_allclose(dh, h.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(dw, W.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(db, b.grad.numpy(), rtol=1e-11, atol=1e-14)
    assert np.all(dh[~mask] == 0)


@pytest.mark.framework("torch")
def test_vector_jacobian_product_of_reduction_none(small_tiles):
    """The backward a fused kernel gets with reduction="none": grads of sum(ct * values)."""
    torch = pytest.importorskip("torch")
    hidden, weight, bias, labels, mask = _batch(4)
    ct = np.random.default_rng(5).standard_normal(mask.shape)
    ct_masked = np.where(mask, ct, np.nan)  # the cotangent of masked steps is never read
    values, (dh, dw, db) = linear_cross_entropy_value_and_grad(
        hidden, weight, labels, mask, bias=bias, reduction="none", cotangent=ct_masked, label_smoothing=0.1
    )
    h = torch.tensor(np.where(mask[..., None], hidden, 0.0), requires_grad=True)
    W = torch.tensor(weight, requires_grad=True)
    b = torch.tensor(bias, requires_grad=True)
    sw = np.where(mask, ct, 0.0)  # sum(ct * values) is the "sum" reduction with weights ct
    loss = _torch_loss(torch, h, W, b, labels, mask, "sum", {"label_smoothing": 0.1, "sample_weight": sw})
    loss.backward()
    np.testing.assert_allclose(np.sum(np.where(mask, ct, 0.0) * values), loss.item(), rtol=1e-13)
    np.testing.assert_allclose(dh, h.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(dw, W.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(db, b.grad.numpy(), rtol=1e-11, atol=1e-14)


def test_garbage_under_the_mask_reaches_nothing():
    hidden, weight, bias, labels, mask = _batch(6)
    clean = np.where(mask[..., None], hidden, 0.0)
    labels_clean = np.where(mask, labels, 0)
    for reduction in ["none", "token_mean"]:
        a = linear_cross_entropy(hidden, weight, labels, mask, bias=bias, reduction=reduction)
        b_ = linear_cross_entropy(clean, weight, labels_clean, mask, bias=bias, reduction=reduction)
        np.testing.assert_array_equal(a, b_)
    _, (dh, dw, db) = linear_cross_entropy_value_and_grad(hidden, weight, labels, mask, bias=bias)
    assert np.all(np.isfinite(dh)) and np.all(np.isfinite(dw)) and np.all(np.isfinite(db))
    assert np.all(dh[~mask] == 0)


def test_inputs_are_not_written_and_low_precision_is_promoted():
    hidden, weight, _, labels, mask = _batch(7)
    h32 = np.where(mask[..., None], hidden, 0.0).astype(np.float32)
    w32 = weight.astype(np.float32)
    for a in (h32, w32, labels, mask):
        a.flags.writeable = False
    got = linear_cross_entropy(h32, w32, labels, mask)
    want = linear_cross_entropy(h32.astype(np.float64), w32.astype(np.float64), labels, mask)
    assert got == want  # float32 inputs computed in float64 exactly as their float64 values
    _, grads = linear_cross_entropy_value_and_grad(h32, w32, labels, mask)
    assert all(g is None or g.dtype == np.float64 for g in grads)


def test_results_do_not_depend_on_the_thread_count():
    hidden, weight, bias, labels, mask = _batch(8, B=4, T=9, H=6, V=11)
    previous = maskloss.set_num_threads(1)
    try:
        one = linear_cross_entropy_value_and_grad(hidden, weight, labels, mask, bias=bias)
        maskloss.set_num_threads(2)
        two = linear_cross_entropy_value_and_grad(hidden, weight, labels, mask, bias=bias)
    finally:
        maskloss.set_num_threads(previous)
    assert one[0] == two[0]
    for g1, g2 in zip(one[1], two[1], strict=True):
        np.testing.assert_array_equal(g1, g2)


@given(
    seed=st.integers(0, 2**16),
    extra=st.integers(0, 4),
    left=st.booleans(),
    garbage=st.sampled_from([0.0, np.nan, 1e300]),
)
@settings(deadline=None)
def test_padding_content_amount_and_side_never_change_the_loss(seed, extra, left, garbage):
    hidden, weight, bias, labels, mask = _batch(seed, B=2, T=4, H=3, V=5)
    hidden = np.where(mask[..., None], hidden, 0.0)
    base = linear_cross_entropy(hidden, weight, labels, mask, bias=bias, reduction="sum")
    base_tm = linear_cross_entropy(hidden, weight, labels, mask, bias=bias)
    pad_h = np.full((2, extra, 3), garbage)
    pad_l = np.full((2, extra), -7)
    pad_m = np.zeros((2, extra), bool)

    def parts(a, p):
        return np.concatenate([p, a] if left else [a, p], axis=1)

    h2, l2, m2 = parts(hidden, pad_h), parts(labels, pad_l), parts(mask, pad_m)
    # Per-row losses are bit-identical; the per-sequence sums may associate differently.
    rows = linear_cross_entropy(h2, weight, l2, m2, bias=bias, reduction="none")
    np.testing.assert_array_equal(rows[m2], linear_cross_entropy(hidden, weight, labels, mask, bias=bias,
                                                                 reduction="none")[mask])
    np.testing.assert_allclose(linear_cross_entropy(h2, weight, l2, m2, bias=bias, reduction="sum"), base, rtol=1e-13)
    np.testing.assert_allclose(linear_cross_entropy(h2, weight, l2, m2, bias=bias), base_tm, rtol=1e-13)


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (lambda a: {**a, "weight": a["weight"][:, :3]}, ValueError, "hidden size H"),
        (lambda a: {**a, "weight": a["weight"][0]}, ValueError, "(V, H)"),
        (lambda a: {**a, "bias": a["bias"][:3]}, ValueError, "bias must have shape (7,)"),
        (lambda a: {**a, "labels": np.full((3, 5), 7)}, ValueError, "outside [0, 7)"),
        (lambda a: {**a, "weight": np.where(np.eye(7, 4) > 0, np.inf, a["weight"])}, ValueError, "weight must be fin"),
        (lambda a: {**a, "bias": np.full(7, np.nan)}, ValueError, "bias must be finite"),
        (lambda a: {**a, "labels": a["labels"][:, :2]}, ValueError, "labels must have the shape"),
        (lambda a: {**a, "z_loss": -1.0}, ValueError, "z_loss must be a finite real number >= 0"),
        (lambda a: {**a, "softcap": 0.0}, ValueError, "softcap must be a finite real number > 0"),
        (lambda a: {**a, "temperature": float("nan")}, ValueError, "temperature must be a finite real number > 0"),
        (lambda a: {**a, "temperature": "hot"}, TypeError, "temperature must be a finite real number > 0"),
        (lambda a: {**a, "reduction": "mean"}, ValueError, "reduction must be one of"),
    ],
)
def test_bad_input_is_named(change, error, words):
    hidden, weight, bias, labels, mask = _batch()
    args = {"hidden": hidden, "weight": weight, "labels": np.where(mask, labels, 0), "mask": mask, "bias": bias}
    args = change(args)
    with pytest.raises(error) as info:
        linear_cross_entropy(**args)
    assert words in str(info.value)


def test_cotangent_goes_with_reduction_none_only():
    hidden, weight, _, labels, mask = _batch()
    with pytest.raises(ValueError, match="pass cotangent="):
        linear_cross_entropy_value_and_grad(hidden, weight, labels, mask, reduction="none")
    with pytest.raises(ValueError, match="goes with reduction='none'"):
        linear_cross_entropy_value_and_grad(hidden, weight, labels, mask, cotangent=np.ones(mask.shape))
