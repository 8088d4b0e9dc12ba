"""A real, throwaway PostgreSQL server for the tests: initdb + pg_ctl on a temporary directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """Starts on 127.0.0.1 and a free port; as root, runs as the ``postgres`` user (initdb refuses root)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cogs-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres", group="postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as_user, *args], capture_output=True, text=True, check=False)
        if result.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n{log}")

    def start(self) -> PostgresServer:
        binary = shutil.which("initdb") or shutil.which("initdb", path="/usr/lib/postgresql/15/bin")
        if binary is None:
            raise RuntimeError("initdb not found: install PostgreSQL (apt-get install postgresql) or put it on PATH")
        bindir = str(Path(binary).resolve().parent)
        self._run(f"{bindir}/initdb", "-D", str(self.data), "-U", "cogs", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run(f"{bindir}/pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self._bindir = bindir
        return self

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres", driver=False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, database: str, driver: bool = True) -> str:
        scheme = "postgresql+psycopg" if driver else "postgresql"
        return f"{scheme}://cogs@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run(f"{self._bindir}/pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
