"""The reader web app against a real HTTP server: traversal, cross-reader access, bad input,
restart mid-study (SIGKILL) and 20 concurrent readers."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("flask")

from study_helpers import Client, ServerProcess, make_study  # noqa: E402

from meddiff.study import db  # noqa: E402
from meddiff.study.server import make_server  # noqa: E402


@pytest.fixture()
def live(tmp_path, real_dir, generated_dirs):
    """A study (2 methods x 4 pairs, 2 readers, 5 confidence levels) served in-process on a free port."""
    study, readers = make_study(tmp_path / "s", real_dir, generated_dirs, readers=3, confidence=5)
    server = make_server(study, port=0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield study, readers, server.server_port
    server.shutdown()
    server.server_close()


def answers_in_db(study: Path) -> list[tuple]:
    with sqlite3.connect(study / db.STUDY_DB) as c:
        return c.execute("SELECT reader_id, pair_id, choice, confidence FROM answers ORDER BY answer_id").fetchall()


def test_images_only_by_pair_id_no_traversal(live):
    study, readers, port = live
    c = Client(port)
    assert c.request("GET", "/image/1/left")[0] == 401  # not logged in
    assert c.login(readers[0][1]) == 303
    status, r, data = c.request("GET", "/image/1/left")
    assert status == 200 and r.getheader("Content-Type") == "image/png"
    assert data == (study / "images" / "00001_left.png").read_bytes()
    secrets = [(study / db.STUDY_DB).read_bytes()[:16], b'"real_side"', b"root:"]
    attempts = ["/image/../study.sqlite", "/image/1/../../study.json", "/image/1/..%2F..%2Fstudy.json",
                "/image/%2e%2e/study.sqlite", "/image/1/%2e%2e%2f%2e%2e%2fstudy.json", "/image/1/left/../../../study.sqlite",
                "/image//etc/passwd", "/image/1//etc/passwd", "/image/1/%2Fetc%2Fpasswd", "//etc/passwd", "/etc/passwd",
                "/images/00001_left.png", "/static/../study.sqlite", "/study.sqlite", "/study.json", "/image/1/left.png",
                "/image/1/LEFT", "/image/-1/left", "/image/99999/left", "/image/1/%00left", "/image/1/..%5c..%5cstudy.json"]
    for path in attempts:
        status, r, data = c.request("GET", path)
        assert status in (400, 404), (path, status)
        assert not any(s in data for s in secrets), path
    # even a tampered pairs table cannot make the server leave images/
    with sqlite3.connect(study / db.STUDY_DB) as conn:
        conn.execute("UPDATE pairs SET left_png = '../study.json', right_png = '/etc/passwd' WHERE pair_id = 1")
    assert c.request("GET", "/image/1/left")[0] == 404
    assert c.request("GET", "/image/1/right")[0] == 404


def test_reader_cannot_touch_another_readers_answers(live):
    study, readers, port = live
    a, b = Client(port), Client(port)
    a.login(readers[0][1])
    b.login(readers[1][1])
    pa, ta = a.current()
    pb, tb = b.current()
    # form fields naming another reader are ignored: the answer is A's
    assert a.answer(pa, "left", ta, confidence=3, reader=2, reader_id=2, rid=2) == 303
    assert answers_in_db(study) == [(1, pa, "left", 3)]
    assert b.current() == (pb, tb)  # B still at their first pair, nothing answered
    # B's token in A's session, and a pair that is not A's current one, are refused
    pa2, ta2 = a.current()
    assert a.answer(pa2, "left", tb, confidence=3) == 400
    other = next(p for p in range(1, 9) if p not in (pa, pa2))
    assert a.answer(other, "left", ta2, confidence=3) == 409
    # A cannot change an answer once given (a retry with the same choice is a no-op)
    assert a.answer(pa, "right", ta2, confidence=3) == 409
    assert a.answer(pa, "left", ta2, confidence=3) == 303
    # a cookie rewritten to B's id is rejected (signature), as is one signed with another key
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    forged = Client(port)
    fake = Flask("x")
    fake.secret_key = "not the study's key"
    forged.cookie = "meddiff_study=" + SecureCookieSessionInterface().get_signing_serializer(fake).dumps({"rid": 2, "csrf": "t"})
    assert forged.answer(pb, "left", "t", confidence=3) == 401
    payload, rest = a.cookie.split("=", 1)[1].split(".", 1)
    tampered = Client(port)
    tampered.cookie = "meddiff_study=" + payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + rest
    assert tampered.answer(pb, "left", ta2, confidence=3) == 401
    assert tampered.request("GET", "/study")[0] == 303  # back to the login page
    assert answers_in_db(study) == [(1, pa, "left", 3)]
    assert b.current() == (pb, tb)


def test_bad_form_input_is_rejected(live):
    study, readers, port = live
    c = Client(port)
    for code in ["", "a", "x" * 65, "<script>", "../../etc", "abc def"]:
        assert c.login(code) == 400, code
    assert c.login("ZZZZZZZZ") == 403
    assert c.request("POST", "/login", body=b"code=" + b"A" * 40000)[0] == 413
    assert c.login(readers[0][1].lower()) == 303  # codes are case-insensitive
    pair, token = c.current()
    good = {"pair": pair, "choice": "left", "token": token, "confidence": "2", "rt_ms": "1234"}
    bad = [{"choice": "middle"}, {"choice": ""}, {"choice": None}, {"pair": "abc"}, {"pair": "-1"}, {"pair": "1e3"},
           {"pair": None}, {"pair": "9" * 30}, {"confidence": "9"}, {"confidence": "0"}, {"confidence": None},
           {"confidence": "2.5"}, {"rt_ms": "-5"}, {"rt_ms": "abc"}, {"rt_ms": str(10**12)}, {"token": None}, {"token": "x"}]
    for change in bad:
        form = {k: v for k, v in {**good, **change}.items() if v is not None}
        assert c.request("POST", "/answer", form)[0] == 400, change
    assert c.request("GET", "/answer")[0] == 405
    assert c.request("POST", "/answer", {**good, "pair": 99999})[0] == 404
    assert answers_in_db(study) == []
    assert c.request("POST", "/answer", good)[0] == 303
    assert answers_in_db(study) == [(1, pair, "left", 2)]


def test_no_confidence_field_in_a_study_without_it(tmp_path, real_dir, generated_dirs):
    study, readers = make_study(tmp_path / "s", real_dir, {"bicubic": generated_dirs["bicubic"]}, pairs=2, readers=1,
                                feedback="each")
    server = make_server(study, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        c = Client(server.server_port)
        c.login(readers[0][1])
        pair, token = c.current()
        assert c.answer(pair, "left", token, confidence="3") == 400
        status, r, _ = c.request("POST", "/answer", {"pair": pair, "choice": "right", "token": token})
        assert status == 303 and r.getheader("Location").endswith(f"/feedback/{pair}")  # feedback after each answer
        real_side = sqlite3.connect(study / db.STUDY_DB).execute("SELECT real_side FROM pairs WHERE pair_id = ?", (pair,)).fetchone()[0]
        html = c.request("GET", f"/feedback/{pair}")[2].decode()
        assert f"The real image was on the <b>{real_side}</b>" in html
    finally:
        server.shutdown()
        server.server_close()


def test_server_killed_mid_study_keeps_answers_without_duplicates(tmp_path, real_dir, generated_dirs):
    study, readers = make_study(tmp_path / "s", real_dir, generated_dirs, pairs=3, readers=1)
    server = ServerProcess(study)
    try:
        c = Client(server.port)
        c.login(readers[0][1])
        given = []
        for i in range(4):
            pair, token = c.current()
            choice = ("left", "right")[i % 2]
            assert c.answer(pair, choice, token) == 303
            given.append((pair, choice))
        server.kill()  # SIGKILL right after the 4th answer was acknowledged
        server = ServerProcess(study, server.port)
        # the browser retries the last POST (reload after the crash): no duplicate, same session cookie
        assert c.answer(given[-1][0], given[-1][1], token) == 303
        while True:
            pair, token = c.current()
            if pair is None:
                break
            assert c.answer(pair, "left", token) == 303
            given.append((pair, "left"))
    finally:
        server.kill()
    rows = answers_in_db(study)
    assert [(p, ch) for _, p, ch, _ in rows] == given
    assert len(given) == 6 and len({p for p, _ in given}) == 6
    with sqlite3.connect(study / db.STUDY_DB) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_twenty_concurrent_readers_lose_nothing(tmp_path, real_dir, generated_dirs):
    """20 threads, one per reader, answer all 10 pairs as fast as they can; every answer is also
    re-posted once (a retry). Every acknowledged answer is in the database exactly once."""
    n_readers = 20
    study, readers = make_study(tmp_path / "s", real_dir, generated_dirs, pairs=5, readers=n_readers)
    server = ServerProcess(study)
    sent: dict[str, list[tuple[int, str]]] = {}
    errors: list[str] = []
    barrier = threading.Barrier(n_readers)

    def reader(label: str, code: str, k: int) -> None:
        try:
            c = Client(server.port)
            assert c.login(code) == 303
            barrier.wait()
            mine = []
            while True:
                pair, token = c.current()
                if pair is None:
                    break
                choice = ("left", "right")[(pair + k) % 2]
                assert c.answer(pair, choice, token) == 303
                assert c.answer(pair, choice, token) == 303  # retry: no-op
                mine.append((pair, choice))
            sent[label] = mine
        except Exception as e:  # noqa: BLE001
            errors.append(f"{label}: {e!r}")

    threads = [threading.Thread(target=reader, args=(label, code, k)) for k, (label, code) in enumerate(readers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.perf_counter() - t0
    server.kill()
    assert not errors, errors
    with sqlite3.connect(study / db.STUDY_DB) as conn:
        rows = conn.execute("SELECT r.label, a.pair_id, a.choice FROM answers a JOIN readers r USING (reader_id) "
                            "ORDER BY a.answer_id").fetchall()
    assert len(rows) == n_readers * 10
    for label, _ in readers:
        assert [(p, ch) for lb, p, ch in rows if lb == label] == sent[label]
        assert sorted(p for p, _ in sent[label]) == list(range(1, 11))
    print(f"\n20 concurrent readers: {len(rows)} answers (+{len(rows)} retries) in {elapsed:.2f} s "
          f"= {len(rows) / elapsed:.0f} answers/s ({3 * len(rows) / elapsed:.0f} requests/s incl. page loads and retries)")


def test_huge_ids_and_non_ascii_digits_are_client_errors_not_500(live):
    study, readers, port = live
    c = Client(port)
    c.login(readers[0][1])
    for path in ("/image/99999999999999999999/left", "/image/1000000000/left", "/feedback/99999999999999999999"):
        assert c.request("GET", path)[0] == 404, path
    pair, token = c.current()
    for bad in ("\u00b2", "\u0661", "\uff11", "1\u00b2", str(pair) + "\u0660"):  # superscript 2, Arabic-Indic / fullwidth digits
        assert c.answer(bad, "left", token, confidence=3) == 400, bad
        assert c.answer(pair, "left", token, confidence=bad) == 400, bad
        assert c.answer(pair, "left", token, confidence=3, rt_ms=bad) == 400, bad
    assert answers_in_db(study) == []
    assert c.answer(pair, "left", token, confidence=3) == 303  # the well-formed answer still works


def test_logout_revokes_the_session_server_side(live):
    study, readers, port = live
    c = Client(port)
    c.login(readers[0][1])
    pair, token = c.current()
    stolen = c.cookie
    assert c.request("POST", "/logout", {"token": token})[0] == 303
    replay = Client(port)
    replay.cookie = stolen  # the old cookie, still correctly signed
    assert replay.request("GET", "/study")[0] == 303  # sent back to the login page
    assert replay.request("GET", "/image/1/left")[0] == 401
    assert replay.answer(pair, "left", token, confidence=3) == 401
    assert answers_in_db(study) == []
    with sqlite3.connect(study / db.STUDY_DB) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
    # revoking every session of a reader (e.g. a leaked code) also works server-side
    a, b = Client(port), Client(port)
    a.login(readers[1][1])
    b.login(readers[1][1])
    conn = db.connect(study / db.STUDY_DB)
    try:
        assert db.end_sessions(conn, reader_id=2) == 2
    finally:
        conn.close()
    assert a.request("GET", "/study")[0] == 303 and b.request("GET", "/study")[0] == 303


def test_served_by_waitress(live):
    _, _, port = live
    status, r, _ = Client(port).request("GET", "/healthz")
    assert status == 200 and r.getheader("Server") == "meddiff-study"
