"""Hypothesis profiles: ``fast`` by default, ``ci`` (thorough, derandomised) when CI is set.

Select one explicitly with ``HYPOTHESIS_PROFILE=thorough pytest``.

Triton (installed with Cut Cross-Entropy; litgpt's lightning and torch's compiler import it
when present) is imported first, before any test loads TensorFlow: both link their own LLVM,
and a process that loads TensorFlow and then Triton aborts ("Option 'bitcode-mdindex-threshold'
registered more than once"), while the other order works. ``maskloss conformance`` avoids the
question by running every framework in a process of its own.
"""

from __future__ import annotations

import importlib.util
import os

if importlib.util.find_spec("triton") is not None:  # see the module docstring
    import triton  # noqa: F401

from hypothesis import HealthCheck, settings

settings.register_profile("fast", max_examples=25, deadline=None)
settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "fast"))
