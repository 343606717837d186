"""The console script: ``maskloss demo`` runs with no framework, ``--version`` works."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import maskloss
from maskloss.cli import main


def test_python_dash_m_maskloss_demo_prints_the_seed_walkthrough():
    out = subprocess.run([sys.executable, "-m", "maskloss", "demo"], capture_output=True, text=True, check=True)
    text = out.stdout
    for reduction in maskloss.SCALAR_REDUCTIONS:
        assert reduction in text
    assert "unmasked" in text.lower()
    assert "..### .####" in text  # the seed's mask after Masking(0), drawn per sequence


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert maskloss.__version__ in capsys.readouterr().out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_demo_numbers_are_the_library_numbers(capsys):
    assert main(["demo"]) == 0
    text = capsys.readouterr().out
    # The token mean that the demo prints is the mean over the 7 valid steps of its stand-in y_pred.
    from maskloss import demo as demo_module

    mask = maskloss.mask_from_padding(demo_module.SEED_X, 0.0)
    per_step = np.abs(1.0 - demo_module.SEED_Y_PRED).mean(axis=-1)
    assert f"{per_step[mask].mean():.6f}" in text


def test_no_arguments_prints_the_help():
    proc = subprocess.run([sys.executable, "-m", "maskloss"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: maskloss")
    assert "demo" in proc.stdout and "conformance" in proc.stdout
    assert "error" not in proc.stderr


def test_demo_into_a_closed_pipe_prints_no_traceback():
    """``maskloss demo | head``: the reader closes the pipe before the demo writes."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "maskloss", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child has finished importing, so every write hits a closed pipe
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
    assert proc.returncode != 0
