"""maskloss.conventions loads its modules on attribute access and imports no framework."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_submodules_load_on_attribute_access_without_importing_a_framework():
    code = (
        "import sys, maskloss.conventions as cv\n"
        "assert 'maskloss.conventions.torch' not in sys.modules\n"
        "print(round(float(cv.torch.cross_entropy([[0.0, 0.0]], [1])), 6))\n"
        "print(all(hasattr(cv, name) for name in cv.MODULES))\n"
        "frameworks = ('torch', 'jax', 'tensorflow', 'keras', 'optax', 'transformers')\n"
        "print(sorted(m for m in frameworks if m in sys.modules))\n"
        "print('torch' in dir(cv))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:4] == ["0.693147", "True", "[]", "True"]


def test_an_unknown_name_is_an_attribute_error():
    import maskloss.conventions as cv

    with pytest.raises(AttributeError, match="has no attribute 'pytorch'"):
        cv.pytorch  # noqa: B018


def test_modules_lists_every_public_module_of_the_package():
    # Read from the directory, not from MODULES: a new public convention module (recipes.py was
    # once missing) must be listed so the docs table and lazy loading see it.
    from pathlib import Path

    import maskloss.conventions as cv

    files = {p.stem for p in Path(cv.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert set(cv.MODULES) == files
    assert list(cv.MODULES) == sorted(cv.MODULES)
    for name in cv.MODULES:
        assert f"\n{name}\n    " in (cv.__doc__ or ""), name


def test_keras_mirrors_share_helpers_through_keras_common_not_through_each_other():
    # issue 19: keras3 was both a mirror and tf_keras's helper library.
    import ast
    from pathlib import Path

    import maskloss.conventions as cv

    root = Path(cv.__file__).parent
    for name in ("keras2", "keras3", "tf_keras"):
        tree = ast.parse((root / f"{name}.py").read_text())
        sources = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        others = {f"maskloss.conventions.{m}" for m in ("keras2", "keras3", "tf_keras") if m != name}
        assert not sources & others, (name, sources & others)
    tree = ast.parse((root / "tf_keras.py").read_text())
    assert "maskloss.conventions._keras_common" in {
        n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
    }
