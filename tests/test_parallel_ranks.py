"""The proof on real ranks: 2 and 4 gloo processes (CPU, loopback), tests/parallel_ranks.py.

A data-parallel x context-parallel step (DDP averaging, zigzag sequence shards, uneven
micro-batches with an empty one) with every shard's sum times ``W / N`` ends with the
full-batch gradient of maskloss.value_and_grad; the per-shard-mean loop does not.
megatron-core 0.16.1's own ``vocab_parallel_cross_entropy`` over 2 and 4 vocabulary shards
gives the oracle's gradient without label smoothing (to float32: megatron computes the
softmax in float32); with smoothing each rank computes a different loss for the same token
(its own vocabulary size and mean, Megatron-LM#737), exactly as
maskloss.conventions.recipes.megatron re-creates it, and off the global-vocabulary rule.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")  # the DP x CP step needs torch only; the megatron checks skip without megatron-core

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "parallel_ranks.py"
TIMEOUT = 150  # seconds; a run takes ~5 s of CPU (one import of torch and megatron-core, then fork)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(world: int) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "--world-size", str(world), "--port", str(_free_port())],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # the ranks join this process group: one kill tears all down
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        out, err = "", f"timed out after {TIMEOUT} s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, out, err


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"{w}-ranks")
def rows(request) -> dict[str, float]:
    returncode, out, err = _run(request.param)
    if returncode != 0:  # once more on a fresh port (taken between choosing and binding, or a slow gloo setup)
        first = err[-1500:]
        returncode, out, err = _run(request.param)
        err = f"{err}\n(first attempt:)\n{first}"
    assert returncode == 0, f"tests/parallel_ranks.py failed ({returncode}):\n{out}\n{err[-3000:]}"
    found = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {r["world_size"] for r in found} == {request.param}
    return {r["check"]: r["value"] for r in found}


def test_dp_x_cp_step_gives_the_full_batch_gradient(rows):
    assert rows["dp_cp"] <= 1e-12
    assert rows["dp_cp_naive"] > 1e-2  # the per-shard means: 0.47 on 2 ranks, 0.44 on 4


def _need_megatron(rows: dict[str, float]) -> None:
    if "tp" not in rows:  # never in CI: tests/test_frameworks_installed.py requires megatron-core there
        pytest.skip("megatron-core does not import (it is in the frameworks extra; it installs on CPU)")


def test_megatron_vocab_parallel_cross_entropy_equals_the_oracle(rows):
    _need_megatron(rows)
    assert rows["tp"] <= 1e-6  # float32 softmax inside megatron-core


def test_megatron_vocab_parallel_smoothing_uses_the_local_vocabulary(rows):
    _need_megatron(rows)
    assert rows["tp_smoothing_vs_recreation"] <= 1e-5       # the re-creation is megatron-core's arithmetic
    assert rows["tp_smoothing_ranks_disagree_by"] > 1e-2    # one token, a different loss on each rank
    assert rows["tp_smoothing_vs_global"] > 1e-2            # not the full-vocabulary smoothed gradient
