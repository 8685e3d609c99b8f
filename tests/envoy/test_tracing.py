"""Distributed tracing through real sidecars: the demo app chain client -> frontend ->
catalog -> inventory exports its spans over OTLP/gRPC to a real receiver in the test.

The receiver implements opentelemetry-proto's TraceService/Export with grpcio and
keeps every span, so the tests check the trace as a collector would see it: one
trace id, the caller's CLIENT span the parent of the callee's SERVER span, and each
app hop linking its inbound SERVER span to its next outbound CLIENT span through the
traceparent the demo app forwards.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from gossamer.testing.envoy import free_port
from tests.envoy.harness import API, MiniMesh, Sidecar, get, wait_for
from tests.otlp import OtlpReceiver, Recorded, open_receiver, tracing_telemetry

pytestmark = pytest.mark.slow

CLIENT, SERVER = Span.SpanKind.SPAN_KIND_CLIENT, Span.SpanKind.SPAN_KIND_SERVER
# Envoy's OpenTelemetry exporter flushes every 5 s (or every 5 spans).
FLUSH_WAIT = 30.0


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    yield from open_receiver()


class DemoApps:
    """gossamer.demo.app processes; each calls its upstreams through the HTTP proxy
    in $HTTP_PROXY: its own sidecar's outbound listener."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, calls: list[str], port: int, proxy_port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k.lower() not in (
            "http_proxy", "https_proxy", "no_proxy", "all_proxy")}
        env["HTTP_PROXY"] = env["http_proxy"] = f"http://127.0.0.1:{proxy_port}"
        argv = [sys.executable, "-m", "gossamer.demo.app", "--name", name, "--port", str(port)]
        for call in calls:
            argv += ["--call", call]
        self.procs.append(subprocess.Popen(argv, env=env))

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture
def demo_apps() -> Iterator[DemoApps]:
    apps = DemoApps()
    try:
        yield apps
    finally:
        apps.close()


def _healthy(ports: list[int]) -> bool:
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status != 200:
                    return False
        except OSError:
            return False
    return True


CHAIN = (("inventory", []), ("catalog", ["http://inventory/stock"]),
         ("frontend", ["http://catalog/items"]))


class Chain:
    """client -> frontend -> catalog -> inventory: demo apps, each behind its sidecar,
    tracing to the test's receiver."""

    def __init__(self, mini: MiniMesh, receiver: OtlpReceiver, apps: DemoApps) -> None:
        self.mini, self.receiver, self.apps = mini, receiver, apps
        self.address = f"127.0.0.1:{receiver.port}"

    async def start(self, mesh_percent: float, *extra: dict[str, Any]) -> Sidecar:
        """Applies mesh-wide tracing at `mesh_percent` and `extra` Telemetry first, so
        every sidecar starts with them; returns the client sidecar."""
        await self.mini.apply(tracing_telemetry("mesh", percent=mesh_percent,
                                                address=self.address), *extra)
        ports = []
        for name, calls in CHAIN:
            app_port = free_port()
            side = Sidecar(self.mini.plane, self.mini.make, name, 0, app_port=app_port)
            await self.mini.apply(
                {"apiVersion": API, "kind": "Service", "metadata": {"name": name},
                 "spec": {"ports": [{"port": 80}]}},
                {"apiVersion": API, "kind": "Workload", "metadata": {"name": side.workload},
                 "spec": {"service": name, "address": "127.0.0.1", "port": side.inbound}})
            self.apps.start(name, list(calls), app_port, side.outbound)
            self.mini.sidecars.append(side)
            ports.append(app_port)
        await asyncio.gather(*(s.start() for s in self.mini.sidecars))

        async def up() -> bool:
            return await asyncio.to_thread(_healthy, ports)

        await wait_for(up, "demo apps answering")
        client = await self.mini.client()
        await self.mini.wait_synced()
        return client


@pytest.fixture
def chain(mini: MiniMesh, receiver: OtlpReceiver, demo_apps: DemoApps) -> Chain:
    return Chain(mini, receiver, demo_apps)


async def _complete_trace(receiver: OtlpReceiver, marker: str, count: int = 6
                          ) -> list[Recorded]:
    async def arrived() -> bool:
        return len(receiver.trace_of(marker)) >= count

    try:
        await wait_for(arrived, f"{count} spans of the trace of {marker}", FLUSH_WAIT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; received: {receiver.spans}") from None
    return receiver.trace_of(marker)


def _one(spans: list[Recorded], service: str, kind: int) -> Recorded:
    found = [s for s in spans if s.service == service and s.kind == kind]
    assert len(found) == 1, (service, Span.SpanKind.Name(kind), spans)
    return found[0]


def _check_chain(spans: list[Recorded], root_parent: str = "") -> dict[str, Recorded]:
    """The six spans of one request through the chain, linked hop by hop."""
    assert len(spans) == 6, spans
    assert len({s.trace for s in spans}) == 1, spans
    hops = {"client": _one(spans, "client", CLIENT)}
    for name in ("frontend", "catalog", "inventory"):
        hops[f"{name}.server"] = _one(spans, name, SERVER)
    for name in ("frontend", "catalog"):
        hops[f"{name}.client"] = _one(spans, name, CLIENT)
    assert hops["client"].parent == root_parent
    # Sidecar to sidecar: the caller's CLIENT span is the parent of the callee's SERVER span.
    assert hops["frontend.server"].parent == hops["client"].id
    assert hops["catalog.server"].parent == hops["frontend.client"].id
    assert hops["inventory.server"].parent == hops["catalog.client"].id
    # Through the app: the forwarded traceparent links its SERVER span to its next CLIENT span.
    assert hops["frontend.client"].parent == hops["frontend.server"].id
    assert hops["catalog.client"].parent == hops["catalog.server"].id
    return hops


def _sampling(config: Any) -> list[float]:
    """Every random_sampling value in a config dump (0 is omitted from proto JSON)."""
    if isinstance(config, dict):
        out = []
        for key, value in config.items():
            if key in ("random_sampling", "randomSampling"):
                out.append(float(value.get("value", 0.0)))
            else:
                out += _sampling(value)
        return out
    if isinstance(config, list):
        return [v for item in config for v in _sampling(item)]
    return []


async def _wait_sampling(side: Sidecar, percent: float) -> None:
    async def applied() -> bool:
        values = _sampling(await side.envoy.aconfig_dump(include_eds=False))
        return bool(values) and set(values) == {percent}

    await wait_for(applied, f"{side.workload} sampling {percent}%")


async def _ok(client: Sidecar, path: str, headers: dict[str, str] | None = None) -> Any:
    """A request on a new connection: a listener update applies to new connections
    only, the ones already open keep the configuration they were accepted with."""
    resp = await get(client, f"http://frontend{path}", headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


SAMPLED_TRACE, SAMPLED_PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _app_traceparent(body: Any) -> tuple[str, str, str]:
    """(trace id, parent id, flags) of the traceparent the frontend app received."""
    _, trace, parent, flags = body["headers"]["traceparent"].split("-")
    return trace, parent, flags


async def test_one_request_is_one_trace_across_all_services(
        chain: Chain, receiver: OtlpReceiver) -> None:
    client = await chain.start(100)
    body = await _ok(client, "/trace-one")
    assert body["upstreams"]["http://catalog/items"]["body"]["upstreams"][
        "http://inventory/stock"]["status"] == 200
    hops = _check_chain(await _complete_trace(receiver, "/trace-one"))
    # The app saw W3C trace context naming its sidecar's SERVER span as the parent.
    server = hops["frontend.server"]
    assert body["headers"]["traceparent"] == f"00-{server.trace}-{server.id}-01"
    assert body["service"] == "frontend"


async def test_zero_percent_traces_nothing_the_caller_override_starts_traces(
        mini: MiniMesh, chain: Chain, receiver: OtlpReceiver) -> None:
    """Mesh-wide 0%: no spans, even for a request that arrives with a sampled
    traceparent (Envoy keeps its trace id but clears the sampled flag). A 100%
    Telemetry for the calling service alone then traces whole requests: the later
    hops, still at 0%, follow the caller's decision."""
    client = await chain.start(0)
    for i in range(5):
        await _ok(client, f"/off-{i}")
    body = await _ok(client, "/off-forced",
                     {"traceparent": f"00-{SAMPLED_TRACE}-{SAMPLED_PARENT}-01"})
    trace, _, flags = _app_traceparent(body)
    assert (trace, flags) == (SAMPLED_TRACE, "00")
    await mini.apply(tracing_telemetry("client", "default", percent=100, target="client"))
    await _wait_sampling(client, 100.0)
    for side in mini.sidecars:
        if side is not client:
            assert set(_sampling(await side.envoy.aconfig_dump(include_eds=False))) == {0.0}
    body = await _ok(client, "/on")
    hops = _check_chain(await _complete_trace(receiver, "/on"))
    assert _app_traceparent(body) == (hops["client"].trace, hops["frontend.server"].id, "01")
    # Every sidecar exports in order, so any span of the earlier requests is in by now.
    assert not [s for s in receiver.spans if "/off-" in s.text]


async def test_later_hops_follow_an_unsampled_caller(
        chain: Chain, receiver: OtlpReceiver) -> None:
    """The other services sample 100%, the caller 0%: its requests are traced nowhere.
    A request that enters at frontend's sidecar directly starts a trace there."""
    client = await chain.start(100, tracing_telemetry("client", "default", percent=0,
                                              target="client"))
    assert set(_sampling(await client.envoy.aconfig_dump(include_eds=False))) == {0.0}
    for i in range(5):
        body = await _ok(client, f"/unsampled-{i}")
        assert _app_traceparent(body)[2] == "00"
    frontend = next(s for s in chain.mini.sidecars if s.workload == "frontend-0")
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        resp = await http.get(f"http://127.0.0.1:{frontend.inbound}/direct")
    assert resp.status_code == 200, resp.text
    spans = await _complete_trace(receiver, "/direct", count=5)
    assert len(spans) == 5, spans
    root = _one(spans, "frontend", SERVER)
    assert root.parent == ""
    assert _one(spans, "inventory", SERVER).parent == _one(spans, "catalog", CLIENT).id
    assert not [s for s in receiver.spans if "/unsampled-" in s.text]
