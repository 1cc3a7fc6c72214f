"""P4 (issue 28) for `meddiff evaluate` and the domain report: a patient-named input folder reaches the
report, CSV, Markdown, TeX and domain_check.json only as its pseudonym, unless --keep-patient-tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from meddiff.cli import main
from meddiff.data.samples import samples_dir
from meddiff.io import Volume, read_volume, write_volume
from meddiff.io.phi import pseudonym

NAME = "Doe_Jane_123"


def _bytes_hold(folder: Path, text: str) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()] + \
           [str(p) for p in folder.rglob(f"*{text}*")]


def _pairs(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for k in range(3):
        a = rng.uniform(0, 255, (32, 32)).astype(np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-10, 10, (32, 32)), 0, 255).astype(np.uint8)
        for side, img in (("truth", a), ("pred", b)):
            (root / side / NAME).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / side / NAME / f"img{k}.png")
    return root / "truth", root / "pred"


def test_evaluate_outputs_name_the_patient_folder_only_by_its_pseudonym(tmp_path):
    truth, pred = _pairs(tmp_path)
    args = ["evaluate", "--truth", str(truth), "--pred", f"m={pred}", "--lpips", "none", "--no-fid", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "ev")]) == 0
    assert _bytes_hold(tmp_path / "ev", NAME) == []
    assert pseudonym(NAME).encode() in (tmp_path / "ev" / "per_image.csv").read_bytes()
    assert main([*args, "--out", str(tmp_path / "kept"), "--keep-patient-tags"]) == 0
    assert NAME.encode() in (tmp_path / "kept" / "per_image.csv").read_bytes()


def test_domain_report_names_the_input_as_the_outputs_do(tmp_path):
    v = read_volume(samples_dir("colin27") / "colin27" / "axial.nii.gz")
    write_volume(Volume(v.array[40:41, ::8, ::8].copy(), v.spacing, v.affine, "c", Path("x"), {}),
                 tmp_path / "in" / NAME / "lr.nii.gz")
    out = tmp_path / "out"
    assert main(["sample", "--checkpoint", "demo_sr_x4", "-i", str(tmp_path / "in"), "-o", str(out), "--steps", "2",
                 "--no-progress", "--device", "cpu"]) == 0
    assert (out / "domain_check.json").is_file() and _bytes_hold(out, NAME) == []
