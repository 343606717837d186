"""check_loss's own work: the oracle asked once per batch, and the shortcuts equal what they replace.

No timing here (speed is measured in ``benchmarks/run.py``, section "check_loss overhead").
"""

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("hypothesis")

import maskloss
import maskloss.testing.check as check_module
import maskloss.testing.properties as properties_module
from maskloss.testing import Bounds, check_loss
from maskloss.testing.tolerances import _compare


class Recorder:
    """Wraps a callable and keeps every call's array arguments (alive, so that their ids stay unique)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append(tuple(args) + tuple(kwargs[k] for k in sorted(kwargs)))
        return self.fn(*args, **kwargs)

    def repeated(self):
        """Calls whose arguments were the very same objects as an earlier call's."""
        seen, again = set(), 0
        for call in self.calls:
            key = tuple(id(a) for a in call if isinstance(a, np.ndarray))
            again += key in seen
            seen.add(key)
        return again


def _recording(monkeypatch):
    """Record the oracle and masked_totals calls that check_loss makes."""
    oracles, totals = [], []
    resolve = check_module.resolve

    def recording_resolve(*args, **kwargs):
        setup = resolve(*args, **kwargs)
        oracles.append(Recorder(setup.oracle))
        setup.oracle = oracles[-1]
        return setup

    masked_totals = properties_module.masked_totals

    def recording_totals(fn):
        totals.append(Recorder(masked_totals(getattr(fn, "fn", fn))))
        return totals[-1]

    monkeypatch.setattr(check_module, "resolve", recording_resolve)
    monkeypatch.setattr(properties_module, "masked_totals", recording_totals)
    return oracles, totals


@pytest.mark.parametrize(
    ("like", "options"),
    [
        (maskloss.mae, {}),
        (maskloss.mse, {"reduction": "sequence_mean"}),
        (maskloss.sparse_categorical_crossentropy, {"from_logits": True, "ignore_index": -100}),
        (maskloss.mse, {"reduction": "none"}),
    ],
)
def test_the_oracle_is_asked_once_about_each_batch(monkeypatch, like, options):
    oracles, totals = _recording(monkeypatch)
    check_loss(lambda *a, **k: like(*a, **k, **options), like, bounds=Bounds(weights=True), max_examples=30, **options)
    (oracle,) = oracles
    assert len(oracle.calls) > 30  # every example asks about several batches
    assert oracle.repeated() == 0
    assert len(totals) <= 1  # masked_totals(like) built once per check_loss, not once per batch
    for recorder in totals:
        assert recorder.calls and recorder.repeated() == 0


def test_the_oracle_gradient_is_asked_once_about_each_batch():
    def mse_grad(y_true, y_pred, mask=None, **options):
        n = int(mask.sum())
        diff = np.where(mask[..., None], y_true - y_pred, 0.0)
        return -2.0 * diff / (y_pred.shape[-1] * n) if n else np.zeros(y_pred.shape)

    expected = Recorder(mse_grad)
    check_loss(maskloss.mse, maskloss.mse, grad=mse_grad, expected_grad=expected, max_examples=30)
    assert len(expected.calls) > 30
    assert expected.repeated() == 0


def test_a_failure_is_still_found_and_reported_the_same_way():
    """The cached oracle values are the ones a failure reports (an off-by-one candidate here)."""
    def off_by_one(y_true, y_pred, mask):
        return maskloss.mae(y_true, y_pred, mask) + 1.0

    with pytest.raises(AssertionError) as info:
        check_loss(off_by_one, maskloss.mae, max_examples=20)
    err = info.value
    assert err.property == "agreement"
    assert float(err.actual) == pytest.approx(float(err.expected) + 1.0)
    assert float(err.expected) == float(maskloss.mae(err.batch.y_true, err.batch.y_pred, err.batch.mask))


SPECIAL = [0.0, -0.0, 1.0, -2.5, 1e-300, 5e-324, 1e300, math.inf, -math.inf, math.nan, 0.6931, 0.693147]


@pytest.mark.parametrize("reference", [None, 0.69, math.nan, math.inf])
@pytest.mark.parametrize(("rtol", "atol"), [(None, None), (0.0, 0.0), (1e-3, 1e-2)])
def test_scalar_comparison_is_the_array_comparison(reference, rtol, atol):
    """The scalar path of _compare decides and reports exactly as the array path does."""
    for a, e in itertools.product(SPECIAL, repeat=2):
        for dtype in ("float64", "float16"):
            scalar = _compare(np.float64(a), e, dtype, rtol, atol, reference, 3.0)
            array = _compare(
                np.array([a]), np.array([e]), dtype, rtol, atol, None if reference is None else np.array([reference]),
                3.0,
            )
            assert scalar.ok == array.ok, (a, e, dtype)
            assert scalar.bound == array.bound
            assert scalar.index == ()
            if not scalar.ok:
                assert np.array_equal([scalar.actual, scalar.expected], [array.actual, array.expected], equal_nan=True)


def test_scalar_comparison_keeps_the_shape_check():
    assert not _compare(1.0, np.ones(1), "float64", None, None).ok
    with pytest.raises(ValueError):  # a reference that cannot broadcast to the scalar: as before
        _compare(1.0, 1.0, "float64", None, None, np.ones(2))


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_side_tells_exactly_when_repadding_changes_nothing(side):
    # check_loss skips "left vs right padding" on a side where padding_side says the batch is
    # already padded (or unpadded): that must be exactly when repad returns the same mask.
    rng = np.random.default_rng(0)
    masks = [rng.random((b, t)) < p for b in (1, 3) for t in (1, 4, 7) for p in (0.0, 0.3, 0.8, 1.0)]
    for mask in masks:
        _, repadded = maskloss.repad(np.zeros(mask.shape), mask, side=side)
        skipped = maskloss.padding_side(mask) in (side, "none")
        assert skipped == np.array_equal(repadded, mask), (mask.astype(int), side)
