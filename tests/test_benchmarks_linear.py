"""The benchmark README keeps its linear cross-entropy section across a full run (no timing here)."""

from __future__ import annotations

from benchmarks.run import LINEAR_HEADING, kept_linear_section


def test_a_full_run_keeps_the_linear_section(tmp_path):
    readme = tmp_path / "README.md"
    assert kept_linear_section(str(readme)) == ""  # no README yet
    readme.write_text("# Benchmarks\n\n## Sparse CE\n\n| a |\n\n" + LINEAR_HEADING + ": (N, 1024)\n\n| V | x |\n"
                      "|---|---|\n| 32000 | 1 |\n\n## Peak extra memory\n\n| m |\n")
    kept = kept_linear_section(str(readme))
    assert kept == LINEAR_HEADING + ": (N, 1024)\n\n| V | x |\n|---|---|\n| 32000 | 1 |\n"
    readme.write_text("# Benchmarks\n\n## Sparse CE\n")
    assert kept_linear_section(str(readme)) == ""


def test_the_readme_reports_the_linear_targets():
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "README.md")
    section = kept_linear_section(path)
    for words in ("N = 4096", "| 32000 |", "| 128000 |", "load average",
                  "value_and_grad <= 1.5x the float64 GEMM floor", "peak extra memory <= 256 MiB"):
        assert words in section, words
