"""Hostile or careless input against the real `gossamer` processes: bad files give
one line, text that is not valid Unicode never reaches the store (and what is
already there never breaks listing, across restarts), the body limit holds on the
wire, and the state directory is private whatever the umask."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.store.sqlite import SqliteStore
from tests.e2e.test_cli import ControlPlaneProcess

pytestmark = pytest.mark.slow

WORKLOAD = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": "web-1"},
            "spec": {"service": "web", "address": "127.0.0.1", "port": 8080}}


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    plane = ControlPlaneProcess(tmp_path / "state")
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


def gossamer(*args: str, stdin: bytes = b"", cp: ControlPlaneProcess | None = None,
             ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if cp is not None:
        env.update(GOSSAMER_SERVER=cp.url, GOSSAMER_TOKEN=cp.admin_token)
    out = subprocess.run([sys.executable, "-m", "gossamer", *args], input=stdin,
                         capture_output=True, env=env, timeout=60, check=False)
    return subprocess.CompletedProcess(out.args, out.returncode, out.stdout.decode(),
                                       out.stderr.decode())


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: ")
    return out.stderr.strip()


# ---------------------------------------------------------------- the CLI


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"kind: Service\nmetadata: {name: caf\xe9}\n")
    line = one_line_error(gossamer("apply", "-f", str(bad)))
    assert line == (f"error: {bad} is not UTF-8 text: byte 0xe9 at offset 34 "
                    "(invalid continuation byte)")
    piped = one_line_error(gossamer("apply", "-f", "-", stdin=bad.read_bytes()))
    assert piped.startswith("error: standard input is not UTF-8 text: byte 0xe9")
    up = one_line_error(gossamer("up", "-f", str(bad), "--state-dir", str(tmp_path / "s")))
    assert up.startswith(f"error: {bad} is not UTF-8 text")


def test_a_5000_digit_port_is_one_line() -> None:
    doc = ("apiVersion: mesh.gossamer.dev/v1alpha1\nkind: Service\nmetadata: {name: s}\n"
           f"spec: {{ports: [{{port: {'8' * 5000}}}]}}\n")
    line = one_line_error(gossamer("apply", "-f", "-", stdin=doc.encode()))
    assert line == ("error: invalid document: not valid YAML: integer too large "
                    "(5000 characters) at line 4, column 23")


def test_a_duplicate_key_is_one_line_with_the_key_and_line() -> None:
    doc = ("apiVersion: mesh.gossamer.dev/v1alpha1\nkind: Service\nmetadata: {name: s}\n"
           "spec:\n  ports: [{port: 80}]\n  ports: [{port: 81}]\n")
    line = one_line_error(gossamer("apply", "-f", "-", stdin=doc.encode()))
    assert "found duplicate key 'ports' (first at line 5) at line 6, column 3" in line


def test_plugin_ca_files_that_are_not_text_are_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_bytes(b"\xff\xfe\x00 not a certificate")
    line = one_line_error(gossamer(
        "control-plane", "--state-dir", str(tmp_path / "state"), "--api-port", "0",
        "--xds-port", "0", "--ca-cert", str(junk), "--ca-key", str(junk),
        "--ca-chain", str(junk)))
    assert line.startswith(f"error: certificate authority: {junk} is not UTF-8 text")


# ---------------------------------------------------------------- the API


def test_a_surrogate_from_a_join_token_is_refused_and_listing_survives_old_data(
        cp: ControlPlaneProcess) -> None:
    """The finding: a join token's Workload with an annotation `\\ud800` got a 500 but
    was stored, and from then on every `get workloads` failed, across restarts."""
    token = httpx.post(cp.url + "/api/v1/tokens", headers=cp.auth, trust_env=False,
                       json={"scope": "join", "service": "web"}).json()["token"]
    doc = json.loads(json.dumps(WORKLOAD))
    doc["metadata"]["annotations"] = {"a": "\ud800"}
    resp = httpx.post(cp.url + "/api/v1/apply", content=json.dumps(doc), trust_env=False,
                      headers={"Authorization": f"Bearer {token}",
                               "content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["fields"][0]["path"] == "metadata.annotations.a"
    listed = gossamer("get", "workloads", "-o", "json", cp=cp)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []

    # The same document written by a version without the check, then a restart.
    assert gossamer("apply", "-f", "-", cp=cp, stdin=json.dumps(
        {**WORKLOAD, "metadata": {"name": "web-2"}}).encode()).returncode == 0
    cp.stop()
    asyncio.run(_store_directly(cp.state / "gossamer.db", doc))
    cp.start()
    table = gossamer("get", "workloads", cp=cp)
    assert table.returncode == 0, table.stderr
    assert "Readable=False (InvalidText)" in table.stdout
    assert "web-2" in table.stdout
    deleted = gossamer("delete", "workload", "web-1", cp=cp)
    assert deleted.returncode == 0, deleted.stderr


async def _store_directly(path: Path, doc: dict[str, Any]) -> None:
    store = SqliteStore(str(path))
    try:
        body = json.loads(json.dumps(doc))
        body["metadata"]["namespace"] = "default"
        await store.put("Workload", "default", "web-1", body)
    finally:
        await store.close()


def _raw_request(cp: ControlPlaneProcess, head: str, chunks: int, *, end: bool) -> bytes:
    """POST `head` (headers) and `chunks` chunks of 64 KiB in chunked encoding, with
    or without the final chunk, then read the answer until the server closes."""
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", cp.api_port), timeout=20) as sock:
        sock.sendall(f"POST /api/v1/apply HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Connection: close\r\n{head}\r\n".encode()
                     + chunk * chunks + (b"0\r\n\r\n" if end else b""))
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except ConnectionResetError:  # closed with some of our body unread: fine
            pass
        return answer


def test_the_body_limit_holds_on_the_wire(cp: ControlPlaneProcess) -> None:
    chunked = "Transfer-Encoding: chunked\r\n"
    # No length is declared: the body is counted as it arrives. 17 chunks are just
    # over 1 MiB, and the body never ends, so the answer cannot wait for its end.
    refused = _raw_request(cp, chunked, 17, end=False)
    assert refused.startswith(b"HTTP/1.1 413 "), refused[:200]
    assert refused.endswith(b'{"error": "the request body is larger than 1 MiB", "fields": []}')
    # A declared length over the limit is refused before a byte of the body is sent.
    declared = _raw_request(cp, "Content-Length: 2097152\r\n", 0, end=False)
    assert declared.startswith(b"HTTP/1.1 413 "), declared[:200]
    # Under the limit, the body reaches the route (which wants a token).
    under = _raw_request(cp, chunked, 15, end=True)
    assert under.startswith(b"HTTP/1.1 401 "), under[:200]


# ---------------------------------------------------------------- the state dir


def test_the_state_dir_is_private_under_umask_000(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state"
    plane = ControlPlaneProcess(state)
    old = os.umask(0)
    try:
        plane.start()  # the child inherits umask 000
    finally:
        os.umask(old)
    try:
        for directory in (tmp_path / "new", state):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        for name in ("gossamer.db", "admin-token"):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    finally:
        plane.stop()
