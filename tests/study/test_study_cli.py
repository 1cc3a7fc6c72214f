"""`meddiff study` takes its folder as the positional STUDY or by the flag of every verb: `create -o STUDY`
(the folder it writes), `results|readers|serve -i STUDY` (the folder they read); both must agree."""

from __future__ import annotations

from meddiff.cli import build_parser, main


def _create(real_dir, generated_dirs, *where):
    methods = [a for name, d in generated_dirs.items() for a in ("--method", f"{name}={d}")]
    return main(["study", "create", *map(str, where), "--real", str(real_dir), *methods, "--pairs", "2", "--readers", "1"])


def test_create_takes_o_and_results_readers_take_i(tmp_path, real_dir, generated_dirs, capsys):
    study = tmp_path / "s"
    assert _create(real_dir, generated_dirs, "-o", study) == 0
    assert (study / "study.sqlite").is_file()
    assert main(["study", "readers", "-i", str(study)]) == 0
    assert "reader1" in capsys.readouterr().out
    assert main(["study", "results", "--input", str(study), "-o", str(tmp_path / "res")]) == 0
    assert (tmp_path / "res" / "report.html").is_file()
    assert main(["study", "results", str(study), "-i", str(study)]) == 0  # the same folder twice is fine


def test_two_different_study_folders_or_none_are_refused(tmp_path, real_dir, generated_dirs, capsys):
    assert _create(real_dir, generated_dirs, tmp_path / "a", "--output", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "two study folders" in err and "-o/--output" in err and str(tmp_path / "b") in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert _create(real_dir, generated_dirs) == 2
    assert "the study folder is required: give STUDY or -o/--output STUDY" in capsys.readouterr().err
    assert main(["study", "readers"]) == 2
    assert "give STUDY or -i/--input STUDY" in capsys.readouterr().err


def test_serve_accepts_the_flag_too():
    args = build_parser().parse_args(["study", "serve", "-i", "s", "--port", "0"])
    from meddiff.commands.study import study_folder

    assert str(study_folder(args)) == "s"
