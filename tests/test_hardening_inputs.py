"""Issue 25 hardening: inputs NumPy cannot read, or would read wrongly, get a clear error.

Each test fails without its fix: a ``numpy.ma`` array's own mask was silently dropped by every
loss and reduction (np.asarray keeps the data under the mask), and torch tensors NumPy cannot
read (meta, sparse, nested, quantised, float8) gave torch's own errors without the argument's
name (NotImplementedError "Cannot copy out of meta tensor", "Got unsupported ScalarType").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import maskloss

B, T, C = 2, 3, 4
RNG = np.random.default_rng(25)
LOGITS = RNG.normal(size=(B, T, C))
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)
LABELS = RNG.integers(0, C, size=(B, T))
MASK = np.array([[True, True, False], [True, False, False]])
VALUES = RNG.normal(size=(B, T))
LOGP = -np.abs(VALUES)


def _masked(x: np.ndarray) -> np.ma.MaskedArray:
    hidden = np.zeros(x.shape, bool)
    hidden.flat[-1] = True
    return np.ma.array(x, mask=hidden)


# (name, call taking the one argument under test, the argument's value)
ENTRY_POINTS: list[tuple[str, Callable[[Any], Any], np.ndarray]] = [
    ("mae y_pred", lambda a: maskloss.mae(np.zeros((B, T, 1)), a, MASK), np.zeros((B, T, 1))),
    ("mse y_true", lambda a: maskloss.mse(a, np.zeros((B, T, 1)), MASK), np.zeros((B, T, 1))),
    ("sparse CE labels", lambda a: maskloss.sparse_categorical_crossentropy(a, LOGITS, MASK, from_logits=True), LABELS),
    ("sparse CE logits", lambda a: maskloss.sparse_categorical_crossentropy(LABELS, a, MASK, from_logits=True), LOGITS),
    ("sparse CE mask", lambda a: maskloss.sparse_categorical_crossentropy(LABELS, LOGITS, a, from_logits=True), MASK),
    ("sparse CE sample_weight",
     lambda a: maskloss.sparse_categorical_crossentropy(LABELS, LOGITS, MASK, from_logits=True, sample_weight=a),
     np.ones((B, T))),
    ("categorical CE", lambda a: maskloss.categorical_crossentropy(np.eye(C)[LABELS], a, MASK), PROBS),
    ("binary CE", lambda a: maskloss.binary_crossentropy(np.ones((B, T, 1)), a, MASK), np.full((B, T, 1), 0.5)),
    ("reduce values", lambda a: maskloss.reduce(a, MASK), VALUES),
    ("reduce weight", lambda a: maskloss.reduce(VALUES, MASK, sample_weight=a), np.ones((B, T))),
    ("aggregate", lambda a: maskloss.aggregate(a, MASK), VALUES),
    ("token_logprobs", lambda a: maskloss.token_logprobs(LABELS, a, MASK), LOGITS),
    ("sequence_logprobs", lambda a: maskloss.sequence_logprobs(LABELS, a, MASK), LOGITS),
    ("policy_gradient_objective weight", lambda a: maskloss.policy_gradient_objective(LABELS, LOGITS, a, MASK),
     np.ones((B, T))),
    ("kl_estimate", lambda a: maskloss.kl_estimate(a, LOGP, MASK), LOGP),
    ("clipped_surrogate", lambda a: maskloss.clipped_surrogate(a, np.ones(B), MASK), np.ones((B, T))),
    ("sequence_ratio", lambda a: maskloss.sequence_ratio(a, MASK), VALUES),
    ("dpo_loss", lambda a: maskloss.dpo_loss(a, np.zeros(B), np.zeros(B), np.zeros(B)), np.zeros(B)),
    ("masked_totals", lambda a: maskloss.masked_totals(maskloss.mae)(np.zeros((B, T, 1)), a, MASK),
     np.zeros((B, T, 1))),
    ("value_and_grad", lambda a: maskloss.value_and_grad(maskloss.mae)(np.zeros((B, T, 1)), a, MASK),
     np.zeros((B, T, 1))),
    ("lengths_from_mask", maskloss.lengths_from_mask, MASK),
    ("mask_from_lengths", lambda a: maskloss.mask_from_lengths(a, T), np.array([1, 2])),
    ("padding_side", maskloss.padding_side, MASK),
    ("GlobalCounts.from_mask", maskloss.GlobalCounts.from_mask, MASK),
    ("token_accuracy", lambda a: maskloss.token_accuracy(LABELS, a, MASK), LOGITS),
    ("entropy", lambda a: maskloss.entropy(a, MASK), LOGITS),
    ("z_loss", lambda a: maskloss.z_loss(a, MASK), LOGITS),
]


@pytest.mark.parametrize(("name", "call", "arg"), ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS])
def test_numpy_ma_mask_is_never_dropped(name: str, call: Callable[[Any], Any], arg: np.ndarray) -> None:
    plain = call(arg)  # the entry point works on the plain array
    with pytest.raises(TypeError, match=r"numpy\.ma masked array with 1 masked entries"):
        call(_masked(arg))
    # A numpy.ma array that masks nothing is its data: same result, bit for bit.
    again = call(np.ma.array(arg))
    assert np.asarray(_first(again)).tobytes() == np.asarray(_first(plain)).tobytes()


def _first(result: Any) -> Any:
    if isinstance(result, maskloss.MaskedTotals):
        return result.numerator
    if isinstance(result, maskloss.GlobalCounts):
        return result.to_array()
    return result[0] if isinstance(result, tuple) else result


torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: torch.zeros((B, T), device="meta"), "meta device"),
        (lambda: torch.zeros((B, T)).to_sparse(), "sparse_coo layout"),
        (lambda: torch.zeros((B, T)).to_sparse_csr(), "sparse_csr layout"),
        (lambda: torch.quantize_per_tensor(torch.zeros((B, T)), 0.1, 0, torch.qint8), "quantised"),
        (lambda: torch.zeros((B, T), dtype=torch.uint8).view(torch.float4_e2m1fn_x2), "Float4"),
    ],
)
def test_torch_tensors_numpy_cannot_read_name_the_argument(make: Callable[[], Any], why: str) -> None:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's beta/deprecation notes on sparse CSR and quantisation
            x = make()
    except (RuntimeError, NotImplementedError, AttributeError) as exc:
        pytest.skip(f"this torch cannot build the tensor: {exc}")
    with pytest.raises(TypeError, match=f"values is a .*{why}"):
        maskloss.reduce(x)


def test_nested_torch_tensor_is_refused() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "nested tensors are in prototype stage"
        x = torch.nested.nested_tensor([torch.ones(3, 1), torch.ones(2, 1)])
    with pytest.raises(TypeError, match=r"y_pred is a nested .*to_padded_tensor"):
        maskloss.mae(np.zeros((B, T, 1)), x)


@pytest.mark.parametrize(
    "dtype", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"]
)
def test_float8_tensors_are_widened_exactly(dtype: str) -> None:
    values = torch.tensor([[0.375, -1.5, 2.0]]).to(getattr(torch, dtype))
    got = maskloss.reduce(values, reduction="none")
    # every float8 value is a float32: the float64 result is the tensor's own values
    assert got.tolist() == values.to(torch.float64).tolist() == [[0.375, -1.5, 2.0]]
