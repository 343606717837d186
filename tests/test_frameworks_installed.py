"""In CI every framework must import: a missing one FAILS here instead of silently skipping elsewhere.

Framework tests skip through ``pytest.importorskip`` so that a plain checkout without
the frameworks still runs; this file makes sure CI (``CI`` set) never takes that exit.
"""

from __future__ import annotations

import importlib
import os

import pytest

FRAMEWORKS = ("torch", "jax", "optax", "keras", "tensorflow", "tf_keras", "transformers", "trl")


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI is required to have every framework installed")
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_framework_imports_in_ci(name):
    module = importlib.import_module(name)  # an ImportError here fails the CI run
    assert getattr(module, "__version__", None), f"{name} imported but has no __version__"


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI is required to have every framework installed")
def test_litgpt_imports_in_ci():
    """litgpt is installed without its dependencies (it pins huggingface-hub < 1.4): its loss must import."""
    from litgpt.utils import chunked_cross_entropy

    assert callable(chunked_cross_entropy)


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI is required to have every framework installed")
def test_cut_cross_entropy_imports_in_ci():
    """Cut Cross-Entropy must import, in a process of its own: its Triton and TensorFlow in one
    process abort it (both register the same LLVM options), and this process may hold TensorFlow."""
    import subprocess
    import sys

    code = "import cut_cross_entropy, triton; print(cut_cross_entropy.linear_cross_entropy.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "linear_cross_entropy"


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI is required to have every framework installed")
def test_torchtune_imports_in_ci():
    """torchtune needs a torchao that matches both it and torch 2.13 (constraints.txt pins 0.17.0)."""
    from torchtune.modules.loss import CEWithChunkedOutputLoss

    assert callable(CEWithChunkedOutputLoss)


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI is required to have every framework installed")
def test_megatron_core_imports_in_ci():
    """megatron-core's vocab-parallel cross-entropy must import on CPU: tests/test_parallel_ranks.py runs it
    on 2 and 4 gloo ranks and would otherwise skip those checks. In a process of its own: it imports
    Triton, which must not follow TensorFlow into one process."""
    import subprocess
    import sys

    code = "from megatron.core.tensor_parallel import vocab_parallel_cross_entropy as f; print(f.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "vocab_parallel_cross_entropy"
