"""Command line: `meddiff <verb> ...`. Parse arguments, build objects, call the library.

Each verb lives in `meddiff.commands.<verb>` with `add_parser(subparsers)` and `run(args)`;
this module only wires them together and turns MeddiffError, and an OSError from the file system
(read-only or non-folder output paths, a full disk), into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from . import __version__
from .errors import MeddiffError

# verb -> module in meddiff.commands (imported lazily so `meddiff --help` stays fast)
VERBS = {
    "prepare": "prepare",
    "degrade": "degrade",
    "train": "train",
    "sample": "sample",
    "evaluate": "evaluate",
    "demo": "demo",
    "study": "study",
    "models": "models",
    "export": "export",
}


class VerbParser(argparse.ArgumentParser):
    """The parser of a verb (and of a sub-verb: `study create`): an argument it does not know is its error,
    shown with its usage (`usage: meddiff sample ...`), not handed up to the top-level parser, whose
    usage says nothing about the verb. A verb's parser takes every argument after the verb, so there
    is nothing left over that a parent could accept."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meddiff", description="Diffusion models for medical imaging.")
    parser.add_argument("--version", action="version", version=f"meddiff {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=VerbParser)  # sub-verbs inherit the class
    sub.required = True
    for verb, module in VERBS.items():
        mod = importlib.import_module(f"meddiff.commands.{module}")
        mod.add_parser(sub)
    for p in sub.choices.values():
        add_common_flags(p)
    return parser


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """`-v/--verbose` on every verb (and sub-verb), so it works before or after the verb: the
    sub-parser's default is SUPPRESS, so `meddiff -v sample` is not reset to False by `sample`."""
    if "--verbose" not in p._option_string_actions:
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show debug logging and full tracebacks (same as before the verb)")
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                add_common_flags(child)


_OS_HINTS = {
    errno.EACCES: "expected a location you may write to", errno.EPERM: "expected a location you may write to",
    errno.EROFS: "the file system is read-only", errno.ENOTDIR: "a part of the path is a file, expected a folder",
    errno.EISDIR: "expected a file, found a folder", errno.EEXIST: "a file of that name is in the way",
    errno.ENOSPC: "the disk is full", errno.ENOENT: "no such file or folder",
}


def os_error_message(e: OSError) -> str:
    """One line naming the path(s) and what the system said, e.g. ``/x/out: Permission denied (...)``."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None) or "a file"
    reason = e.strerror or type(e).__name__
    hint = _OS_HINTS.get(e.errno or -1)
    return f"{where}: {reason}" + (f" ({hint})" if hint else "")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = ["meddiff", *(sys.argv[1:] if argv is None else map(str, argv))]  # recorded as provenance
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    from .io import outdir

    outdir.forget_claims()
    try:
        result = _run_verb(args)
    except MeddiffError as e:
        if args.verbose:
            raise
        print(f"meddiff {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"meddiff {args.verb}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system refused (read-only, not a folder, disk full...): say where
        if args.verbose:
            raise
        print(f"meddiff {args.verb}: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    return int(result or 0)


def _run_verb(args: argparse.Namespace):
    """Run the verb; if it fails (any error, not an interruption), remove the output folders it created."""
    from .io import outdir

    try:
        result = args.func(args)
    except KeyboardInterrupt:
        raise
    except BaseException:
        outdir.discard_claims()
        raise
    if result:
        from .domain.check import EXIT_WORSE_THAN_BICUBIC

        if result != EXIT_WORSE_THAN_BICUBIC:  # a finished run whose check scored a result worse keeps its outputs
            outdir.discard_claims()
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
