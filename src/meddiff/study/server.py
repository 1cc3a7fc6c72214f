"""The reader web app (Flask) and its server.

Security model:
- A reader logs in with their secret code; the server records a random session id in the
  study database (``sessions``) and the cookie carries it with the reader id, signed with the
  study's secret key (HMAC, itsdangerous), HttpOnly, SameSite=Strict. Logging out deletes the
  session row, so a copy of the old cookie no longer works (sessions are revocable server-side;
  :func:`meddiff.study.db.end_sessions` also ends every session of one reader).
  Form fields never name a reader, so a reader cannot read or write another reader's answers;
  a forged or altered cookie is rejected. Every form carries a per-session token (CSRF).
- Images are served only as ``/image/<pair id>/<left|right>``: the file name comes from the
  study's ``pairs`` table and must resolve inside ``<study>/images``; no request path is ever
  used as a file path, and there is no static-file route.
- Form input is validated (numbers are ASCII digits only, ids bounded); anything malformed is a 400, an answer to a pair that is not the
  one being shown is a 409 (answers cannot be changed), a body over 16 kB is a 413.
- Answers are committed one transaction each (:func:`meddiff.study.db.record_answer`) before
  the response is sent, so a restart loses nothing, and a re-posted answer is not duplicated.
- Served by waitress (a production WSGI server), not Werkzeug's development server.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
import sqlite3
import threading
from pathlib import Path

from meddiff.errors import InputError
from meddiff.study import db, pages

log = logging.getLogger(__name__)

MAX_RT_MS = 24 * 3600 * 1000
MAX_ID = 999_999_999  # pair ids in URLs and forms: at most 9 digits (SQLite integers are 64-bit)
_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() accepts '²', which int() refuses


def _number(text: str) -> int | None:
    return int(text) if isinstance(text, str) and _NUMBER.fullmatch(text) else None


def _flask():
    try:
        import flask
    except ImportError:  # pragma: no cover - depends on the environment
        raise InputError("`meddiff study serve` needs Flask: pip install 'meddiff[study]' (or pip install flask)") from None
    return flask


def create_app(study: str | Path):
    """The Flask app serving the study folder `study` (made by `meddiff study create`)."""
    flask = _flask()
    study = Path(study).resolve()
    meta = _read_meta(study)
    app = flask.Flask("meddiff.study", static_folder=None)
    app.config.update(SECRET_KEY=meta["secret_key"], SESSION_COOKIE_NAME="meddiff_study", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", MAX_CONTENT_LENGTH=16 * 1024)
    site = _Site(flask, app, study, meta)
    _add_hooks(app, site)
    _add_login_routes(app, site)
    _add_study_routes(app, site)
    _add_image_route(app, site)
    return app


def _read_meta(study: Path) -> dict[str, str]:
    """The study database's meta table (InputError naming the file if it is missing or not a usable database)."""
    conn = db.open_study_db(study)  # InputError naming the file if it is missing or not a database
    try:
        conn.executescript(db.SCHEMA)  # no-op on a complete study; checks the file is a usable database
        return db.get_meta(conn)
    except sqlite3.DatabaseError as e:
        raise InputError(f"{study / db.STUDY_DB}: not a usable study database ({e})") from None
    finally:
        conn.close()


class _Site:
    """What every route of one study's app shares: the study folder, its options (feedback, confidence levels),
    the request's database connection, pages rendered from pages.py, the logged-in reader, the CSRF check."""

    def __init__(self, flask, app, study: Path, meta: dict[str, str]):
        self.flask, self.study, self.images = flask, study, (study / "images").resolve()
        self.feedback, self.confidence = meta.get("feedback", "end"), int(meta.get("confidence", "0"))
        self.jinja = app.jinja_env
        # compiled once; Flask's environment autoescapes templates made from strings
        self.base = app.jinja_env.from_string(pages.BASE)
        self.compiled: dict[str, object] = {}

    def conn(self) -> sqlite3.Connection:
        g = self.flask.g
        if "db" not in g:
            g.db = db.connect(self.study / db.STUDY_DB)
        return g.db

    def page(self, template: str, code: int = 200, **kw):
        if template not in self.compiled:
            self.compiled[template] = self.jinja.from_string(template)
        html = self.compiled[template].render(base=self.base, **kw)
        return self.flask.Response(html, status=code, mimetype="text/html")

    def error(self, status: int, message: str):
        return self.page(pages.ERROR, status, status=status, message=message)

    def current_reader(self) -> sqlite3.Row | None:
        session = self.flask.session
        return db.session_reader(self.conn(), session.get("sid"), session.get("rid"))

    def check_token(self) -> bool:
        session = self.flask.session
        token = self.flask.request.form.get("token", "")
        return bool(session.get("csrf")) and secrets.compare_digest(str(token), str(session["csrf"]))


def _add_hooks(app, site: _Site) -> None:
    """Closing the request's database, the security headers of every response, the error pages, and the
    routes that need no login (health check, style sheet, script)."""
    from flask import Response, g

    @app.teardown_appcontext
    def _close(exc):  # noqa: ARG001
        c = g.pop("db", None)
        if c is not None:
            c.close()

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"
        if resp.mimetype == "text/html":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(404)
    def _404(e):  # noqa: ARG001
        return site.error(404, "Not found.")

    @app.errorhandler(405)
    def _405(e):  # noqa: ARG001
        return site.error(405, "Method not allowed.")

    @app.errorhandler(413)
    def _413(e):  # noqa: ARG001
        return site.error(413, "Request too large.")

    @app.errorhandler(400)
    def _400(e):  # noqa: ARG001
        return site.error(400, "Bad request.")

    @app.get("/healthz")
    def healthz():
        return Response("ok\n", mimetype="text/plain")

    @app.get("/app.css")
    def css():
        return Response(pages.CSS, mimetype="text/css")

    @app.get("/app.js")
    def js():
        return Response(pages.JS, mimetype="text/javascript")


def _add_login_routes(app, site: _Site) -> None:
    """/ (the login page), /login (a reader code -> a new server-side session) and /logout (ends it)."""
    from flask import redirect, request, session

    @app.get("/")
    def index():
        if site.current_reader() is not None:
            return redirect("/study", 303)
        return site.page(pages.LOGIN, paused=request.args.get("paused") == "1")

    @app.post("/login")
    def login():
        code = request.form.get("code")
        if not isinstance(code, str) or not db.CODE_RE.match(code.strip()):
            return site.page(pages.LOGIN, 400, error="A reader code is 4-64 letters or digits.")
        row = site.conn().execute("SELECT reader_id FROM readers WHERE code = ?", (db.normalise_code(code),)).fetchone()
        if row is None:
            return site.page(pages.LOGIN, 403, error="Unknown reader code.")
        session.clear()
        session["rid"] = int(row["reader_id"])
        session["sid"] = db.start_session(site.conn(), int(row["reader_id"]))
        session["csrf"] = secrets.token_urlsafe(24)
        return redirect("/study", 303)

    @app.post("/logout")
    def logout():
        if not site.check_token():
            return site.error(400, "Missing or wrong form token; reload the page.")
        if isinstance(session.get("sid"), str):
            db.end_sessions(site.conn(), sid=session["sid"])
        session.clear()
        return redirect("/?paused=1", 303)


def _answer_fields(form, confidence: int) -> tuple[int, str, int | None, int | None] | str:
    """(pair, choice, confidence or None, reaction time in ms or None) of an answer form, or what is wrong with it."""
    pair, choice = form.get("pair", ""), form.get("choice", "")
    if _number(pair) is None:
        return f"pair {pair[:20]!r}: expected a pair number."
    if choice not in db.SIDES:
        return f"choice {choice[:20]!r}: expected left or right."
    conf = form.get("confidence", "")
    if confidence:
        if _number(conf) is None or not 1 <= int(conf) <= confidence:
            return f"confidence {conf[:20]!r}: expected a whole number from 1 to {confidence}."
        conf_v: int | None = int(conf)
    else:
        if conf != "":
            return "This study does not ask for a confidence rating."
        conf_v = None
    rt = form.get("rt_ms", "")
    if rt != "" and (_number(rt) is None or int(rt) > MAX_RT_MS):
        return f"rt_ms {rt[:20]!r}: expected a whole number of milliseconds."
    return int(pair), choice, conf_v, int(rt) if rt != "" else None


ANSWER_ERRORS = {"changed": (409, "This pair was already answered; answers cannot be changed."),
                 "not_current": (409, "This is not the pair being shown; reload the page."),
                 "unknown_pair": (404, "No such pair.")}


def _add_study_routes(app, site: _Site) -> None:
    """/study (the next pair), /answer (record one), /feedback/<pair> (with feedback "each") and /done."""
    from flask import redirect, request, session

    @app.get("/study")
    def study_page():
        reader = site.current_reader()
        if reader is None:
            return redirect("/", 303)
        prog = db.progress(site.conn(), reader["reader_id"])
        if prog.next_pair is None:
            return redirect("/done", 303)
        return site.page(pages.PAIR, label=reader["label"], done=prog.done, total=prog.total, pair_id=prog.next_pair,
                         token=session["csrf"], confidence=site.confidence, conf_keys=pages.CONF_KEYS)

    @app.post("/answer")
    def answer():
        reader = site.current_reader()
        if reader is None:
            return site.error(401, "Not logged in: enter your reader code.")
        if not site.check_token():
            return site.error(400, "Missing or wrong form token; reload the page.")
        fields = _answer_fields(request.form, site.confidence)
        if isinstance(fields, str):
            return site.error(400, fields)
        status = db.record_answer(site.conn(), reader["reader_id"], *fields)
        if status in ANSWER_ERRORS:
            return site.error(*ANSWER_ERRORS[status])
        if site.feedback == "each":
            return redirect(f"/feedback/{fields[0]}", 303)
        return redirect("/study", 303)

    @app.get(f"/feedback/<int(max={MAX_ID}):pair_id>")
    def feedback_page(pair_id: int):
        reader = site.current_reader()
        if reader is None:
            return redirect("/", 303)
        if site.feedback != "each":
            return site.error(404, "Not found.")
        row = site.conn().execute("SELECT a.choice, a.correct, p.real_side FROM answers a JOIN pairs p ON p.pair_id = a.pair_id "
                                  "WHERE a.reader_id = ? AND a.pair_id = ?", (reader["reader_id"], pair_id)).fetchone()
        if row is None:
            return site.error(404, "Not found.")
        return site.page(pages.FEEDBACK, correct=bool(row["correct"]), real_side=row["real_side"], choice=row["choice"])

    @app.get("/done")
    def done():
        reader = site.current_reader()
        if reader is None:
            return redirect("/", 303)
        prog = db.progress(site.conn(), reader["reader_id"])
        if prog.next_pair is not None:
            return redirect("/study", 303)
        correct = site.conn().execute("SELECT COALESCE(SUM(correct), 0) FROM answers WHERE reader_id = ?",
                                      (reader["reader_id"],)).fetchone()[0]
        pct = f"{100.0 * correct / prog.total:.0f}" if prog.total else "0"
        return site.page(pages.DONE, total=prog.total, correct=correct, pct=pct, show_score=site.feedback != "none",
                         token=session["csrf"])


def _add_image_route(app, site: _Site) -> None:
    """/image/<pair>/<left|right>: the file named in the pairs table, only from inside <study>/images."""
    from flask import send_file

    @app.get(f"/image/<int(max={MAX_ID}):pair_id>/<side>")
    def image(pair_id: int, side: str):
        if site.current_reader() is None:
            return site.error(401, "Not logged in.")
        if side not in db.SIDES:
            return site.error(404, "Not found.")
        row = site.conn().execute("SELECT left_png, right_png FROM pairs WHERE pair_id = ?", (pair_id,)).fetchone()
        if row is None:
            return site.error(404, "Not found.")
        path = (site.images / row[f"{side}_png"]).resolve()
        if path.parent != site.images or not path.is_file():  # the table itself must not point outside images/
            return site.error(404, "Not found.")
        resp = send_file(path, mimetype="image/png", conditional=True, max_age=0, etag=False, last_modified=None)
        resp.headers["Cache-Control"] = "private, no-store"
        return resp


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def check_address(host: str, port: int) -> None:
    """InputError unless `port` is 0..65535 and `host` names an interface of this machine."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"--port {port}: expected a TCP port from 1 to 65535 (0 = any free port)")
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as e:
        raise InputError(f"--host {host!r}: not an address or host name this machine can listen on ({e}); "
                         "expected e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None


class StudyServer:
    """The study app under waitress: ``.serve_forever()``, ``.shutdown()`` (from another thread),
    ``.server_close()``, ``.server_port``. The serving thread closes the sockets itself, so a
    shutdown never closes a socket under a running select()."""

    def __init__(self, app, host: str, port: int, threads: int = 8):
        from waitress.server import create_server

        try:
            self._server = create_server(app, host=host, port=port, threads=threads, ident="meddiff-study",
                                         clear_untrusted_proxy_headers=True)
        except OSError as e:
            raise InputError(f"--host {host!r} --port {port}: cannot listen there ({e.strerror or e}); expected a free "
                             "port on an interface of this machine") from None
        self.server_port = int(self._server.effective_port)
        self._stop, self._done, self._closed = threading.Event(), threading.Event(), False

    def serve_forever(self) -> None:
        from waitress import wasyncore

        adj = self._server.adj
        try:
            while not self._stop.is_set():
                wasyncore.loop(timeout=adj.asyncore_loop_timeout, map=self._server._map, use_poll=adj.asyncore_use_poll, count=1)
        finally:
            self._close()
            self._done.set()

    def shutdown(self) -> None:
        self._stop.set()
        if not self._closed:
            self._server.pull_trigger()  # wake the select() of the serving thread
            self._done.wait(10)

    def server_close(self) -> None:
        if not self._closed and not self._stop.is_set():
            self._close()

    def _close(self) -> None:
        from waitress import wasyncore

        if not self._closed:
            self._closed = True
            self._server.task_dispatcher.shutdown()
            wasyncore.close_all(self._server._map)


def make_server(study: str | Path, host: str = "127.0.0.1", port: int = 8000) -> StudyServer:
    """A multi-threaded production WSGI server (waitress) for the study. Port 0 picks a free port
    (see ``.server_port``). InputError for a bad port, host or study database."""
    check_address(host, port)
    try:
        import waitress  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise InputError("`meddiff study serve` needs waitress: pip install 'meddiff[study]' (or pip install waitress)") from None
    return StudyServer(create_app(study), host, port)


def serve(study: str | Path, host: str = "127.0.0.1", port: int = 8000, quiet: bool = True) -> None:
    """Serve until interrupted. Prints the URL; warns when not bound to the loopback interface."""
    if quiet:
        logging.getLogger("waitress").setLevel(logging.WARNING)
    server = make_server(study, host, port)
    if not is_loopback(host):
        log.warning("listening on %s: readers' codes travel over plain HTTP; use this only on a trusted network "
                    "or behind an HTTPS reverse proxy", host)
    print(f"serving study {study} at http://{host}:{server.server_port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    """``python -m meddiff.study.server STUDY [--host H] [--port P]`` (what `meddiff study serve` runs)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m meddiff.study.server")
    p.add_argument("study", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serve(a.study, a.host, a.port)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
