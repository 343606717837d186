"""The chunk loop's thread pool survives ``fork`` and concurrent ``set_num_threads``.

Both tests use a batch big enough that ``_rows.map_rows`` takes the threaded path (the pool
exists only there): 64 x 8192 float32 logits is 2**19 elements, four times
``MIN_ELEMENTS_PER_THREAD``.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import maskloss
from maskloss import _rows


def _batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 16, 8192)).astype(np.float32)
    labels = rng.integers(0, 8192, size=(4, 16))
    mask = np.ones((4, 16), dtype=bool)
    return labels, logits, mask


def _loss(_: object = None) -> float:
    labels, logits, mask = _batch()
    return float(maskloss.sparse_categorical_crossentropy(labels, logits, mask, from_logits=True))


# The fork tests run in a fresh interpreter: os.fork() in the pytest process warns when another
# test has loaded JAX (its threads do not survive a fork) or any multi-threaded framework, and the
# suite must run without warnings. Only numpy and maskloss are imported in the child script.
_FORK_CHILD = """
import os, select, sys, warnings
import multiprocessing
# Python >= 3.12 warns on fork() while threads run: forking with maskloss's pool alive is the point here.
warnings.filterwarnings("ignore", message=r".*fork\\(\\).*", category=DeprecationWarning)
sys.path.insert(0, os.getcwd())
from tests.test_fork_and_race import _loss
import maskloss
from maskloss import _rows

maskloss.set_num_threads(2)
parent = _loss()  # the pool now exists in the parent
assert _rows._pool is not None
if sys.argv[1] == "fork":
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: before the fix this call never returned
        try:
            os.write(write, repr(_loss()).encode())
        finally:
            os._exit(0)
    os.close(write)
    if not select.select([read], [], [], 60)[0]:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        sys.exit("DEADLOCK: maskloss call in a forked child did not return within 60 s")
    children = [float(os.read(read, 100).decode())]
    os.waitpid(pid, 0)
else:
    with multiprocessing.get_context("fork").Pool(2) as pool:
        children = pool.map_async(_loss, range(2)).get(timeout=60)
print(repr(parent), *map(repr, children))
"""


def _run_fork_child(mode: str) -> list[float]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", _FORK_CHILD, mode], cwd=root,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr, done.stderr[-2000:]
    return [float(v) for v in done.stdout.split()]


@pytest.mark.skipif(sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(),
                    reason="no fork on this platform")
def test_forked_child_uses_a_fresh_pool() -> None:
    parent, child = _run_fork_child("fork")
    assert child == parent


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_multiprocessing_fork_pool_workers() -> None:
    parent, *children = _run_fork_child("pool")
    assert children == [parent, parent]


def test_growing_the_pool_leaves_a_looked_up_pool_usable() -> None:
    """The window of the race, made deterministic: look the pool up, let another call grow it, submit."""
    looked_up = _rows._executor(2)
    _rows._executor(_rows._pool_size + 1)  # another thread needing more workers
    assert looked_up.submit(int, "7").result(timeout=10) == 7


def test_set_num_threads_while_other_threads_compute() -> None:
    """Growing the pool while others submit used to raise 'cannot schedule new futures after shutdown'."""
    previous = maskloss.set_num_threads(2)
    errors: list[BaseException] = []
    stop = threading.Event()
    expected = _loss()

    def compute() -> None:
        try:
            while not stop.is_set():
                assert _loss() == expected
        except BaseException as exc:  # reported below
            errors.append(exc)
            stop.set()

    workers = [threading.Thread(target=compute) for _ in range(3)]
    try:
        for w in workers:
            w.start()
        for n in range(2, 400):
            if stop.is_set():
                break
            maskloss.set_num_threads(n % 4 + 2)
            _rows._executor(n)  # force a bigger pool, as a call with n threads would
    finally:
        stop.set()
        for w in workers:
            w.join(60)
        maskloss.set_num_threads(previous)
    assert not errors, errors[0]
