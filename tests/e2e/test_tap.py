"""`gossamer tap` against the running demo: live requests as catalog's sidecars see
them, with the verified caller, status and latency; filters; no bodies by default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from gossamer.tap.events import tap_config
from tests.e2e.conftest import Mesh

pytestmark = pytest.mark.slow


def _tap(mesh: Mesh, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "GOSSAMER_SERVER": mesh.run.server,
           "GOSSAMER_TOKEN": mesh.run.admin_token_file.read_text().strip()}
    return subprocess.Popen([sys.executable, "-m", "gossamer", "tap", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _drive(mesh: Mesh, proc: subprocess.Popen[str], paths: list[str],
           headers: dict[str, str] | None = None) -> tuple[str, str]:
    """Send requests through frontend until the tap ends (bounded: 20 s, 400 requests)."""
    deadline = time.monotonic() + 20
    with mesh.client_via("frontend") as client:
        for i in range(400):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            path = paths[i % len(paths)]
            resp = client.get(f"http://catalog{path}", headers=headers or {})
            assert resp.status_code == 200, resp.text
            time.sleep(0.02)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out, err


def test_tap_streams_matching_requests_with_caller_status_and_latency(mesh: Mesh) -> None:
    proc = _tap(mesh, "catalog", "--json", "--max", "5", "--seconds", "20",
                "--path", "/items", "--method", "GET")
    out, err = _drive(mesh, proc, ["/items?q=1", "/other"],
                      headers={"Authorization": "Bearer secret-value", "x-trace-me": "yes"})
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 5, out
    for event in events:
        assert event["source"] == "gossamer.local/ns/default/sa/frontend"  # verified mTLS
        assert event["destination"].startswith("catalog-v1-")
        assert (event["method"], event["path"], event["status"]) == ("GET", "/items?q=1", 200)
        assert 0 < event["latency_ms"] < 5000
        assert event["request_headers"]["authorization"] == "<redacted>"
        assert event["request_headers"]["x-trace-me"] == "yes"
        assert "request_body" not in event  # bodies only when asked for
        assert "x-forwarded-client-cert" not in event["request_headers"]


def test_tap_prints_one_line_per_request(mesh: Mesh) -> None:
    proc = _tap(mesh, "catalog", "--max", "2", "--seconds", "20")
    out, err = _drive(mesh, proc, ["/items"])
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, out
    for line in lines:
        assert " gossamer.local/ns/default/sa/frontend -> catalog-v1-" in line
        assert " GET /items  200  " in line
        assert line.endswith("ms")


def test_tap_of_an_unknown_service_is_a_clear_error(mesh: Mesh) -> None:
    proc = _tap(mesh, "nosuch", "--seconds", "1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.strip() == "error: no connected sidecar serves default/nosuch"


def test_tap_shows_bodies_only_when_asked(mesh: Mesh) -> None:
    proc = _tap(mesh, "catalog", "--json", "--bodies", "--max", "1", "--seconds", "20")
    out, err = _drive(mesh, proc, ["/items"])
    assert proc.returncode == 0, err
    event = json.loads(out.splitlines()[0])
    body = json.loads(event["response_body"])
    assert body["service"] == "catalog"  # catalog's own answer, as it left the sidecar


def _admin_taps(mesh: Mesh, seconds: float) -> list[subprocess.Popen[bytes]]:
    """A tap config POSTed straight to each catalog sidecar's admin (no session)."""
    body = json.dumps(tap_config(None, None, False))
    return [subprocess.Popen(["curl", "-s", "--max-time", str(seconds), "-X", "POST",
                              "--data-binary", body, f"http://127.0.0.1:{i.admin_port}/tap"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            for i in mesh.run.instances if i.workload.startswith("catalog")]


def _inbound_tap_disabled(mesh: Mesh) -> list[bool]:
    """Per catalog sidecar: does its inbound route (as Envoy has it) disable tap?"""
    out = []
    for i in mesh.run.instances:
        if not i.workload.startswith("catalog"):
            continue
        dump = httpx.get(f"http://127.0.0.1:{i.admin_port}/config_dump"
                         "?resource=dynamic_route_configs", timeout=5, trust_env=False).json()
        (inbound,) = [c["route_config"] for c in dump["configs"]
                      if c["route_config"]["name"] == "inbound"]
        route = inbound["virtual_hosts"][0]["routes"][0]
        tap = route.get("typed_per_filter_config", {}).get("envoy.filters.http.tap", {})
        out.append(bool(tap.get("disabled")))
    return out


def test_without_a_session_the_tap_filter_is_off_the_request_path(mesh: Mesh) -> None:
    """Idle, the tap filter costs each request ~3k instructions: the inbound route
    leaves it out of the chain, so even a tap config the admin accepts sees nothing;
    a session turns it on (and sees requests), and its end turns it off again."""
    direct = _admin_taps(mesh, 4)
    time.sleep(1)
    with mesh.client_via("frontend") as client:
        for _ in range(10):
            assert client.get("http://catalog/items").status_code == 200
    for proc in direct:
        out, _ = proc.communicate(timeout=30)
        assert out == b""  # the admin took the config; the filter never ran
    assert all(_inbound_tap_disabled(mesh))
    proc = _tap(mesh, "catalog", "--json", "--max", "1", "--seconds", "20")
    out, err = _drive(mesh, proc, ["/items"])
    assert proc.returncode == 0, err
    assert len(out.splitlines()) == 1
    deadline = time.monotonic() + 15
    while not all(_inbound_tap_disabled(mesh)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(_inbound_tap_disabled(mesh))
