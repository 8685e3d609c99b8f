"""A throwaway Debian PostgreSQL 15 cluster for tests.

`initdb` makes a cluster in a fresh directory under /tmp owned by the `postgres`
user (the server refuses to run as root, and pytest's own temp dirs are private
to root); the server listens on a Unix socket in that directory only, runs
without fsync (nothing here must survive a crash of the machine), is known by
its PID, and is stopped and removed in the fixture's `finally`. Tests get a
fresh database each (`create_database`, fast from a template) from one server
per session; a test that stops and starts the server makes its own.
Without root or the package the test is skipped, which CI
(GOSSAMER_REQUIRE_ALL=1) turns into a failure: scripts/test installs it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_names = itertools.count()


def unavailable() -> str | None:
    """Why this machine cannot run the server, or None."""
    if not (PG_BIN / "postgres").exists():
        return "PostgreSQL 15 is not installed (Debian package postgresql)"
    if os.geteuid() != 0:
        return "starting PostgreSQL as the postgres user needs root"
    return None


class PostgresServer:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gossamer-pg-"))
        shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.port = 5432  # only names the socket file: no TCP
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                       "--auth=trust", "--encoding=UTF8", "--no-sync"])
            self.start()
        except BaseException:
            self.destroy()
            raise

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.directory}&port={self.port}"

    def start(self) -> None:
        log = (self.directory / "postgres.log").open("ab")
        self.proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(self.data), "-k", str(self.directory),
             "-p", str(self.port), "-c", "listen_addresses=", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=300"],
            user="postgres", stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._await_ready()

    def stop(self) -> None:
        """Fast shutdown (SIGINT): sessions are ended, as when a server goes away."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement as the superuser (outside any transaction)."""
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(sql.encode())
            return cursor.fetchall() if cursor.description else []

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"test_{os.getpid()}_{next(_names)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(argv, user="postgres", capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')}")

    def _await_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: "
                                   + (self.directory / "postgres.log").read_text()[-2000:])
            try:
                self.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError(f"postgres did not answer on {self.directory}")


def started_server() -> PostgresServer:
    """A new server of the caller's own (stop it with destroy()); skips when it cannot run."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    return PostgresServer()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = started_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh database, dropped after the test."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
