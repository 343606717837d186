"""maskloss.strategies: eager validation, consistent draws, and what each strategy shrinks to."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis.errors import InvalidArgument

import maskloss
from maskloss import strategies as ms

# -- imports -------------------------------------------------------------------------------------

_BLOCK_HYPOTHESIS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "hypothesis" or name.startswith("hypothesis."):
            raise ImportError("No module named 'hypothesis' (blocked)")
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))


def test_import_maskloss_does_not_import_hypothesis():
    out = _run("import sys, maskloss; "
               "print('hypothesis' in sys.modules, 'maskloss.strategies' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_import_maskloss_testing_imports_no_framework():
    out = _run("import sys, maskloss.testing; "
               "print([m for m in ('torch', 'jax', 'tensorflow', 'keras') if m in sys.modules])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["maskloss.strategies", "maskloss.testing"])
def test_missing_hypothesis_gives_a_clear_import_error(module):
    out = _run(_BLOCK_HYPOTHESIS + f"""
import maskloss   # fine without hypothesis
try:
    import {module}
except ImportError as exc:
    print("ImportError:", exc)
""")
    assert out.returncode == 0, out.stderr
    assert "ImportError:" in out.stdout
    assert "pip install hypothesis" in out.stdout
    assert module in out.stdout


# -- eager validation ----------------------------------------------------------------------------

BAD_CALLS = [
    (ms.lengths, {"min_length": 5, "max_length": 2}, "min_length=5 must be <= max_length=2"),
    (ms.lengths, {"min_batch": 0}, "min_batch=0 must be >= 1"),
    (ms.lengths, {"max_length": 2.5}, "max_length=2.5 must be an int"),
    (ms.lengths, {"min_batch": True}, "min_batch=True must be an int"),
    (ms.masks, {"padding": "middle"}, "padding='middle'"),
    (ms.masks, {"padding": []}, "padding=[]"),
    (ms.masks, {"shape": (2,)}, "shape=(2,) must be a (batch, steps) tuple"),
    (ms.masks, {"shape": (2, 0)}, "shape[1]=0 must be >= 1"),
    (ms.masks, {"min_steps": 4, "max_steps": 3}, "min_steps=4 must be <= max_steps=3"),
    (ms.masks, {"allow_empty_rows": 1}, "allow_empty_rows=1 must be True or False"),
    (ms.padded_batches, {"kind": "ragged"}, "kind='ragged'"),
    (ms.padded_batches, {"kind": "dense", "min_features": 1}, "min_features=1 must be >= 2"),
    (ms.padded_batches, {"kind": "regression", "ignore_index": -100}, "applies only to kind='sparse'"),
    (ms.padded_batches, {"dtype": "int32"}, "dtype='int32'"),
    (ms.padded_batches, {"dtype": np.complex128}, "dtype="),
    (ms.padded_batches, {"max_magnitude": float("inf")}, "max_magnitude=inf"),
    (ms.padded_batches, {"adversarial": "yes"}, "adversarial='yes'"),
    (ms.padded_batches, {"max_batch": 0}, "must be >= 1"),
]


@pytest.mark.parametrize(("strategy", "kwargs", "message"), BAD_CALLS)
def test_bad_arguments_raise_when_the_strategy_is_built(strategy, kwargs, message):
    with pytest.raises(InvalidArgument, match=None) as info:
        strategy(**kwargs)  # no .example(): validation is eager
    assert message in str(info.value)


# -- what is drawn -------------------------------------------------------------------------------


@settings(max_examples=50)
@given(ms.lengths(min_batch=2, max_batch=3, min_length=1, max_length=4))
def test_lengths_respect_their_bounds(lens):
    assert lens.dtype == np.int64 and lens.ndim == 1
    assert 2 <= lens.size <= 3
    assert ((1 <= lens) & (lens <= 4)).all()


@settings(max_examples=50)
@given(ms.masks(min_batch=2, max_batch=3, min_steps=2, max_steps=5))
def test_masks_respect_their_bounds(mask):
    assert mask.dtype == np.bool_
    assert 2 <= mask.shape[0] <= 3 and 2 <= mask.shape[1] <= 5


@pytest.mark.parametrize("style", ["right", "left"])
@settings(max_examples=50)
@given(data=__import__("hypothesis").strategies.data())
def test_contiguous_masks_have_the_requested_side(style, data):
    mask = data.draw(ms.masks(padding=style, allow_empty_rows=False))
    assert mask.any(axis=1).all()
    assert maskloss.padding_side(mask) in (style, "none")
    # A contiguous mask is recovered from its lengths.
    np.testing.assert_array_equal(
        maskloss.mask_from_lengths(maskloss.lengths_from_mask(mask), mask.shape[1], side=style), mask
    )


@settings(max_examples=50)
@given(ms.masks(shape=(3, 4), padding="arbitrary", allow_empty_rows=False))
def test_arbitrary_masks_without_empty_rows(mask):
    assert mask.shape == (3, 4)
    assert mask.any(axis=1).all()


@pytest.mark.parametrize("kind", ms.KINDS)
@pytest.mark.parametrize("adversarial", [False, True])
@settings(max_examples=30)
@given(data=__import__("hypothesis").strategies.data())
def test_padded_batches_are_consistent(kind, adversarial, data):
    ignore = -100 if kind == "sparse" and data.draw(__import__("hypothesis").strategies.booleans()) else None
    b = data.draw(ms.padded_batches(kind, adversarial=adversarial, weights=True, ignore_index=ignore))
    batch, steps = b.mask.shape
    assert b.kind == kind and b.padding in ms.PADDINGS
    assert b.y_pred.shape[:2] == (batch, steps) and b.y_pred.dtype == np.float64
    np.testing.assert_array_equal(b.lengths, b.mask.sum(axis=1))
    valid = b.mask
    assert np.isfinite(b.y_pred[valid]).all()
    if kind == "sparse":
        assert b.y_true.shape == (batch, steps) and b.y_true.dtype == np.int64
        assert ((b.y_true[valid] >= 0) & (b.y_true[valid] < b.y_pred.shape[-1])).all()
        if ignore is not None:
            assert (b.y_true[~valid] == ignore).all()
    else:
        assert b.y_true.shape == b.y_pred.shape
        assert np.isfinite(b.y_true[valid]).all()
    if kind == "dense":
        np.testing.assert_allclose(b.y_true[valid].sum(axis=-1), 1.0)
    if b.sample_weight is not None:
        w = b.sample_weight if b.sample_weight.ndim == 2 else b.sample_weight[:, None]
        w = np.broadcast_to(w, b.mask.shape)
        assert ((w[valid] >= 0) & (w[valid] <= 3)).all()
    if not adversarial:
        assert np.isfinite(b.y_pred).all()
    elif not valid.all():
        junk = b.y_pred[~valid]
        assert (~np.isfinite(junk) | (np.abs(junk) > 1e300)).all()
        if kind == "sparse" and ignore is None:
            assert ((b.y_true[~valid] < 0) | (b.y_true[~valid] >= b.y_pred.shape[-1])).all()


@pytest.mark.parametrize("kind", ms.KINDS)
@settings(max_examples=30)
@given(data=__import__("hypothesis").strategies.data())
def test_every_batch_is_accepted_by_maskloss(kind, data):
    """The whole point: maskloss takes every drawn batch (junk and all) without raising."""
    logits = data.draw(__import__("hypothesis").strategies.booleans())
    b = data.draw(ms.padded_batches(kind, adversarial=True, weights=True, from_logits=logits))
    fn = {
        "regression": maskloss.mse,
        "binary": maskloss.binary_crossentropy,
        "dense": maskloss.categorical_crossentropy,
        "sparse": maskloss.sparse_categorical_crossentropy,
    }[kind]
    extra = {} if kind == "regression" else {"from_logits": logits}
    out = fn(b.y_true, b.y_pred, b.mask, sample_weight=b.sample_weight, reduction="sum", **extra)
    assert np.isfinite(out) or not logits  # probabilities of exactly 0 may honestly cost inf


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", np.float32])
@settings(max_examples=20)
@given(data=__import__("hypothesis").strategies.data())
def test_dtypes(dtype, data):
    b = data.draw(ms.padded_batches("dense", dtype=dtype, adversarial=True))
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    storage = np.float32 if name == "bfloat16" else np.dtype(name)
    assert b.y_pred.dtype == storage and b.y_true.dtype == storage
    if name == "bfloat16":
        finite = b.y_pred[np.isfinite(b.y_pred)]
        np.testing.assert_array_equal(ms.round_to_bfloat16(finite), finite)
        assert (np.abs(finite) <= ms.BFLOAT16_MAX).all()


def test_round_to_bfloat16_matches_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    specials = [0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1.00390625, 1.01171875]
    x = np.concatenate([rng.standard_normal(10_000) * 10.0 ** rng.integers(-30, 30, 10_000), specials])
    x = x.astype(np.float32)
    expected = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(ms.round_to_bfloat16(x), expected)
    assert np.isnan(ms.round_to_bfloat16([np.nan])).all()
    assert float(ml_dtypes.finfo(ml_dtypes.bfloat16).max) == ms.BFLOAT16_MAX


# -- what each strategy shrinks to ---------------------------------------------------------------

QUIET = settings(database=None, max_examples=500)


def simplest(strategy):
    """The example hypothesis tries first and shrinks towards: the all-zero choice sequence."""
    seen = []

    @settings(max_examples=1, database=None, phases=[Phase.generate], derandomize=True)
    @given(strategy)
    def record(x):
        seen.append(x)

    record()
    return seen[0]


def test_lengths_shrink_to_min_batch_of_min_length():
    np.testing.assert_array_equal(simplest(ms.lengths(min_batch=2, min_length=1)), [1, 1])


def test_masks_shrink_to_one_right_padded_step():
    mask = find(ms.masks(), lambda m: not m.all(), settings=QUIET)
    np.testing.assert_array_equal(mask, [[False]])
    mask = find(ms.masks(allow_empty_rows=False), lambda m: not m.all(), settings=QUIET)
    np.testing.assert_array_equal(mask, [[True, False]])  # right padding, the simplest style


def test_masks_without_a_failing_condition_shrink_to_no_padding():
    mask = simplest(ms.masks(min_batch=2, min_steps=3))
    assert mask.shape == (2, 3) and mask.all()


def test_padded_batches_shrink_to_the_simplest_batch():
    b = simplest(ms.padded_batches("sparse", weights=True, adversarial=True))
    assert b.mask.shape == (1, 1) and b.mask.all() and b.padding == "right"
    assert b.y_pred.shape == (1, 1, 2) and (b.y_pred == 0).all() and (b.y_true == 0).all()
    assert b.sample_weight is None


def test_weights_shrink_to_ones_and_junk_to_nan():
    b = find(ms.padded_batches("regression", weights=True), lambda b: b.sample_weight is not None,
             settings=QUIET)
    np.testing.assert_array_equal(b.sample_weight, [1.0])
    b = find(ms.padded_batches("regression", adversarial=True), lambda b: not b.mask.all(), settings=QUIET)
    assert np.isnan(b.y_pred[~b.mask]).all()
