"""``maskloss conformance``: the runner protocol, the table, ``--json``, exit codes, lazy imports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from maskloss import conformance
from maskloss.cli import main
from maskloss.conformance import ConformanceResult, Tally

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("torch", "jax", "optax", "keras", "tensorflow", "tf_keras", "transformers", "trl")


# --- the tolerance rule ----------------------------------------------------------------


def test_tally_rule_is_mixed_absolute_and_relative():
    t = Tally(1e-12)
    t.compare(1e6, 1e6 + 1e-7)  # relative 1e-13: agrees
    t.compare(0.0, 5e-13)  # absolute 5e-13 near 0: agrees
    t.compare([np.nan, np.inf], [np.nan, np.inf])  # NaN with NaN, inf with inf
    assert t.passed and t.compared == 4
    assert t.max_abs_error == pytest.approx(1e-7, rel=1e-3)
    t.compare(1.0, 1.0 + 1e-11)
    assert not t.passed and "1.00000000001" in t.first_failure


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(1.0, np.nan), (np.nan, 1.0), (np.inf, -np.inf), (np.inf, 1e308), ([1.0], [1.0, 1.0])],
)
def test_tally_never_lets_nan_inf_or_shape_mismatch_pass(ours, theirs):
    t = Tally(1e-12)
    t.compare(ours, theirs, "x")
    result = t.result("fw", "1.0", "conv", 1)
    assert not result.passed and result.max_abs_error == np.inf and "x" in result.note


def test_nothing_compared_is_not_a_pass():
    assert not Tally(1e-12).result("fw", "1.0", "conv", 0).passed


# --- the runner with fake framework modules ----------------------------------------------


def _fake(monkeypatch, name, *, version="9.9", results=None, crash=None):
    module = types.ModuleType(f"maskloss.conformance.{name}")
    module.FRAMEWORK = f"Fake{name}"
    module.version = lambda: version

    def run(rng, n_cases):
        assert isinstance(rng, np.random.Generator)
        if crash is not None:
            raise crash
        return results(n_cases)

    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)


def _row(passed, n_cases=3):
    return [
        ConformanceResult("fake", "9.9", "loss", n_cases, 1e-16 if passed else 0.5, 1e-16, 1e-12, passed, "")
    ]


@pytest.fixture
def fakes(monkeypatch):
    _fake(monkeypatch, "good", results=lambda n: _row(True, n))
    _fake(monkeypatch, "bad", results=lambda n: _row(False, n))
    _fake(monkeypatch, "crashing", crash=RuntimeError("segfault-ish: kernel exploded"))
    _fake(monkeypatch, "absent", version=None, results=lambda n: pytest.fail("run() of a missing framework"))
    _fake(monkeypatch, "silent", results=lambda n: [])
    return monkeypatch


def test_statuses_of_every_kind(fakes):
    runs = {
        r.name: r
        for r in (
            conformance.run_one(n, 0, 3)
            for n in ("good", "bad", "crashing", "absent", "silent", "no_such_module")
        )
    }
    assert runs["good"].status == "ok" and runs["good"].results[0].cases == 3
    assert runs["bad"].status == "FAIL"
    assert runs["crashing"].status == "FAIL" and "kernel exploded" in runs["crashing"].results[0].note
    assert runs["absent"].status == "not installed" and runs["absent"].passed
    assert runs["silent"].status == "FAIL"
    assert runs["no_such_module"].status == "not installed" and not runs["no_such_module"].installed


def test_a_module_that_fails_to_import_something_else_is_a_crash_not_absent(monkeypatch):
    module = types.ModuleType("maskloss.conformance.broken")

    def version():
        raise ModuleNotFoundError("No module named 'something_inside'", name="something_inside")

    module.version = version
    monkeypatch.setitem(sys.modules, module.__name__, module)
    run = conformance.run_one("broken")
    assert run.status == "FAIL" and "something_inside" in run.detail


@pytest.mark.parametrize(
    ("modules", "code"), [(("good", "absent", "nope"), 0), (("good", "bad"), 1), (("good", "crashing"), 1)]
)
def test_exit_code_is_zero_only_when_every_installed_framework_agrees(fakes, capsys, modules, code):
    fakes.setattr(conformance, "FRAMEWORK_MODULES", modules)
    assert main(["conformance", "--same-process", "--cases", "2", "--seed", "7"]) == code
    out = capsys.readouterr().out
    assert "seed 7, 2 random padded batches" in out
    assert "Fakegood 9.9" in out
    for name in conformance.NOT_INSTALLABLE:
        assert f"{name}  " in out or out.rstrip().endswith(name)
    assert "not installable here: golden numbers in the tests" in out
    if "crashing" in modules:
        assert "FAIL" in out and "kernel exploded" in out


def test_json_output(fakes, capsys):
    fakes.setattr(conformance, "FRAMEWORK_MODULES", ("good", "bad", "absent"))
    assert main(["conformance", "--same-process", "--json", "--cases", "4"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is False and payload["cases"] == 4 and payload["seed"] == 0
    by_name = {f["name"]: f for f in payload["frameworks"]}
    assert by_name["good"]["results"][0]["passed"] is True
    assert by_name["good"]["results"][0]["cases"] == 4
    assert by_name["bad"]["status"] == "FAIL"
    assert by_name["absent"]["status"] == "not installed" and by_name["absent"]["version"] is None
    assert set(conformance.NOT_INSTALLABLE) <= set(by_name)


@pytest.mark.parametrize("bad", ["0", "-3", "many"])
def test_cases_must_be_a_positive_integer(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["conformance", "--cases", bad])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_the_protocol_lists():
    assert conformance.FRAMEWORK_MODULES == (
        "torch", "optax", "keras3", "tf_keras", "hf", "trl", "cce", "litgpt", "torchtune",
    )
    assert conformance.NOT_INSTALLABLE == ("keras2", "tfa", "allennlp", "fairseq", "t5x", "verl")


# --- one child process per framework ----------------------------------------------------


def test_isolated_run_of_a_missing_module_is_not_installed(capsys):
    run = conformance.run_isolated("no_such_module", 0, 1)
    assert run.status == "not installed" and run.passed and not run.installed
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("child", "timeout", "expected"),
    [("import os; os.abort()", 60.0, "killed by signal SIGABRT"),
     ("import sys; print('from the child'); sys.exit(3)", 60.0, "exited with code 3 before reporting"),
     ("import time; time.sleep(30)", 1.0, "ran past 1 s")],
)
def test_a_child_that_dies_is_a_failing_row_not_the_end_of_the_run(monkeypatch, capsys, child, timeout, expected):
    monkeypatch.setattr(conformance, "_CHILD", child)
    run = conformance.run_isolated("torch", 0, 1, timeout=timeout)
    assert run.status == "FAIL" and not run.passed and expected in run.detail
    assert run.results and not run.results[0].passed and expected in run.results[0].note
    captured = capsys.readouterr()
    assert captured.out == ""  # a child's output never reaches the table or the JSON
    if "print" in child:
        assert "from the child" in captured.err


def test_run_all_isolates_and_reports_progress(monkeypatch):
    monkeypatch.setattr(conformance, "FRAMEWORK_MODULES", ("no_such_module", "another_missing"))
    lines: list[str] = []
    runs = conformance.run_all(0, 1, progress=lines.append)
    assert [r.status for r in runs[:2]] == ["not installed", "not installed"]
    assert lines[0] == "[1/2] no_such_module ..." and lines[-1].startswith("[2/2] another_missing: not installed")


def test_the_table_states_the_tolerance_rule(fakes, capsys):
    fakes.setattr(conformance, "FRAMEWORK_MODULES", ("good",))
    assert main(["conformance", "--same-process", "--quiet", "--cases", "1"]) == 0
    captured = capsys.readouterr()
    assert "    |maskloss - framework| <= tol * max(1, |framework|)," in captured.out
    assert captured.err == ""  # --quiet: no progress lines


# --- no framework needed to start ----------------------------------------------------------

_BLOCKER = textwrap.dedent(
    f"""
    import sys
    BLOCKED = {FRAMEWORKS!r}
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
            return None
    sys.meta_path.insert(0, Blocker())
    """
)


@pytest.mark.parametrize(("options", "code"), [((), 1), (("--allow-none",), 0)])
def test_runs_with_no_framework_installed(options, code):
    """With every framework unimportable: all rows 'not installed'; a check of nothing exits 1."""
    script = _BLOCKER + textwrap.dedent(
        f"""
        from maskloss.cli import main
        rc = main(["conformance", "--same-process", "--cases", "1", *{options!r}])
        assert not any(m.split(".")[0] in BLOCKED for m in sys.modules), "a framework was imported"
        sys.exit(rc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    lines = proc.stdout.splitlines()
    for display in ("torch", "optax", "transformers"):
        assert any(line.startswith(display + " ") and "not installed" in line for line in lines), display
    assert proc.stdout.count("not installed") >= len(conformance.FRAMEWORK_MODULES)
    assert "every installed framework agrees" not in proc.stdout
    assert "NOTHING CHECKED: no framework is installed" in proc.stdout
    assert ("allowed by --allow-none" in proc.stdout) == bool(options)


def test_nothing_checked_in_json_and_exit_code(fakes, capsys):
    fakes.setattr(conformance, "FRAMEWORK_MODULES", ("absent", "nope"))
    assert main(["conformance", "--same-process", "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["nothing_checked"] is True and payload["ok"] is False
    assert main(["conformance", "--same-process", "--allow-none", "--json"]) == 0


def test_the_table_fits_100_columns_even_with_long_names(fakes, capsys):
    long = "softmax_cross_entropy_with_integer_labels, where = class mask, and a much longer tail"
    rows = [ConformanceResult("fake", "9.9", long, 3, 1e-16, 1e-16, 1e-12, False, "x " * 80)]
    _fake(fakes, "wordy", results=lambda n: rows)
    fakes.setattr(conformance, "FRAMEWORK_MODULES", ("good", "wordy", "absent"))
    assert main(["conformance", "--same-process", "--cases", "3"]) == 1
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "much longer tail" in out and "FAIL" in out  # wrapped, not cut


def test_tensorflow_start_up_noise_is_silenced_but_real_stderr_kept(fakes, capfd):
    import os

    def noisy(n):
        os.write(2, b"I0000 00:00:1796387980.121684   17820 cudart_stub.cc:31] Could not find cuda drivers\n")
        os.write(2, b"E0000 00:00:1796387986.464362   17820 cuda_platform.cc:52] failed call to cuInit\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"a real message from the framework\n")
        return _row(True, n)

    _fake(fakes, "noisy", results=noisy)
    assert conformance.run_one("noisy").status == "ok"
    err = capfd.readouterr().err
    assert "cuInit" not in err and "cuda drivers" not in err and "absl" not in err
    assert "a real message from the framework" in err


def test_importing_the_package_the_cli_and_conventions_imports_no_framework():
    code = textwrap.dedent(
        f"""
        import sys
        import maskloss, maskloss.cli, maskloss.conformance
        import maskloss.conventions.torch, maskloss.conventions.optax, maskloss.conventions.hf
        import maskloss.conformance.torch, maskloss.conformance.optax, maskloss.conformance.hf
        heavy = {(*FRAMEWORKS, "hypothesis", "pytest")!r}
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --- the real frameworks, a few cases each ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "module", "conventions"),
    [("torch", "torch", 3), ("optax", "optax", 3), ("hf", "transformers", 3), ("trl", "trl", 3),
     ("cce", "cut_cross_entropy", 2), ("litgpt", "litgpt.utils", 2), ("torchtune", "torchtune.modules.loss", 2)],
)
def test_real_framework_agrees(name, module, conventions):
    # find_spec, not importorskip: importing Cut Cross-Entropy's Triton here could abort this process
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{module} is not installed")
    # In a child process, as the command runs it: this test process may hold TensorFlow,
    # which aborts a process that then loads Triton (Cut Cross-Entropy).
    run = conformance.run_isolated(name, seed=1, n_cases=3)
    assert run.status == "ok", run.results
    assert run.version and all(r.cases == 3 and r.passed for r in run.results)
    assert len(run.results) >= conventions
