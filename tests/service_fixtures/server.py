"""A real ``faceverify serve`` in a subprocess on 127.0.0.1, waited on through GET /health."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from faceverify.paths import REPO_ROOT

API_KEY = "test-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, model: Path | str | None, gallery: Path | str, *args: str, api_key: str | None = API_KEY, env: dict | None = None,
                 log_dir: Path | None = None, command: list[str] | None = None, cwd: Path | None = None):
        """``gallery``: a directory, or a postgresql:// URL (then ``log_dir`` says where the log goes).
        ``model`` None: no --model (the server's default). ``command``: how to run ``faceverify``
        (default: this interpreter's ``-m faceverify``), in ``cwd`` (default: the checkout)."""
        is_url = str(gallery).startswith("postgresql://")
        self.model, self.gallery, self.args = model, (str(gallery) if is_url else Path(gallery)), list(args)
        self.command, self.cwd = command or [sys.executable, "-m", "faceverify"], cwd or REPO_ROOT
        self.api_key = api_key
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        name = "pg" if is_url else self.gallery.name
        self.log_path = Path(log_dir or self.gallery.parent) / f"server-{name}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict:
        return {"X-API-Key": self.api_key} if self.api_key else {}

    def start(self, timeout: float = 900.0) -> "LiveServer":
        env = {k: v for k, v in {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}.items() if v is not None}  # None: unset
        env.pop("FACEVERIFY_API_KEY", None)
        if self.api_key:
            env["FACEVERIFY_API_KEY"] = self.api_key
        # one torch thread: on a shared 2-core CI box, OpenMP barriers of 2 threads cost 5-40x
        # (docs/service.md, "Threads"); batching, not intra-op threads, is what the tests exercise
        model = [] if self.model is None else ["--model", str(self.model)]
        cmd = [*self.command, "serve", *model, "--gallery", str(self.gallery),
               "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", "--torch-threads", "1", *self.args]
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not become ready in {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._log.close()

    def stop(self) -> int | None:
        """SIGTERM (graceful: the gallery writes its index snapshot), SIGKILL after 30 s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
