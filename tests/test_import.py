"""``import maskloss`` imports numpy only: no hypothesis, pytest or framework."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("hypothesis", "pytest", "torch", "jax", "keras", "tensorflow", "tf_keras", "optax", "transformers")


def test_import_maskloss_pulls_in_no_test_tool_or_framework():
    code = (
        "import sys, maskloss, maskloss.masks, maskloss.losses, maskloss.reductions\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_package_ships_type_information():
    import importlib.resources

    assert importlib.resources.files("maskloss").joinpath("py.typed").is_file()
