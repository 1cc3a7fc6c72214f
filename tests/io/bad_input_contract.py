"""The contract every bad-input case of tests/io/test_bad_inputs_round*.py checks: exit code 2, one message
naming the bad file or value, no traceback, and the case's folder exactly as it was (nothing written,
nothing deleted, no temporary file left behind)."""

from __future__ import annotations

from pathlib import Path

from meddiff.cli import main


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(folder.rglob("*"))}


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse refusing a value
        return int(e.code)


def assert_refused_cleanly(case: str, argv: list[str], named: str, folder: Path, capsys, caplog) -> None:
    before = tree(folder)
    code = exit_code(argv)
    err = capsys.readouterr().err + caplog.text
    assert code == 2, (case, code, err)
    assert "Traceback" not in err, err
    assert "error:" in err and named in err, (named, err)
    assert tree(folder) == before  # nothing written, nothing deleted, no temporary left behind
