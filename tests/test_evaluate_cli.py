"""``maskloss evaluate`` on files: values and counts against the in-memory losses, --json, errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import maskloss
from maskloss.cli import main

pytest.importorskip("dask")
pytest.importorskip("distributed")


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 5, size=(6, 9))
    logits = rng.normal(size=(6, 9, 5)).astype(np.float32)
    mask = np.arange(9) < rng.integers(0, 10, size=6)[:, None]
    labels[0, 1] = -100
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "logits.npy", logits)
    np.savez(tmp_path / "mask.npz", mask=mask)
    return tmp_path, labels, logits, mask


def test_json_all_reductions_and_counts(files, capsys):
    path, labels, logits, mask = files
    before = sorted(p.name for p in path.iterdir())
    code = main(["evaluate", "sparse_categorical_crossentropy", str(path / "labels.npy"), str(path / "logits.npy"),
                 "--mask", str(path / "mask.npz"), "--from-logits", "--ignore-index", "-100",
                 "--label-smoothing", "0.1", "--all-reductions", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for reduction in maskloss.SCALAR_REDUCTIONS:
        expected = maskloss.sparse_categorical_crossentropy(
            labels, logits, mask, from_logits=True, ignore_index=-100, label_smoothing=0.1, reduction=reduction)
        assert out["values"][reduction] == pytest.approx(float(expected), rel=1e-12)
    valid = mask & (labels != -100)
    assert out["counts"]["valid_steps"] == int(valid.sum())
    assert out["counts"]["sequences"] == 6
    assert out["counts"]["nonempty_sequences"] == int(valid.any(axis=1).sum())
    assert out["counts"]["steps"] == 54
    assert sorted(p.name for p in path.iterdir()) == before  # nothing written


def test_text_output(files, capsys):
    path, *_ = files
    assert main(["evaluate", "mse", str(path / "logits.npy"), str(path / "logits.npy"), "--reduction", "sum"]) == 0
    out = capsys.readouterr().out
    assert "sum" in out and "0.0" in out and "valid_steps=54" in out


def test_missing_file_names_the_argument(files):
    path, *_ = files
    with pytest.raises(SystemExit, match=r"predictions: no such file.*nope\.npy"):
        main(["evaluate", "mse", str(path / "logits.npy"), str(path / "nope.npy")])


def test_unreachable_scheduler_fails_fast(files):
    path, *_ = files
    start = time.monotonic()
    with pytest.raises(SystemExit, match=r"--scheduler tcp://127\.0\.0\.1:9: cannot reach a Dask scheduler"):
        main(["evaluate", "mse", str(path / "logits.npy"), str(path / "logits.npy"),
              "--scheduler", "tcp://127.0.0.1:9", "--timeout", "1"])
    assert time.monotonic() - start < 10


def test_scheduler_on_a_running_cluster(files, capsys):
    distributed = pytest.importorskip("distributed")
    path, labels, logits, _ = files
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        code = main(["evaluate", "sparse_categorical_crossentropy", str(path / "labels.npy"),
                     str(path / "logits.npy"), "--from-logits", "--ignore-index", "-100", "--json",
                     "--scheduler", cluster.scheduler_address])
    assert code == 0
    value = json.loads(capsys.readouterr().out)["values"]["token_mean"]
    expected = maskloss.sparse_categorical_crossentropy(labels, logits, from_logits=True, ignore_index=-100)
    assert value == pytest.approx(float(expected), rel=1e-12)
