"""`meddiff sample`: (not yet implemented)."""

from __future__ import annotations

import argparse

from ..errors import MeddiffError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="(not yet implemented)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise MeddiffError("'sample' is not implemented yet")
