"""maskloss.dask against the in-memory losses: threaded scheduler, a real 2-process
LocalCluster, an out-of-core 4 GB case, file loaders and bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import maskloss

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
mdask = pytest.importorskip("maskloss.dask")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SCE = maskloss.sparse_categorical_crossentropy


def _close(value: float, expected: float) -> bool:
    if np.isnan(expected):
        return bool(np.isnan(value))
    return bool(abs(value - expected) <= 1e-12 * max(abs(expected), 1e-300))


def _batch(seed: int, b: int, t: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=(b, t))
    logits = rng.normal(size=(b, t, c)).astype(np.float32)
    mask = np.arange(t) < rng.integers(0, t + 1, size=b)[:, None]
    logits[~mask] = np.nan  # garbage under the mask must never reach the value
    labels[~mask] = 10**6
    return labels, logits, mask


def _split(n: int, draw: st.DrawFn) -> tuple[int, ...]:
    """A random chunking of an axis of length n."""
    cuts = sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=3)) if n > 1 else [])
    edges = [0, *cuts, n]
    return tuple(b - a for a, b in itertools.pairwise(edges) if b > a)


@st.composite
def chunked_batches(draw: st.DrawFn) -> tuple:
    b, t, c = draw(st.integers(1, 6)), draw(st.integers(1, 7)), draw(st.integers(1, 4))
    labels, logits, mask = _batch(draw(st.integers(0, 2**32 - 1)), b, t, c)
    chunks = (_split(b, draw), _split(t, draw))
    return labels, logits, mask, chunks


@settings(max_examples=20)
@given(case=chunked_batches(), reduction=st.sampled_from(maskloss.REDUCTIONS), smoothing=st.sampled_from([0.0, 0.2]))
def test_threaded_equals_in_memory(case, reduction, smoothing):
    labels, logits, mask, chunks = case
    c = logits.shape[-1]
    lazy = mdask.evaluate(
        SCE, da.from_array(labels, chunks=chunks), da.from_array(logits, chunks=(*chunks, c)),
        da.from_array(mask, chunks=chunks), reduction=reduction, from_logits=True, label_smoothing=smoothing,
    )
    value = lazy.compute(scheduler="threads")
    expected = SCE(labels, logits, mask, reduction=reduction, from_logits=True, label_smoothing=smoothing)
    if reduction == "none":
        assert lazy.chunks == chunks
        np.testing.assert_allclose(value, expected, rtol=1e-12, atol=0)
    else:
        assert lazy.ndim == 0
        assert _close(float(value), float(expected)), (value, expected)


@settings(max_examples=10)
@given(case=chunked_batches())
def test_dense_losses_with_weights_match(case):
    _, logits, mask, chunks = case
    c = logits.shape[-1]
    target = np.where(mask[..., None], np.abs(logits), 0.5).astype(np.float64)
    weight = np.arange(1.0, 1.0 + mask.shape[0])
    pred = da.from_array(np.where(mask[..., None], logits, np.nan), chunks=(*chunks, c))
    for loss in (maskloss.mse, maskloss.mae):
        for reduction in maskloss.SCALAR_REDUCTIONS:
            value = mdask.evaluate(loss, target, pred, mask, reduction=reduction, sample_weight=weight)
            expected = loss(target, np.asarray(pred), mask, reduction=reduction, sample_weight=weight)
            assert _close(float(value.compute(scheduler="threads")), float(expected))


def test_summary_counts_are_the_batch_counts():
    labels, logits, mask = _batch(3, 5, 6, 3)
    labels[0, 0] = -100
    mask[0, 0] = True
    stats = mdask.summary_stats(SCE, labels, da.from_array(logits, chunks=(2, 4, 3)), mask, ignore_index=-100,
                                from_logits=True)
    counts = mdask.Summary.from_stats(stats.compute(scheduler="threads")).counts()
    valid = mask & (labels != -100)
    assert counts == {
        "valid_steps": int(valid.sum()), "weight": float(valid.sum()), "sequences": 5,
        "nonempty_sequences": int(valid.any(axis=1).sum()), "steps": 30,
    }


@pytest.fixture(scope="module")
def client():
    # dashboard on any free port: None still asks for 8787, and distributed warns when it is taken
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB", dashboard_address=":0",
        host="127.0.0.1",
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_cluster_equals_in_memory(client):
    labels, logits, mask = _batch(11, 9, 13, 5)
    for reduction in maskloss.SCALAR_REDUCTIONS:
        lazy = mdask.evaluate(SCE, da.from_array(labels, chunks=(4, 5)), da.from_array(logits, chunks=(4, 5, 5)),
                              da.from_array(mask, chunks=(4, 5)), reduction=reduction, from_logits=True)
        value = client.compute(lazy).result()
        assert _close(float(value), float(SCE(labels, logits, mask, reduction=reduction, from_logits=True)))


# Out of core: >= 4 GB of float32 logits, generated per block from the block's seed.
SEED, BLOCK_B, BLOCK_T, CLASSES, PERIOD = 12, 256, 4096, 4, 256
N_B, N_T = 16, 16  # 16 x 16 blocks of 256 x 4096 x 4 float32 = 16 MiB each: 4 GiB


def _logits_base(i: int, j: int) -> np.ndarray:
    return np.random.default_rng([SEED, i, j, 0]).normal(size=(BLOCK_B, PERIOD, CLASSES)).astype(np.float32)


def _logits_block(i: int, j: int) -> np.ndarray:
    """The block's logits: its random base repeated along time, shifted by the time-block index."""
    out = np.empty((BLOCK_B, BLOCK_T // PERIOD, PERIOD, CLASSES), dtype=np.float32)
    np.add(_logits_base(i, j)[:, None], np.float32(j), out=out)  # one pass: tile and shift
    return out.reshape(BLOCK_B, BLOCK_T, CLASSES)


def _labels_mask_block(i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SEED, i, j, 1])
    labels = rng.integers(0, CLASSES, size=(BLOCK_B, BLOCK_T), dtype=np.int8)
    mask = np.arange(BLOCK_T) < rng.integers(0, BLOCK_T // 8, size=BLOCK_B)[:, None]
    return labels, mask


def _generated(kind: str, block_info=None):
    i, j = block_info[None]["chunk-location"][:2]
    if kind == "logits":
        return _logits_block(i, j)
    labels, mask = _labels_mask_block(i, j)
    return labels if kind == "labels" else mask


def test_four_gigabytes_out_of_core(client):
    steps = ((BLOCK_B,) * N_B, (BLOCK_T,) * N_T)
    logits = da.map_blocks(_generated, "logits", chunks=(*steps, (CLASSES,)), dtype=np.float32)
    labels = da.map_blocks(_generated, "labels", chunks=steps, dtype=np.int8)
    mask = da.map_blocks(_generated, "mask", chunks=steps, dtype=bool)
    assert logits.nbytes >= 4 * 10**9
    stats = mdask.summary_stats(SCE, labels, logits, mask, from_logits=True)
    summary = mdask.Summary.from_stats(client.compute(stats).result())

    # Plain NumPy, block by block: log-sum-exp minus the label's logit at the valid steps.
    numerator, per_sequence = 0.0, np.zeros((N_B, BLOCK_B, 2))
    for i in range(N_B):
        for j in range(N_T):
            lab, m = _labels_mask_block(i, j)
            rows, cols = np.nonzero(m)
            # the valid rows of _logits_block(i, j), read from its base without tiling it
            x = (_logits_base(i, j)[rows, cols % PERIOD] + np.float32(j)).astype(np.float64)
            nll = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1) - x[np.arange(len(x)), lab[m]]
            per_sequence[i, :, 0] += np.bincount(rows, weights=nll, minlength=BLOCK_B)
            per_sequence[i, :, 1] += np.bincount(rows, minlength=BLOCK_B)
            numerator += float(nll.sum())
    n, d = per_sequence[..., 0].ravel(), per_sequence[..., 1].ravel()
    assert summary.valid_steps == int(d.sum())
    assert abs(summary.value("token_mean") - numerator / d.sum()) <= 1e-12 * numerator / d.sum()
    ok = d > 0
    expected = float(np.sum(n[ok] / d[ok]) / ok.sum())
    assert abs(summary.value("sequence_mean") - expected) <= 1e-12 * expected


def test_file_loaders(tmp_path):
    labels, logits, mask = _batch(5, 4, 6, 3)
    logits = np.nan_to_num(logits)
    np.save(tmp_path / "y.npy", labels)
    np.savez(tmp_path / "p.npz", logits=logits)
    zarr = pytest.importorskip("zarr")
    z = zarr.open_array(str(tmp_path / "m.zarr"), mode="w", shape=mask.shape, chunks=(2, 3), dtype=bool)
    z[...] = mask
    y = mdask.from_file(tmp_path / "y.npy", chunks=(2, 3))
    p = mdask.from_file(tmp_path / "p.npz", chunks=(2, 3, 3))
    m = mdask.from_file(tmp_path / "m.zarr")
    assert m.chunks == ((2, 2), (3, 3))
    value = mdask.evaluate(SCE, y, p, m, from_logits=True).compute(scheduler="threads")
    assert _close(float(value), float(SCE(labels, logits, mask, from_logits=True)))


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        mdask.from_file(tmp_path / "missing.npy")
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match=r"bad\.npy"):
        mdask.from_file(tmp_path / "bad.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.zeros(2))
    with pytest.raises(ValueError, match=r"two.npz.*\['a', 'b'\].*key="):
        mdask.from_file(tmp_path / "two.npz")


def test_bad_input_is_caught_before_compute():
    labels, logits, mask = _batch(1, 4, 6, 3)
    pred = da.from_array(logits, chunks=(2, 3, 3))
    with pytest.raises(ValueError, match=r"class axis \(axis 2, size 3\) is split into 2 chunks"):
        mdask.evaluate(SCE, labels, da.from_array(logits, chunks=(2, 3, 2)))
    with pytest.raises(ValueError, match=r"y_true is chunked \(\(4,\), \(6,\)\).*\(\(2, 2\), \(3, 3\)\)"):
        mdask.evaluate(SCE, da.from_array(labels), pred)
    with pytest.raises(ValueError, match=r"mask must have shape \(4, 6\), got \(4, 5\)"):
        mdask.evaluate(SCE, labels, pred, mask[:, :5])
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 2"):
        mdask.evaluate(SCE, labels, pred, label_smoothing=2)
    with pytest.raises(TypeError, match="mse has no option from_logits"):
        mdask.evaluate(maskloss.mse, logits, pred, from_logits=True)
    with pytest.raises(ValueError, match="reduction"):
        mdask.evaluate(SCE, labels, pred, reduction="mean")
    with pytest.raises(TypeError, match="fn must be one of maskloss's losses"):
        mdask.evaluate(np.mean, labels, pred)
