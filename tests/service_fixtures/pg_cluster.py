"""A throw-away PostgreSQL cluster, for the tests and the benchmark (not for production): Debian's
server binaries (``scripts/setup.sh --test`` installs them), ``initdb`` + ``pg_ctl`` in a
temporary folder, on a free loopback port. PostgreSQL refuses to run as root, so as root the
cluster belongs to, and runs as, the ``postgres`` system user."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SETUP_HINT = "run `bash scripts/setup.sh --test` as root (it installs Debian's postgresql package)"


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb and pg_ctl (or FACEVERIFY_PG_BIN)."""
    candidates = [os.environ["FACEVERIFY_PG_BIN"]] if os.environ.get("FACEVERIFY_PG_BIN") else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                         if Path(p).parent.name.isdigit() else 0, reverse=True)
    for c in candidates:
        if (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def missing_reason() -> str | None:
    """Why a cluster cannot be started here, or None."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return 'psycopg 3 is not installed (bash scripts/setup.sh installs it)'
    if find_bindir() is None:
        return f"PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin; {SETUP_HINT}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return f"running as root but there is no 'postgres' system user to run the cluster as; {SETUP_HINT}"
    return None


class PostgresCluster:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="faceverify-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        with socket.socket() as sock:  # a free loopback port
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._names = itertools.count()
        self.fsync = False
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        if self.as_root:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{self.log_tail()}")
        return proc

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def init(self, fsync: bool = False) -> "PostgresCluster":
        self.fsync = fsync
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        return self.start()

    def start(self) -> "PostgresCluster":
        # loopback TCP only, the socket in our folder. fsync off (default): the tests crash replicas,
        # not this server, and a busy CI disk would make every commit slow; the benchmark keeps it on
        durability = "" if self.fsync else "-c fsync=off -c full_page_writes=off "
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 {durability}-c max_connections=200"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self, prefix: str = "fv") -> str:
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
