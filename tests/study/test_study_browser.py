"""End to end in headless Chromium (Debian's `chromium`, driven by Playwright; no browser download):
a reader logs in, answers with mouse and keyboard, reloads, pauses and resumes, finishes, and
`meddiff study results` reports exactly those answers.

Set MEDDIFF_STUDY_SCREENSHOT=docs/study_page.png to also save the study page screenshot there.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sqlite3
from contextlib import redirect_stdout
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _unavailable(reason: str) -> None:
    """Skip, or fail where the browser test is required (.ci/run sets MEDDIFF_REQUIRE_BROWSER=1)."""
    if os.environ.get("MEDDIFF_REQUIRE_BROWSER") == "1":
        pytest.fail(f"MEDDIFF_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def _playwright():
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: `pip install playwright` (or the dev extra) to run the browser test; "
                    "no `playwright install` is needed, Debian's chromium is used")
    if CHROMIUM is None:
        _unavailable("chromium not found: `apt-get install chromium` (Debian) to run the browser test")
    return sync_playwright, expect


def test_reader_in_chromium_mouse_keyboard_reload_resume_and_results(tmp_path, real_dir, generated_dirs):
    sync_playwright, expect = _playwright()
    pytest.importorskip("flask")
    from study_helpers import ServerProcess

    from meddiff.cli import main

    study = tmp_path / "study"
    with redirect_stdout(io.StringIO()) as out:
        assert main(["study", "create", str(study), "--real", str(real_dir), "--method", f"bicubic={generated_dirs['bicubic']}",
                     "--method", f"noisy={generated_dirs['noisy']}", "--pairs", "3", "--seed", "7", "--readers", "1",
                     "--confidence", "3"]) == 0
    code = out.getvalue().split("reader1: ")[1].split()[0]
    server = ServerProcess(study)
    base = f"http://127.0.0.1:{server.port}"
    given: list[tuple[int, str, int]] = []  # (pair, choice, confidence) as the reader gave them
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1000, "height": 560})
            page.goto(base + "/")
            page.fill("#code", code.lower())
            page.click("#login")
            progress = page.locator("#progress-text")

            def shown_pair() -> int:
                return int(page.locator("input[name=pair]").get_attribute("value"))

            def images_loaded() -> None:
                # the page's load event: app.js (the keyboard handler) and both images are in;
                # a key pressed before app.js arrives does nothing (seen once in CI: a flaky test)
                page.wait_for_load_state("load")
                page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")

            # pair 1: mouse (confidence 2, then click the left image)
            expect(progress).to_have_text("Pair 1 of 6")
            images_loaded()
            pair = shown_pair()
            page.check("input[name=confidence][value='2']")
            page.click("#left")
            given.append((pair, "left", 2))
            # pair 2: keyboard (E = confidence 3, right arrow)
            expect(progress).to_have_text("Pair 2 of 6")
            images_loaded()
            pair = shown_pair()
            # zoom and window/level change both images alike and answer nothing
            page.keyboard.press("+")
            page.keyboard.press("]")
            styles = page.eval_on_selector_all(".side img", "els => els.map(i => [i.style.transform, i.style.filter])")
            assert styles == [["scale(1.25)", "contrast(1.2) brightness(1)"]] * 2, styles
            page.keyboard.press("0")
            assert page.eval_on_selector("#left img", "i => i.style.transform") == "scale(1)"
            expect(progress).to_have_text("Pair 2 of 6")
            page.keyboard.press("e")
            page.keyboard.press("ArrowRight")
            given.append((pair, "right", 3))
            # pair 3: keyboard (Q = confidence 1, '1' = left)
            expect(progress).to_have_text("Pair 3 of 6")
            images_loaded()
            pair = shown_pair()
            page.keyboard.press("q")
            page.keyboard.press("1")
            given.append((pair, "left", 1))
            # reload mid-study: the same (4th) pair is shown again
            expect(progress).to_have_text("Pair 4 of 6")
            pair = shown_pair()
            images_loaded()
            page.screenshot(path=str(tmp_path / "study_page.png"))
            if os.environ.get("MEDDIFF_STUDY_SCREENSHOT"):
                page.screenshot(path=os.environ["MEDDIFF_STUDY_SCREENSHOT"])
            page.reload()
            expect(progress).to_have_text("Pair 4 of 6")
            images_loaded()
            assert shown_pair() == pair
            # pair 4: a choice without a confidence level is blocked by the form, then mouse
            page.keyboard.press("ArrowLeft")
            expect(progress).to_have_text("Pair 4 of 6")
            page.check("input[name=confidence][value='1']")
            page.click("#right")
            given.append((pair, "right", 1))
            # pause, log in again, resume at pair 5
            expect(progress).to_have_text("Pair 5 of 6")
            page.click("#pause")
            expect(page.locator("#code")).to_be_visible()
            page.fill("#code", code)
            page.click("#login")
            expect(progress).to_have_text("Pair 5 of 6")
            images_loaded()
            pair = shown_pair()
            page.keyboard.press("w")
            page.keyboard.press("2")
            given.append((pair, "right", 2))
            expect(progress).to_have_text("Pair 6 of 6")
            images_loaded()
            pair = shown_pair()
            page.keyboard.press("e")
            page.keyboard.press("ArrowLeft")
            given.append((pair, "left", 3))
            expect(page.locator("#done-text")).to_contain_text("all 6 pairs")
            score_text = page.locator("#score").inner_text()
            browser.close()
    finally:
        server.kill()

    with sqlite3.connect(study / "study.sqlite") as conn:
        real_side = dict(conn.execute("SELECT pair_id, real_side FROM pairs").fetchall())
    n_correct = sum(real_side[p] == ch for p, ch, _ in given)
    assert score_text.startswith(f"You picked the real image in {n_correct} of 6 pairs")
    with redirect_stdout(io.StringIO()) as out:
        assert main(["study", "results", str(study)]) == 0
    rows = list(csv.DictReader((study / "results" / "answers.csv").open()))
    assert [(int(r["pair_id"]), r["choice"], int(r["confidence"])) for r in rows] == given
    assert [int(r["correct"]) for r in rows] == [int(real_side[p] == ch) for p, ch, _ in given]
    assert all(r["rt_ms"] != "" and int(r["rt_ms"]) >= 0 for r in rows)
    all_line = next(line for line in out.getvalue().splitlines() if line.startswith("all "))
    assert all_line.split()[1:3] == ["6", str(n_correct)]
    assert "reader1" in (study / "results" / "report.html").read_text()
