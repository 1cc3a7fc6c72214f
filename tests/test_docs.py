"""The README stays a short front page and the documentation site builds with no broken link."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_a_short_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 250
    targets = re.findall(r"\]\(([^)#\s]+)", text)
    assert targets, "README links no documentation page"
    for target in targets:
        assert (ROOT / target).is_file(), f"README links {target}, which does not exist"


def test_every_page_of_the_site_is_in_its_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f" {page.name}" in nav, f"docs/{page.name} is not in mkdocs.yml's nav"


def test_the_site_builds_strictly(tmp_path):
    """CI's only site build (.ci/run sets MEDDIFF_REQUIRE_DOCS=1, so a missing mkdocs fails, not skips)."""
    exe = Path(sys.executable).parent / "mkdocs"
    if shutil.which("mkdocs") is None and not exe.exists():
        if os.environ.get("MEDDIFF_REQUIRE_DOCS") == "1":
            pytest.fail("MEDDIFF_REQUIRE_DOCS=1 but mkdocs is not installed (pip install -e '.[docs]')")
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    cmd = [str(exe) if exe.exists() else "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    home = (tmp_path / "site" / "index.html").read_text()
    assert "Restore your own scan" in home  # the home page is README.md itself
