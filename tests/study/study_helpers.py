"""Helpers of the reader-study tests (a minimal HTTP client, a server subprocess, test images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def bicubic_x4(image: np.ndarray) -> np.ndarray:
    """Downsample 4x (box average) then upsample back with PIL's bicubic filter, float32."""
    from PIL import Image

    h, w = image.shape
    small = image[: h // 4 * 4, : w // 4 * 4].reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3))
    return np.asarray(Image.fromarray(small.astype(np.float32)).resize((w, h), Image.BICUBIC), dtype=np.float32)


def make_study(path: Path, real_dir: Path, generated: dict[str, Path], **kw) -> tuple[Path, list[tuple[str, str]]]:
    from meddiff.study.create import create_study

    kw.setdefault("pairs", 4)
    kw.setdefault("readers", 2)
    return create_study(path, real_dir, generated, **kw)


class Client:
    """A minimal browser stand-in: http.client, one session cookie, no redirects followed."""

    def __init__(self, port: int):
        self.port = port
        self.cookie: str | None = None

    def request(self, method: str, path: str, form: dict | None = None, body: bytes | None = None):
        import http.client
        from urllib.parse import urlencode

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {}
        if form is not None:
            body = urlencode(form).encode()
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        set_cookie = r.getheader("Set-Cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";", 1)[0]
        return r.status, r, data

    def login(self, code: str) -> int:
        return self.request("POST", "/login", {"code": code})[0]

    def current(self) -> tuple[int | None, str | None]:
        """(pair id shown, form token) from /study; (None, None) when finished (redirect to /done)."""
        import re

        status, r, data = self.request("GET", "/study")
        if status == 303:
            return None, None
        assert status == 200, (status, data[:200])
        html = data.decode()
        pair = int(re.search(r'name="pair" value="(\d+)"', html).group(1))
        token = re.search(r'name="token" value="([^"]+)"', html).group(1)
        return pair, token

    def answer(self, pair: int, choice: str, token: str, **extra) -> int:
        return self.request("POST", "/answer", {"pair": pair, "choice": choice, "token": token, **extra})[0]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m meddiff.study.server STUDY --port P` in a subprocess (what `meddiff study serve` runs)."""

    def __init__(self, study: Path, port: int | None = None):
        import subprocess
        import sys
        import time
        import urllib.request

        self.port = port or free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "meddiff.study.server", str(study), "--port", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    out = self.proc.stdout.read().decode() if self.proc.poll() is not None else ""
                    self.kill()
                    raise RuntimeError(f"study server did not start: {out}")
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as in a crash or power cut of the server process."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
