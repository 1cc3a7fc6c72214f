"""A verb's (or sub-verb's) argument error shows that verb's usage, not the top-level one (issue 29.6)."""

from __future__ import annotations

import pytest

from meddiff.cli import main


@pytest.mark.parametrize("argv,usage", [
    (["sample", "-o", "x", "--bogus"], "usage: meddiff sample "),
    (["models", "--bogus"], "usage: meddiff models "),
    (["export", "--checkpoint", "c", "-o", "m.pt", "--bogus"], "usage: meddiff export "),
    (["study", "create", "s", "--real", "r", "--method", "a=b", "--bogus"], "usage: meddiff study create "),
    (["study", "results", "s", "--bogus", "1"], "usage: meddiff study results "),
    (["study", "--bogus", "serve", "s"], "usage: meddiff study "),
])
def test_an_unknown_argument_shows_the_usage_of_its_verb(argv, usage, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and "usage: meddiff [-h]" not in err
    verb = usage.removeprefix("usage: ").strip()
    assert f"{verb}: error: unrecognized arguments: --bogus" in err


def test_the_top_level_usage_is_kept_for_top_level_errors(capsys):
    with pytest.raises(SystemExit):
        main(["nosuchverb"])
    assert capsys.readouterr().err.startswith("usage: meddiff [-h]")
