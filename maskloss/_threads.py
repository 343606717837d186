r"""How many threads the chunk loop uses: :func:`set_num_threads`.

NumPy releases the GIL inside its ufunc loops, so threads over disjoint ranges of
valid rows run the per-row math in parallel. Results never depend on the thread
count: each row's loss (and gradient row) is written into its own slot, and the
reductions sum those slots afterwards in a fixed order.

The default is the number of cores this process may run on
(``os.sched_getaffinity``), capped at :data:`MAX_DEFAULT_THREADS`; the environment
variable ``MASKLOSS_NUM_THREADS`` overrides it when ``maskloss`` is imported.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["MAX_DEFAULT_THREADS", "MAX_THREADS", "get_num_threads", "set_num_threads"]

#: Cap of the default (more threads than this only add contention for memory bandwidth).
MAX_DEFAULT_THREADS = 8


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: Most threads the chunk loop accepts: each is a real OS thread, started on the first large call.
MAX_THREADS = 256


def _check(n: object, name: str) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {n!r}")
    n = int(n)  # numpy integers too
    if n > MAX_THREADS:
        raise ValueError(
            f"{name}={n} is more threads than maskloss starts (at most {MAX_THREADS}; this process may run on "
            f"{_available_cores()} cores)"
        )
    return n


def _default() -> int:
    env = os.environ.get("MASKLOSS_NUM_THREADS")
    if env is not None and env.strip():
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"MASKLOSS_NUM_THREADS must be a positive int, got {env!r}") from None
        return _check(value, "MASKLOSS_NUM_THREADS")
    return max(1, min(_available_cores(), MAX_DEFAULT_THREADS))


_num_threads = _default()


def get_num_threads() -> int:
    """The number of threads the chunk loop uses."""
    return _num_threads


def set_num_threads(n: int) -> int:
    r"""Set the number of threads of the chunk loop; return the previous value.

    Results are bit for bit the same for any ``n`` (per-row slots, reduced in a fixed
    order); only the time changes.

    Examples
    --------
    >>> import maskloss
    >>> previous = maskloss.set_num_threads(1)
    >>> maskloss.set_num_threads(previous)
    1
    """
    global _num_threads
    previous = _num_threads
    _num_threads = _check(n, "n")
    return previous
