"""The record every framework's conformance check returns (shared by all runners)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ConformanceResult:
    """How one convention of one framework compared with maskloss, over ``cases`` batches.

    ``max_abs_error`` and ``max_rel_error`` are over every compared number (values and,
    where checked, gradients); ``passed`` is whether all were within ``tolerance``
    (an explanation of the tolerance goes in ``note``).
    """

    framework: str
    version: str
    convention: str
    cases: int
    max_abs_error: float
    max_rel_error: float
    tolerance: float
    passed: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
