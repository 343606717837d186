"""Deprecation paths: an old name keeps working and says, once per call, what to use instead."""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["renamed_keyword", "warn_renamed"]


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (a DeprecationWarning naming both)."""
    warnings.warn(f"{old} is deprecated; use {new} instead (same meaning)", DeprecationWarning, stacklevel=stacklevel)


def renamed_keyword(owner: str, old: str, new: str, old_value: Any, new_value: T) -> T:
    """The value of keyword ``new``, or of its deprecated spelling ``old`` (with a warning).

    ``old_value`` is ``None`` when the caller did not use the old keyword; both at once is a
    TypeError naming the two.
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{owner}() got both {old}= (deprecated) and {new}=; pass {new}= only")
    warn_renamed(f"{owner}({old}=)", f"{owner}({new}=)", stacklevel=4)
    return old_value  # type: ignore[no-any-return]
