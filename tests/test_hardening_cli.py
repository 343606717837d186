"""Issue 25 hardening: ``maskloss evaluate``'s remaining errors are one line naming the file or option.

Each case failed before its fix: targets of another shape leaked Dask's "Chunks do not add up
to shape", a 0-d file gave NumPy's "Axis -1 is out of bounds", a .npy header claiming 40 TiB
gave mmap's "length is greater than file size", and a batch of size 0 crashed ("cannot reshape
array of size 0") where the in-memory loss gives its empty-batch values. A mask holding 2 and a
forgotten ``--from-logits`` are pinned here too (already one line on main).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import maskloss
from maskloss.cli import main

pytest.importorskip("dask")
pytest.importorskip("distributed")

SPARSE = "sparse_categorical_crossentropy"


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(25)
    arrays = {
        "labels": rng.integers(0, 5, size=(4, 6)),
        "logits": rng.normal(size=(4, 6, 5)),
        "labels_3": rng.integers(0, 5, size=(3, 6)),
        "mask_2": np.where(np.arange(6) < 4, 1, 2) * np.ones((4, 1), int),
        "mask_45": np.ones((4, 5), bool),
        "zero_d": np.array(3.0),
        "labels_b0": np.zeros((0, 6), int),
        "logits_b0": np.zeros((0, 6, 5)),
    }
    for name, value in arrays.items():
        np.save(tmp_path / f"{name}.npy", value)
    with open(tmp_path / "huge.npy", "wb") as fh:  # a header claiming 5 * 2**40 float64 (40 TiB), 64 bytes of data
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (5 * 2**40,)})
        fh.write(b"\0" * 64)
    return tmp_path


def _fails(path, argv, match):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", *[str(path / a) if a.endswith(".npy") else a for a in argv]])
    message = str(info.value.code)
    assert info.value.code not in (0, None)
    assert message.startswith("maskloss evaluate: error: ") and "\n" not in message, message
    assert __import__("re").search(match, message), message


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([SPARSE, "labels_3.npy", "logits.npy", "--from-logits"],
         r"targets '.*labels_3\.npy' has shape \(3, 6\); .* must be \(4, 6, 5\) \(dense\) or \(4, 6\) \(labels\)"),
        ([SPARSE, "labels.npy", "logits.npy", "--mask", "mask_45.npy", "--from-logits"],
         r"--mask '.*mask_45\.npy' has shape \(4, 5\); it must have the steps' shape \(4, 6\)"),
        (["mae", "zero_d.npy", "zero_d.npy"], r"predictions '.*zero_d\.npy' has shape \(\); it needs a batch axis"),
        (["mae", "huge.npy", "huge.npy"],
         r"predictions: '.*huge\.npy': its header claims shape \(5497558138880,\) of float64, 43980465111040 bytes "
         r".* only 64 bytes"),
        ([SPARSE, "labels.npy", "logits.npy", "--mask", "mask_2.npy", "--from-logits"],
         r"mask must hold only 0/1 .* found 2"),
        ([SPARSE, "labels.npy", "logits.npy"], r"pass from_logits=True for logits"),
    ],
)
def test_errors_are_one_line_naming_the_file_or_option(files, argv, match):
    _fails(files, argv, match)
    assert "Chunks do not add up" not in match


def test_batch_of_size_zero_gives_the_in_memory_values(files, capsys):
    code = main(["evaluate", SPARSE, str(files / "labels_b0.npy"), str(files / "logits_b0.npy"), "--from-logits",
                 "--all-reductions", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for reduction in maskloss.SCALAR_REDUCTIONS:
        want = float(maskloss.sparse_categorical_crossentropy(
            np.zeros((0, 6), int), np.zeros((0, 6, 5)), from_logits=True, reduction=reduction))
        assert out["values"][reduction] == (None if math.isnan(want) else want), reduction
    assert out["counts"] == {"valid_steps": 0, "weight": 0.0, "sequences": 0, "nonempty_sequences": 0, "steps": 0}
