r"""Hypothesis settings that make check_loss's search independent of the caller's imports.

Hypothesis (from 6.131) draws "local constants" for generation from every local module in
``sys.modules`` (``hypothesis.internal.conjecture.providers._get_local_constants``, cached in
``CONSTANTS_CACHE``). A derandomised search then draws different batches depending on what
the user has imported: a test finds a bug alone but not after a whole suite's imports.
:func:`no_local_constants` makes hypothesis see no local constants while check_loss (or
check_aggregation) searches, so the derandomised sequence depends only on maskloss and
hypothesis. If these internals are absent (another hypothesis version), it does nothing and
the plain behaviour (constants from the imported modules) applies.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["isolated_search", "no_local_constants"]

_lock = threading.Lock()
_depth = [0]
_saved: list[Callable[[], Any]] = []


def _internals() -> tuple[Any, Any] | None:
    """hypothesis's providers module and its empty ``Constants``, or None when this version lacks them."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:
        return None
    if not callable(getattr(providers, "_get_local_constants", None)) or not hasattr(providers, "CONSTANTS_CACHE"):
        return None
    return providers, Constants


def _clear_cache(providers: Any) -> None:
    cache = providers.CONSTANTS_CACHE
    inner = getattr(cache, "cache", cache)  # an LRUCache keeps its entries in .cache
    clear = getattr(inner, "clear", None)
    if callable(clear):
        clear()


@contextlib.contextmanager
def no_local_constants() -> Iterator[None]:
    """While inside, hypothesis draws no constants from the imported local modules.

    Re-entrant and thread-safe: the first entry swaps ``_get_local_constants`` for one
    returning an empty ``Constants`` and clears ``CONSTANTS_CACHE`` (which holds the local
    constants already filtered); the last exit restores it and clears the cache again, so
    that the caller's own hypothesis tests get their constants back. A hypothesis test run
    by another thread during the window also sees no local constants.
    """
    found = _internals()
    if found is None:
        yield  # this hypothesis has no local constants (or keeps them elsewhere): plain behaviour
        return
    providers, constants = found
    with _lock:
        if _depth[0] == 0:
            _saved.append(providers._get_local_constants)
            empty = constants()
            providers._get_local_constants = lambda: empty
            _clear_cache(providers)
        _depth[0] += 1
    try:
        yield
    finally:
        with _lock:
            _depth[0] -= 1
            if _depth[0] == 0:
                providers._get_local_constants = _saved.pop()
                _clear_cache(providers)


@contextlib.contextmanager
def _private_storage() -> Iterator[None]:
    """Keep hypothesis's files out of the user's working directory while check_loss runs.

    ``database=None`` is not enough: hypothesis caches the constants it reads from local
    modules (its "local constants" for generation) under ``storage_directory("constants")``,
    whose default home is ``.hypothesis/`` in the current directory. Unless the user chose
    a home (``HYPOTHESIS_STORAGE_DIRECTORY`` or ``set_hypothesis_home_dir``), point it at a
    directory under the system temp dir for the duration of the check and restore it after.
    """
    from hypothesis import configuration

    key = "__hypothesis_home_directory"
    previous = vars(configuration).get(key)
    if previous is not None or os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        yield  # the user's own choice of storage: leave it alone
        return
    configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "maskloss-hypothesis")
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)


@contextlib.contextmanager
def isolated_search() -> Iterator[None]:
    """A check's hypothesis search apart from its caller: the same batches whatever the caller
    imported (:func:`no_local_constants`) and no files in the caller's directory (:func:`_private_storage`)."""
    with _private_storage(), no_local_constants():
        yield
