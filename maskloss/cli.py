"""The ``maskloss`` command line: ``maskloss demo`` and friends.

Each subcommand lives in its own module; this file only parses arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import maskloss


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maskloss`` console script."""
    parser = argparse.ArgumentParser(
        prog="maskloss", description="The ground truth for masked sequence losses."
    )
    parser.add_argument("--version", action="version", version=f"maskloss {maskloss.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="walk through the seed example: mask, per-step losses, every reduction")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from maskloss.demo import demo

        return demo()
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover - argparse rejects it
