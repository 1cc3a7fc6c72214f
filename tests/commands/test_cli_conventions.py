"""One command-line convention for every verb: -i/--input, -o/--output, -v anywhere, old spellings
as aliases, help text for every option, and error messages that name what the user typed."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from meddiff.cli import build_parser, main
from meddiff.data.samples import samples_dir

NIFTI = samples_dir("colin27") / "colin27" / "axial.nii.gz"
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo_sr_x4.yaml"


def _walk(parser: argparse.ArgumentParser, name: str):
    """(command name, action) for every action of every (nested) sub-parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, child in action.choices.items():
                yield from _walk(child, f"{name} {verb}")
        else:
            yield name, action


def test_every_option_has_help():
    missing = [(name, a.option_strings or a.dest) for name, a in _walk(build_parser(), "meddiff")
               if not isinstance(a, argparse._HelpAction) and not (a.help and a.help.strip())]
    assert missing == []


def _verbs(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, child in action.choices.items():
                nested = list(_verbs(child, (*prefix, verb)))
                yield from nested or [((*prefix, verb), child)]


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_anywhere(where):
    parser = build_parser()
    for verb, child in _verbs(parser):
        assert "-v" in child._option_string_actions, verb
    argv = ["sample", "-o", "x", "--method", "median"]
    args = parser.parse_args(["-v", *argv] if where == "before" else [*argv, "-v"])
    assert args.verbose is True
    assert parser.parse_args(argv).verbose is False


@pytest.mark.parametrize("verb,extra,dest", [
    (["sample", "--method", "median"], [], "output"),
    (["train"], [], "out"),
    (["evaluate"], [], "out"),
    (["demo"], [], "out"),
    (["study", "results", "s"], [], "out"),
])
def test_output_aliases(verb, extra, dest):
    parser = build_parser()
    got = {flag: getattr(parser.parse_args([*verb, flag, "d", *extra]), dest) for flag in ("-o", "--output", "--out")}
    assert {str(v) for v in got.values()} == {"d"}


def test_input_aliases():
    parser = build_parser()
    assert parser.parse_args(["sample", "-i", "a", "-o", "b"]).input == Path("a")
    assert parser.parse_args(["train", "-i", "prep"]).input == "prep"
    assert parser.parse_args(["evaluate", "-i", "lr"]).input == ["lr"]


def test_study_percentiles_alias():
    parser = build_parser()
    base = ["study", "create", "s", "--real", "r", "--method", "m=d"]
    old = parser.parse_args([*base, "--percentiles", "1", "99"]).percentiles
    new = parser.parse_args([*base, "--clip-percentiles", "1", "99"]).percentiles
    assert old == new == [1.0, 99.0]


def test_train_input_and_device_override_the_config():
    from meddiff.commands.train import resolve_config

    args = build_parser().parse_args(["train", "--config", str(CONFIG), "-i", "prep", "-o", "run", "--device", "cpu"])
    cfg = resolve_config(args)
    assert (cfg.data.prepared, cfg.train.out_dir, cfg.train.device) == ("prep", "run", "cpu")


def test_prepare_flags_and_positionals_agree(tmp_path):
    from meddiff.commands.prepare import input_output

    parser = build_parser()
    assert input_output(parser.parse_args(["prepare", "-i", "a", "-o", "b"])) == ("a", "b")
    assert input_output(parser.parse_args(["prepare", "a", "b"])) == ("a", "b")
    assert main(["prepare", "a", "-o", "b"]) == 2  # mixed forms are refused, not guessed
    assert main(["prepare", "-i", "a"]) == 2


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_missing_file_is_a_file(tmp_path, capsys):
    err = _error(capsys, ["prepare", "-i", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "out")])
    assert "scan.nii.gz: no such file" in err
    err = _error(capsys, ["prepare", "-i", str(tmp_path / "scans"), "-o", str(tmp_path / "out")])
    assert "scans: no such folder" in err


def test_colour_error_names_a_flag_that_exists(tmp_path, capsys):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[4:8, 4:8, 1] = 100
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    argv = ["sample", "--method", "median", "-i", str(tmp_path / "rgb.png"), "-o", str(tmp_path / "out"), "--no-progress"]
    err = _error(capsys, argv)
    assert "--allow-rgb" in err
    assert main([*argv, "--allow-rgb"]) == 0
    assert (tmp_path / "out" / "rgb_restored.png").is_file()


def test_rtstruct_and_seg_are_refused(tmp_path, capsys):
    rt = _error(capsys, ["sample", "--method", "median", "-i", get_testdata_file("rtstruct.dcm"), "-o", str(tmp_path / "a")])
    assert "has no pixel data (RTSTRUCT" in rt and "corrupt" not in rt
    seg = get_testdata_file("liver_1frame.dcm")
    if seg is None:
        pytest.skip("pydicom's SEG test file is not installed")
    err = _error(capsys, ["sample", "--method", "median", "-i", seg, "-o", str(tmp_path / "b")])
    assert "segmentation (SEG" in err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("override,expected", [
    ("train.no_such_key=1", "override 'train.no_such_key=1': unknown key 'no_such_key'"),
    ("trian.steps=1", "override 'trian.steps=1': unknown key 'trian'"),
    ("train.steps=many", "override 'train.steps=many': train.steps: expected an integer"),
])
def test_override_typo_blamed_on_the_override(tmp_path, capsys, override, expected):
    err = _error(capsys, ["train", "--config", str(CONFIG), override, "-o", str(tmp_path / "o")])
    assert expected in err and "demo_sr_x4.yaml" not in err


def test_every_help_page_renders(capsys):
    for verb, _ in _verbs(build_parser()):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([*verb, "--help"])
        assert e.value.code == 0, verb
        assert "-v, --verbose" in capsys.readouterr().out, verb
