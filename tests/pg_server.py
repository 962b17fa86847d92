"""A real PostgreSQL server for the tests: ``initdb`` into a temporary directory and
``pg_ctl start`` on a free loopback port, as a non-root user, stopped at the end.

Debian's ``postgresql`` package provides the binaries (``.ci/run`` installs it when
``/usr/lib/postgresql/*/bin/initdb`` is missing). PostgreSQL refuses to run as
root; tests run as root in CI, so the server runs as the package's ``postgres``
user (or ``nobody``), in a directory that user owns.

The superuser ``slm`` has the password ``slm-secret`` over TCP (scram-sha-256), so
a wrong password is really refused.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

USER = "slm"
PASSWORD = "slm-secret"


@dataclass(frozen=True)
class PgServer:
    """A running server: ``dsn(db)`` is a DSN for database ``db`` on it."""

    port: int
    datadir: Path
    bindir: Path
    run_as: str | None

    def dsn(self, db: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{db}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(args), user=self.run_as, capture_output=True, text=True, check=check, cwd=self.datadir.parent,
            env={**os.environ, "PGPASSWORD": PASSWORD},
        )

    def createdb(self, name: str) -> str:
        """Create database ``name``; returns its DSN."""
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return self.dsn(name)

    def restart(self) -> None:
        """Stop and start the server (every open connection is cut)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "restart",
                  "-l", str(self.datadir.parent / "server.log"))


def find_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


@contextlib.contextmanager
def pg_server() -> Iterator[PgServer]:
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL is not installed: `apt-get install -y postgresql` (.ci/run does this when it is missing)"
        )
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="slmgraph-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    root.chmod(0o700)
    datadir = root / "data"
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if user is not None:
        os.chown(pwfile, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    port = _free_port()
    server = PgServer(port, datadir, bindir, user)
    server._run(
        str(bindir / "initdb"), "-D", str(datadir), "-U", USER, f"--pwfile={pwfile}",
        "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync",
    )
    conf = datadir / "postgresql.conf"
    with conf.open("a") as f:
        f.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
        )
    server._run(str(bindir / "pg_ctl"), "-D", str(datadir), "-w", "-t", "60", "-l", str(root / "server.log"), "start")
    try:
        yield server
    finally:
        server._run(str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop", check=False)
        time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)
