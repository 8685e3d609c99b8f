"""Simulated sidecars: many delta-ADS streams in one grpc.aio event loop.

Each proxy is one gRPC channel (its own TLS connection, like one Envoy) to the
control plane, authenticated like the real agent's Envoy: TLS 1.3 verified
against the mesh CA bundle for the name `gossamer-control-plane`, and the
service's join token as `authorization: Bearer` metadata. The protocol
decisions live in `simproxy.py`.

The driver (`run.py`) starts this process with a JSON file of proxies and
talks to it with one JSON object per line on stdin/stdout:

    {"op": "status"}                      counts: connected, synced, reconnects
    {"op": "record", "on": true}          start (and clear) per-resource logs
    {"op": "reset_backoff"}               as if every proxy had just received a
                                          message (makes restart runs independent)
    {"op": "arrivals", "queries": [[type, name, t0(, only)], ...]}
        for each query, per proxy subscribed to the name (and, given `only`, a
        list of proxy indices, among those): [proxy index, seconds from t0 to
        the first response carrying (or removing) it, or null]
    {"op": "bytes", "t0": t, "t1": t}     [proxy index, bytes received in [t0, t1]]
    {"op": "lag", "t0": t, "t1": t}       this loop's lag (max, p99) in [t0, t1]
    {"op": "quit"}

Times are `time.monotonic()`, which on Linux is one clock for every process,
so the driver's t0 and these receive times compare directly. The loop's own
lag is measured (a 10 ms ticker) so a slow load generator shows up as such
rather than as a slow control plane.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from bench.controlplane.simproxy import SHORT, Request, Response, SimProxy

from gossamer.agent.bootstrap import XDS_RETRY_BASE_S, XDS_RETRY_MAX_S

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
CONTROL_PLANE_NAME = "gossamer-control-plane"
# Envoy's gRPC stream retry: jittered exponential backoff, with the base and cap the
# agent's bootstrap sets (Envoy's own defaults are 500 ms and 30 s).
BACKOFF_BASE, BACKOFF_MAX = XDS_RETRY_BASE_S, XDS_RETRY_MAX_S
TICK = 0.01


def _raw(data: bytes) -> bytes:
    return data


@dataclass
class ProxyRun:
    """One simulated proxy's stream state and what the driver asks about."""

    index: int
    sim: SimProxy
    token: str
    connected: bool = False
    connects: int = 0
    synced_at: float | None = None
    errors: int = 0
    last_error: str = ""
    # Failed attempts since the last response: Envoy resets its backoff only
    # when a message arrives, not when a stream opens.
    attempt: int = 0
    # While recording: (time, bytes) of every response, and per (type, name)
    # the times it arrived.
    log: list[tuple[float, int]] = field(default_factory=list)
    arrivals: dict[tuple[str, str], list[float]] = field(default_factory=dict)


class LoadGen:
    def __init__(self, target: str, bundle: bytes, proxies: list[dict[str, Any]]) -> None:
        self.target = target
        self.credentials = grpc.ssl_channel_credentials(root_certificates=bundle)
        self.proxies = [ProxyRun(p["index"], SimProxy(p["node_id"], p["cluster"],
                                                      p["metadata"],
                                                      calls=list(p.get("calls", ()))),
                                 p["token"])
                        for p in proxies]
        self.recording = False
        self.stopping = False
        self.lags: deque[tuple[float, float]] = deque(maxlen=200_000)

    def _channel(self) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(self.target, self.credentials, options=[
            ("grpc.ssl_target_name_override", CONTROL_PLANE_NAME),
            # One connection per proxy, as with real Envoys (no shared subchannel).
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.enable_retries", 0),
        ])

    async def run_proxy(self, p: ProxyRun) -> None:
        while not self.stopping:
            channel = self._channel()
            try:
                call = channel.stream_stream(
                    METHOD, request_serializer=Request.SerializeToString,
                    response_deserializer=_raw)(
                    metadata=(("authorization", f"Bearer {p.token}"),))
                for req in p.sim.start():
                    await call.write(req)
                p.connected, p.connects = True, p.connects + 1
                while True:
                    raw = await call.read()
                    if raw is grpc.aio.EOF:
                        break
                    p.attempt = 0
                    resp = Response.FromString(raw)
                    now = time.monotonic()
                    if self.recording:
                        self._record(p, resp, now, len(raw))
                    for req in p.sim.on_response(resp, len(raw)):
                        await call.write(req)
                    if p.synced_at is None and p.sim.synced():
                        p.synced_at = time.monotonic()
            except grpc.aio.AioRpcError as exc:
                p.errors += 1
                p.last_error = f"{exc.code().name}: {exc.details()}"
            except asyncio.CancelledError:
                raise
            finally:
                p.connected = False
                await channel.close(grace=None)
            delay = random.uniform(0, min(BACKOFF_BASE * 2 ** p.attempt, BACKOFF_MAX))
            p.attempt += 1
            await asyncio.sleep(delay)

    @staticmethod
    def _record(p: ProxyRun, resp: Any, now: float, size: int) -> None:
        p.log.append((now, size))
        type_url = resp.type_url
        for res in resp.resources:
            p.arrivals.setdefault((type_url, res.name), []).append(now)
        for name in resp.removed_resources:
            p.arrivals.setdefault((type_url, name), []).append(now)

    async def ticker(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(TICK)
            now = time.monotonic()
            self.lags.append((now, max(0.0, now - start - TICK)))

    # -- the driver's questions ---------------------------------------------------------

    def status(self) -> dict[str, Any]:
        errors = [p.last_error for p in self.proxies if p.last_error]
        return {
            "proxies": len(self.proxies),
            "connected": sum(p.connected for p in self.proxies),
            "synced": sum(p.synced_at is not None for p in self.proxies),
            "synced_last": max((p.synced_at or 0.0) for p in self.proxies),
            "connects": sum(p.connects for p in self.proxies),
            "errors": sum(p.errors for p in self.proxies),
            "last_errors": sorted(set(errors))[:5],
            "responses": sum(p.sim.responses for p in self.proxies),
            "bytes": sum(p.sim.bytes for p in self.proxies),
            "eds_names": sum(len(p.sim.types[t].names) for p in self.proxies
                             for t in SHORT if SHORT[t] == "eds"),
        }

    def record(self, on: bool) -> None:
        self.recording = on
        for p in self.proxies:
            p.log.clear()
            p.arrivals.clear()

    def arrivals(self, queries: list[list[Any]]) -> list[list[tuple[int, float | None]]]:
        """Per query, (proxy index, seconds to first arrival or None) of its subscribers."""
        out = []
        for type_url, name, t0, *rest in queries:
            only = set(rest[0]) if rest else None
            times: list[tuple[int, float | None]] = []
            for p in self.proxies:
                if only is not None and p.index not in only:
                    continue
                st = p.sim.types.get(type_url)
                if st is None or not ((st.wildcard and name in st.known) or name in st.names):
                    continue
                seen = p.arrivals.get((type_url, name), [])
                i = bisect.bisect_left(seen, t0)
                times.append((p.index, round(seen[i] - t0, 6) if i < len(seen) else None))
            out.append(times)
        return out

    def bytes_between(self, t0: float, t1: float) -> list[tuple[int, int]]:
        """(proxy index, bytes received in [t0, t1]) for every proxy."""
        return [(p.index, sum(n for t, n in p.log if t0 <= t <= t1)) for p in self.proxies]

    def lag(self, t0: float, t1: float) -> dict[str, float]:
        values = sorted(v for t, v in self.lags if t0 <= t <= t1)
        if not values:
            return {"max_ms": 0.0, "p99_ms": 0.0, "samples": 0}
        return {"max_ms": round(values[-1] * 1000, 1),
                "p99_ms": round(values[int(0.99 * (len(values) - 1))] * 1000, 1),
                "samples": len(values)}

    def answer(self, msg: dict[str, Any]) -> Any:
        op = msg.get("op")
        if op == "status":
            return self.status()
        if op == "record":
            self.record(bool(msg.get("on", True)))
            return {"ok": True}
        if op == "reset_backoff":
            for p in self.proxies:
                p.attempt = 0
            return {"ok": True}
        if op == "arrivals":
            return self.arrivals(msg["queries"])
        if op == "bytes":
            return self.bytes_between(float(msg["t0"]), float(msg["t1"]))
        if op == "lag":
            return self.lag(float(msg["t0"]), float(msg["t1"]))
        return {"error": f"unknown op {op!r}"}


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _reply(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def main_async(args: argparse.Namespace, bundle: bytes,
                     proxies: list[dict[str, Any]]) -> None:
    gen = LoadGen(args.target, bundle, proxies)
    ticker = asyncio.create_task(gen.ticker())
    tasks = []
    for p in gen.proxies:
        tasks.append(asyncio.create_task(gen.run_proxy(p)))
        if len(tasks) % args.connect_batch == 0:
            await asyncio.sleep(0)  # let the loop breathe while streams open
    reader = await _stdin_lines()
    _reply({"ready": True, "proxies": len(gen.proxies)})
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            msg = json.loads(line)
            if msg.get("op") == "quit":
                break
            _reply(gen.answer(msg))
    finally:
        gen.stopping = True
        for task in [*tasks, ticker]:
            task.cancel()
        await asyncio.gather(*tasks, ticker, return_exceptions=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="host:port of the xDS server")
    p.add_argument("--ca-file", required=True, help="mesh CA bundle (PEM)")
    p.add_argument("--proxies", required=True, help="JSON list of {index, node_id, "
                   "cluster, metadata, token}")
    p.add_argument("--connect-batch", type=int, default=50)
    args = p.parse_args()
    asyncio.run(main_async(args, Path(args.ca_file).read_bytes(),
                           json.loads(Path(args.proxies).read_text())))


if __name__ == "__main__":
    main()
