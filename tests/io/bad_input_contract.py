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


def broken_ct(dest: Path, tags: dict, *, values_as_text: bool) -> Path:
    """pydicom's CT_small with `tags` set (None deletes; a str is stored as LO text, so text in a numeric tag
    reaches the reader as a broken scanner's would), written implicit VR to `dest`. Other values: with
    `values_as_text` joined into LO text too ('\\'-separated), else set as their own VR."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import DataElement

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for k, v in tags.items():
        tag = tag_for_keyword(k)
        if v is None:
            del ds[tag]
        elif isinstance(v, str) or values_as_text:
            ds[tag] = DataElement(tag, "LO", v if isinstance(v, str) else "\\".join(str(x) for x in v))
        else:
            setattr(ds, k, v)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, implicit_vr=True, little_endian=True)
    return dest
