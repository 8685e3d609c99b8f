"""Joining a control plane whose API is served over TLS, with only what a new host
has: its URL, a join token in a file, and the CA bundle or its fingerprint. The
CLI verifies the API with the bundle; an impostor control plane on the same
address and port is refused by the agent, whichever way it was told to trust.

Across hosts (network namespaces), the same story is in test_universal.py."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossamer.ca import fingerprint
from gossamer.testing.envoy import free_port

pytestmark = pytest.mark.slow
GOSSAMER = [sys.executable, "-m", "gossamer"]


class TlsControlPlane:
    """`gossamer control-plane --api-tls` on loopback, in its own process."""

    def __init__(self, state: Path, api_port: int, xds_port: int) -> None:
        self.state, self.api_port, self.xds_port = state, api_port, xds_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def bundle_file(self) -> Path:
        return self.state / "ca-bundle.pem"

    @property
    def fingerprint(self) -> str:
        return fingerprint.show(fingerprint.of_bundle(self.bundle_file.read_text())[0])

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, trust_env=False, timeout=10,
                            verify=ssl.create_default_context(cafile=str(self.bundle_file)),
                            headers={"Authorization": f"Bearer {self.admin_token}"})

    @property
    def admin_token(self) -> str:
        return (self.state / "admin-token").read_text().strip()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*GOSSAMER, "control-plane", "--api-tls", "--state-dir", str(self.state),
             "--api-port", str(self.api_port), "--xds-port", str(self.xds_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with self.api() as api:
                    if api.get("/healthz").json().get("pid") == self.proc.pid:
                        return
            except (OSError, httpx.HTTPError):
                time.sleep(0.1)
        self.stop()
        raise AssertionError("control plane did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def join_token(self, service: str, path: Path) -> Path:
        with self.api() as api:
            resp = api.post("/api/v1/tokens", json={"scope": "join", "service": service})
        path.write_text(resp.json()["token"] + "\n")
        path.chmod(0o600)
        return path


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[TlsControlPlane]:
    plane = TlsControlPlane(tmp_path / "state", free_port(), free_port())
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without any Gossamer setting it might carry."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("GOSSAMER_")},
            "GOSSAMER_CONNECT_TIMEOUT": "10", **extra}


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GOSSAMER, *args], capture_output=True, text=True, timeout=60,
                          env=_env(**env), check=False)


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, out
    [line] = out.stderr.splitlines()
    assert line.startswith("error: "), line
    return line


def test_the_cli_verifies_the_api_with_the_bundle(cp: TlsControlPlane) -> None:
    env = {"GOSSAMER_SERVER": cp.url, "GOSSAMER_TOKEN": cp.admin_token}
    untrusted = one_line_error(cli("check", **env))
    assert f"the control plane at {cp.url} failed TLS verification" in untrusted
    assert "--ca-file or GOSSAMER_CA_FILE" in untrusted
    assert cli("--ca-file", str(cp.bundle_file), "check", **env).stdout.startswith(
        "control plane: ok")
    env["GOSSAMER_CA_FILE"] = str(cp.bundle_file)
    assert cli("check", **env).returncode == 0
    # A server that is someone else's: the bundle of another CA does not verify it.
    other = cp.state.parent / "other.pem"
    other.write_text(_another_ca_bundle())
    assert "failed TLS verification against --ca-file" in one_line_error(
        cli("check", **{**env, "GOSSAMER_CA_FILE": str(other)}))
    # Plaintext to the TLS API gets no answer; the error says why.
    plain = one_line_error(cli("check", **{**env, "GOSSAMER_SERVER":
                                            f"http://127.0.0.1:{cp.api_port}"}))
    assert "use https://" in plain

    # Fingerprints: from the API, from the file, and as openssl computes them.
    from_api = cli("ca", "fingerprint", **env).stdout.split()
    from_file = cli("ca", "fingerprint", "-f", str(cp.bundle_file)).stdout.split()
    assert from_api == from_file == [cp.fingerprint]
    # On a new host: the bundle, fetched without a token and kept only when pinned.
    pinned = cli("ca", "bundle", "--ca-fingerprint", cp.fingerprint,
                 GOSSAMER_SERVER=cp.url)
    assert pinned.stdout == cp.bundle_file.read_text()
    wrong = "sha256:" + "0" * 64
    refused = one_line_error(cli("ca", "bundle", "--ca-fingerprint", wrong,
                                 GOSSAMER_SERVER=cp.url))
    assert refused == (f"error: the control plane at {cp.url} is not the pinned one: its CA "
                       f"bundle ({cp.fingerprint}) does not hold --ca-fingerprint {wrong}")


def _another_ca_bundle() -> str:
    from datetime import UTC, datetime

    from gossamer.ca import pki

    return pki.generate_root("gossamer.local", datetime.now(UTC)).cert_pem()


def _proxy(cp_url: str, workdir: Path, *trust: str, token_file: Path,
           app_port: int = 0, name: str = "web-0") -> list[str]:
    argv = [*GOSSAMER, "proxy", "--service", "web", "--name", name,
            "--control-plane", cp_url, "--token-file", str(token_file), *trust,
            "--app-port", str(app_port), "--workdir", str(workdir), "--drain-seconds", "0.5"]
    if app_port:
        argv += ["--probe-path", "/healthz", "--", sys.executable, "-m", "gossamer.demo.app",
                 "--name", "web"]
    return argv


def _wait_proxy(cp: TlsControlPlane, node_id: str, agent: subprocess.Popen[bytes],
                log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    with cp.api() as api:
        while time.monotonic() < deadline:
            assert agent.poll() is None, log.read_text()
            for p in api.get("/api/v1/proxies").json():
                if p["node_id"] == node_id and p["connected"] and p["synced"]:
                    return dict(p)
            time.sleep(0.2)
    raise AssertionError(f"{node_id} did not connect: {log.read_text()}")


def test_an_agent_joins_with_a_pinned_fingerprint_and_a_token_file(cp: TlsControlPlane,
                                                                     tmp_path: Path) -> None:
    token_file = cp.join_token("web", tmp_path / "web.token")
    token = token_file.read_text().strip()
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen(
            _proxy(cp.url, tmp_path / "w", "--ca-fingerprint", cp.fingerprint,
                   token_file=token_file, app_port=free_port()),
            env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proxy = _wait_proxy(cp, "web-0.default", agent, log)
        assert proxy["metadata"]["inbound_address"] == "127.0.0.1"  # a loopback control plane
        with cp.api() as api:
            deadline = time.monotonic() + 30
            while (api.get("/api/v1/resources/Workload/default/web-0").json()
                   .get("spec", {}).get("health")) != "Healthy":
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        # The token is in no process's argv: neither the agent's nor its children's.
        for pid in [agent.pid, *_children(agent.pid)]:
            assert token not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    finally:
        os.kill(agent.pid, signal.SIGTERM)
        agent.wait(timeout=30)
    assert agent.returncode == 0, log.read_text()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    kids = [int(p) for p in out.stdout.split()]
    return kids + [g for k in kids for g in _children(k)]


def test_an_impostor_on_the_same_address_is_refused(tmp_path: Path) -> None:
    """The control plane the agent was told to trust goes; another one, with its own CA,
    takes its address and port, and even holds a valid join token for the agent. The
    agent refuses it with the pinned fingerprint and with the CA file alike."""
    api_port, xds_port = free_port(), free_port()
    real = TlsControlPlane(tmp_path / "real", api_port, xds_port)
    real.start()
    try:
        pin, bundle = real.fingerprint, real.bundle_file.read_text()
    finally:
        real.stop()
    impostor = TlsControlPlane(tmp_path / "impostor", api_port, xds_port)
    impostor.start()
    try:
        assert impostor.fingerprint != pin
        token_file = impostor.join_token("web", tmp_path / "web.token")
        ca_file = tmp_path / "real-ca.pem"
        ca_file.write_text(bundle)
        by_pin = one_line_error(cli(*_proxy(impostor.url, tmp_path / "a", "--ca-fingerprint",
                                            pin, token_file=token_file)[3:]))
        assert by_pin == (f"error: the control plane at {impostor.url} is not the pinned one: "
                          f"its CA bundle ({impostor.fingerprint}) does not hold "
                          f"--ca-fingerprint {pin}")
        by_file = one_line_error(cli(*_proxy(impostor.url, tmp_path / "b", "--ca-file",
                                             str(ca_file), token_file=token_file)[3:]))
        assert by_file.startswith(f"error: the control plane at {impostor.url} failed TLS "
                                  "verification against the CA bundle"), by_file
        with impostor.api() as api:
            assert api.get("/api/v1/proxies").json() == []
        bad_pin = one_line_error(cli(*_proxy(impostor.url, tmp_path / "c", "--ca-fingerprint",
                                             "not-hex", token_file=token_file)[3:]))
        assert bad_pin.startswith("error: --ca-fingerprint: 'not-hex' is not a SHA-256 "
                                  "fingerprint")
    finally:
        impostor.stop()


def test_after_a_root_rotation_the_agent_still_trusts_the_api(cp: TlsControlPlane,
                                                                tmp_path: Path) -> None:
    """The agent pinned the first root; once `switch` makes the new root sign the API's
    certificate, the agent verifies the API with the bundle the CA handed out since,
    so it can still register (here: again, after its Workload was removed, on a new
    connection to the restarted control plane)."""
    token_file = cp.join_token("web", tmp_path / "web.token")
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen(
            _proxy(cp.url, tmp_path / "w", "--ca-fingerprint", cp.fingerprint,
                   token_file=token_file, app_port=free_port()),
            env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proxy = _wait_proxy(cp, "web-0.default", agent, log)
        admin = f"http://127.0.0.1:{int(proxy['metadata']['admin_port'])}"
        with cp.api() as api:
            assert api.post("/api/v1/ca/rotate", json={"step": "begin"}).is_success

            def roots() -> int:  # the new bundle reached the agent (its 5 s poll)
                certs = httpx.get(f"{admin}/certs", trust_env=False, timeout=5).json()
                return len({ca["serial_number"] for c in certs["certificates"]
                            for ca in c.get("ca_cert", [])})
            deadline = time.monotonic() + 60
            while roots() < 2:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
            assert api.post("/api/v1/ca/rotate", json={"step": "switch"}).is_success
        # A restart drops every connection: the agent's next one meets the new signer.
        cp.stop()
        cp.start()
        with cp.api() as api:
            assert api.delete("/api/v1/resources/Workload/default/web-0").is_success
            deadline = time.monotonic() + 60  # the next heartbeat (5 s) registers again
            while api.get("/api/v1/resources/Workload/default/web-0").status_code != 200:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
    finally:
        os.kill(agent.pid, signal.SIGTERM)
        agent.wait(timeout=30)
    assert "failed TLS verification" not in log.read_text()
