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
    # dashboard on any free port: None still asks for 8787, and distributed warns when it is taken
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=":0",
                                  host="127.0.0.1") as cluster:
        code = main(["evaluate", "sparse_categorical_crossentropy", str(path / "labels.npy"),
                     str(path / "logits.npy"), "--from-logits", "--ignore-index", "-100", "--json",
                     "--scheduler", cluster.scheduler_address])
    assert code == 0
    value = json.loads(capsys.readouterr().out)["values"]["token_mean"]
    expected = maskloss.sparse_categorical_crossentropy(labels, logits, from_logits=True, ignore_index=-100)
    assert value == pytest.approx(float(expected), rel=1e-12)


def _sparse_args(path, *extra):
    return ["evaluate", "sparse_categorical_crossentropy", str(path / "labels.npy"), str(path / "logits.npy"),
            "--from-logits", *extra]


def test_ignore_index_zero_is_applied(files, capsys):
    """0 == False: ``--ignore-index 0`` (the T5X and Keras pad id) used to be dropped."""
    path, labels, logits, _ = files
    pad0 = np.where(labels == -100, 0, labels)
    np.save(path / "labels.npy", pad0)
    assert main(_sparse_args(path, "--ignore-index", "0", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["options"]["ignore_index"] == 0
    assert out["counts"]["valid_steps"] == int((pad0 != 0).sum()) < pad0.size
    expected = maskloss.sparse_categorical_crossentropy(pad0, logits, from_logits=True, ignore_index=0)
    assert out["values"]["token_mean"] == pytest.approx(float(expected), rel=1e-12)


def test_json_of_a_nan_value_is_valid_json(files, capsys):
    path, labels, logits, _ = files
    np.save(path / "none.npy", np.zeros(labels.shape, dtype=bool))
    assert main(_sparse_args(path, "--mask", str(path / "none.npy"), "--json")) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text
    assert json.loads(text)["values"]["token_mean"] is None  # nothing valid: the in-memory value is NaN
    assert np.isnan(maskloss.sparse_categorical_crossentropy(labels, logits, np.zeros(labels.shape, bool),
                                                             from_logits=True))


@pytest.mark.parametrize("timeout", ["nan", "-1", "0", "inf"])
def test_timeout_must_be_positive_and_finite(files, timeout):
    path, *_ = files
    with pytest.raises(SystemExit, match=r"--timeout must be a positive number of seconds"):
        main(_sparse_args(path, "--timeout", timeout, "--ignore-index", "-100"))


def test_error_found_while_dask_computes_is_one_line(files):
    path, labels, _, _ = files
    bad = labels.copy()
    bad[2, 3] = 99  # out of range for 5 classes: found only when the chunk is computed
    np.save(path / "bad.npy", bad)
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "sparse_categorical_crossentropy", str(path / "bad.npy"), str(path / "logits.npy"),
              "--from-logits", "--ignore-index", "-100"])
    message = str(info.value.code)
    assert message.startswith("maskloss evaluate: error:") and "99" in message and "\n" not in message
