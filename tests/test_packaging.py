"""The package people depend on carries the license its metadata names."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_file_matches_the_metadata_and_is_packaged():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["license"] == "MIT"
    files = config["metadata"]["license_files"].split()
    assert files[0] == "LICENSE"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


# --- extras hold ranges, constraints.txt the exact versions (issue 25) --------------------


def _extras() -> dict[str, list[str]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    section = config["options.extras_require"]
    return {name: [line.strip() for line in section[name].splitlines() if line.strip()] for name in section}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_extras_hold_ranges_not_exact_pins():
    for extra, requirements in _extras().items():
        for requirement in requirements:
            assert "==" not in requirement, f"extra {extra!r} pins {requirement!r}: use a range"
            assert re.search(r">=\d", requirement), f"extra {extra!r}: {requirement!r} has no lower bound"


def test_every_extra_requirement_has_an_exact_version_in_constraints():
    pins = _constraints()
    missing = {_name(r) for reqs in _extras().values() for r in reqs} - set(pins)
    assert not missing, f"constraints.txt has no pin for {sorted(missing)}"


def test_ci_and_the_readme_test_command_install_with_the_constraints():
    readme = (ROOT / "README.md").read_text().splitlines()
    first = readme.index("```bash")
    commands = readme[first + 1:first + 3]
    assert commands[0] == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/maskloss demo"
    assert "-c constraints.txt" in commands[1] and '".[test,frameworks]"' in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    installs = [line for line in ci.splitlines() if "pip install" in line and "-e " in line]
    assert installs and all("-c constraints.txt" in line for line in installs)


def test_changelog_and_citation_are_packaged():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert "CITATION.cff" in config["metadata"]["license_files"].split()  # the wheel's dist-info
    assert "CHANGELOG.md" in config["metadata"]["long_description"]  # the wheel's METADATA, PyPI
    manifest = (ROOT / "MANIFEST.in").read_text()
    for name in ("CHANGELOG.md", "CITATION.cff", "constraints.txt", "LICENSE"):
        assert name in manifest
    cff = (ROOT / "CITATION.cff").read_text()
    assert cff.startswith("cff-version: 1.2.0") and "license: MIT" in cff
    from maskloss import __version__

    assert f'version: "{__version__}"' in cff


def test_the_readme_has_no_relative_links_that_would_be_dead_on_pypi():
    text = (ROOT / "README.md").read_text() + (ROOT / "CHANGELOG.md").read_text()
    relative = [target for target in re.findall(r"\]\(([^)\s]+)\)", text) if not target.startswith("https://")]
    assert not relative, f"relative links (dead on PyPI): {relative}"


def test_the_docs_extra_holds_what_the_docs_build_imports():
    # Issue 24: the README's `pip install -e ".[docs]"` build stopped in docs/tables/bug_gallery_table.py
    # (check_loss imports hypothesis) and in the autodoc of maskloss.dask (imports dask).
    needed = {"sphinx", "myst-parser", "numpydoc", "matplotlib", "sphinx-book-theme", "nbclient", "nbformat",
              "ipykernel", "hypothesis", "dask"}
    missing = needed - {_name(r) for r in _extras()["docs"]}
    assert not missing, f"the docs extra lacks {sorted(missing)}"
