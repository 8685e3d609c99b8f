"""What one ADS stream costs a bare grpc.aio server: the floor under the control
plane's memory per proxy, with none of Gossamer's code.

A child process runs a grpc.aio server with a DeltaAggregatedResources handler
that answers every request with a fixed response (as big as a proxy's first
config); this process opens N streams to it, one channel (one connection) each,
as N Envoys would, exchanges three request/response pairs on each, and reads
the server's RSS before and after. Configurations: plaintext, TLS (a P-256
certificate, as the mesh CA issues), and TLS with the record size the xDS
server sets (`grpc.tsi.max_frame_size`, see xds/server.py).

    PYTHONPATH=$PWD/src .venv/bin/python -m bench.controlplane.grpcfloor [--alternatives]
        [--cpu-rounds K]

`--cpu-rounds K` also times the server's CPU while every stream sends one request
at once and the server answers each, K times: the floor under a push to every
stream and its ACKs (one write and one read a stream).

`--alternatives` also measures what might lower the floor (each with TLS): smaller
records, grpc's read-buffer, BDP, channelz, HPACK-table and write-buffer options,
glibc with fewer malloc arenas,
jemalloc (Debian's libjemalloc2, if installed), TLS done in Python in front of
grpc in plaintext (ssl.MemoryBIO, relayed over a Unix socket), and grpclib, a
pure-Python gRPC server over asyncio's TLS (if installed; not a dependency of
Gossamer).

`--heap` says what the floor is made of: the server runs with `heapshim.c`
preloaded (compiled with gcc at run time), which counts live heap blocks by
size, and each configuration reports the blocks each stream keeps.

Loopback only; the child is stopped by PID; each configuration takes seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from gossamer.agent.ports import free_port
from gossamer.ca.pki import generate_root
from gossamer.ca.servercert import issue_server_cert
from gossamer.xds.server import TLS_RECORD_BYTES

# Both servers' arguments (port, tls|plain, response bytes, grpc options as
# JSON, key file, chain file) and the one response they answer every request with.
PRELUDE = r'''
import asyncio, json, sys
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

port, tls, size, options = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
count = max(1, size // 1000)
RESPONSE = discovery_pb2.DeltaDiscoveryResponse(nonce="1", resources=[
    discovery_pb2.Resource(name=f"r{i}", version="v", resource=any_pb2.Any(
        type_url="x", value=b"a" * (size // count))) for i in range(count)])
'''

# The handler on grpc.aio, for the grpc servers below.
GRPC_ADS = r'''
import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    async def DeltaAggregatedResources(self, requests, context):
        async for _ in requests:
            yield RESPONSE
'''

SERVER = PRELUDE + GRPC_ADS + r'''

async def main():
    server = grpc.aio.server(options=[tuple(o) for o in options])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(), server)
    if tls == "tls":
        key, cert = open(sys.argv[5], "rb").read(), open(sys.argv[6], "rb").read()
        server.add_secure_port("127.0.0.1:" + port, grpc.ssl_server_credentials([(key, cert)]))
    else:
        server.add_insecure_port("127.0.0.1:" + port)
    await server.start()
    print("up", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
'''

# The same handler on grpclib (pure-Python HTTP/2 over asyncio and the ssl module).
GRPCLIB_SERVER = PRELUDE + r'''
import ssl
from grpclib.const import Cardinality, Handler
from grpclib.server import Server

async def delta(stream):
    async for _ in stream:
        await stream.send_message(RESPONSE)

class Ads:
    def __mapping__(self):
        return {"/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources":
                Handler(delta, Cardinality.STREAM_STREAM, discovery_pb2.DeltaDiscoveryRequest,
                        discovery_pb2.DeltaDiscoveryResponse)}

async def main():
    context = None
    if tls == "tls":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[6], sys.argv[5])
        context.set_alpn_protocols(["h2"])
    server = Server([Ads()])
    await server.start("127.0.0.1", int(port), ssl=context)
    print("up", flush=True)
    await server.wait_closed()

asyncio.run(main())
'''
# grpc in plaintext on a Unix socket behind a TLS front in Python: each client
# connection is decrypted with ssl.MemoryBIO/SSLObject (OpenSSL's buffers are
# released when idle) and its bytes relayed to grpc over its own Unix connection.
# A measurement only (no flow control): would TLS outside grpc's C core cost less?
FRONT_SERVER = PRELUDE + GRPC_ADS + r"""
import os, ssl, tempfile

class Inner(asyncio.Protocol):
    def __init__(self, front):
        self.front = front
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.front.tls.write(data)
        self.front.transport.write(self.front.outgoing.read())
    def connection_lost(self, exc):
        self.front.transport.close()

class Front(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.inner, self.early, self.handshaken = transport, None, [], False
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = CONTEXT.wrap_bio(self.incoming, self.outgoing, server_side=True)
    def data_received(self, data):
        self.incoming.write(data)
        if not self.handshaken:
            try:
                self.tls.do_handshake()
                self.handshaken = True
                asyncio.get_running_loop().create_task(self.connect())
            except ssl.SSLWantReadError:
                pass
        while self.handshaken:
            try:
                plain = self.tls.read(16384)
            except ssl.SSLWantReadError:
                break
            if not plain:
                break
            if self.inner is None:
                self.early.append(plain)
            else:
                self.inner.transport.write(plain)
        self.transport.write(self.outgoing.read())
    async def connect(self):
        _, inner = await asyncio.get_running_loop().create_unix_connection(
            lambda: Inner(self), SOCKET)
        inner.transport.write(b"".join(self.early))
        self.inner, self.early = inner, []
    def connection_lost(self, exc):
        if self.inner is not None:
            self.inner.transport.close()

async def main():
    global CONTEXT, SOCKET
    SOCKET = os.path.join(tempfile.mkdtemp(), "grpc.sock")
    server = grpc.aio.server(options=[tuple(o) for o in options])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(), server)
    server.add_insecure_port("unix:" + SOCKET)
    await server.start()
    CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    CONTEXT.load_cert_chain(sys.argv[6], sys.argv[5])
    CONTEXT.set_alpn_protocols(["h2"])
    await asyncio.get_running_loop().create_server(Front, "127.0.0.1", int(port))
    print("up", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""
JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
# Prepended to a server script under --heap: SIGUSR1 dumps heapshim's counts.
HEAP_HOOK = r'''
import ctypes, os, signal
_heap = ctypes.CDLL(None)
signal.signal(signal.SIGUSR1, lambda *_: _heap.shim_dump(os.environ["HEAP_DUMP"].encode()))
'''


def compile_shim(directory: Path) -> Path:
    out = directory / "heapshim.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(out),
                    str(Path(__file__).with_name("heapshim.c"))], check=True)
    return out


def _read_counts(dump: Path) -> Counter[int] | None:
    """heapshim's dump, once there (it renames a complete file into place)."""
    try:
        text = dump.read_text()
    except FileNotFoundError:
        return None
    return Counter({int(size): int(n) for size, n in (line.split() for line in text.splitlines())})


async def _heap_counts(child: asyncio.subprocess.Process, dump: Path) -> Counter[int]:
    """Live blocks by usable size, as the child's heapshim counts them now."""
    dump.unlink(missing_ok=True)  # noqa: ASYNC240 (a local file; no I/O wait)
    child.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        counts = _read_counts(dump)
        if counts is not None:
            return counts
    raise RuntimeError("the server did not dump its heap counts")


def _per_stream(before: Counter[int], after: Counter[int], n: int) -> dict[str, Any]:
    diff = {size: after[size] - before[size] for size in set(after) | set(before)}
    top = sorted(diff.items(), key=lambda kv: -kv[0] * kv[1])[:8]
    return {"heap_kib_per_stream": round(sum(s * c for s, c in diff.items()) / n / 1024, 1),
            "blocks": [{"usable_bytes": size, "per_stream": round(c / n, 2),
                        "kib_per_stream": round(size * c / n / 1024, 1)} for size, c in top]}


def _certificate(directory: Path) -> tuple[Path, Path, bytes]:
    """A serving certificate from a fresh mesh root, as the control plane's own
    (`ca.pki`): (key file, chain file, root PEM for the clients)."""
    now = datetime.datetime.now(datetime.UTC)
    root = generate_root("bench.local", now)
    chain, key = issue_server_cert(root, ["localhost"], [], now, datetime.timedelta(hours=1))
    key_file, cert_file = directory / "key.pem", directory / "cert.pem"
    key_file.write_bytes(key)
    cert_file.write_bytes(chain)
    return key_file, cert_file, root.root_pem().encode()


def _cpu_s(pid: int) -> float:
    """The process's CPU seconds so far (user + system, every thread)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _exchange_cpu(child_pid: int, opened: list[Any], rounds: int) -> dict[str, Any]:
    """Server CPU per request/response pair when every stream sends one request at
    once and the server answers each: what a push to every stream and its ACKs
    cost bare grpc.aio (one write and one read a stream), none of Gossamer's code."""
    async def one(call: Any) -> None:
        await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url="x"))
        await asyncio.wait_for(call.read(), 60)

    cpu0 = _cpu_s(child_pid)
    for _ in range(rounds):
        await asyncio.gather(*(one(call) for _, call in opened))
    cpu = _cpu_s(child_pid) - cpu0
    return {"exchange_rounds": rounds,
            "server_cpu_ms_per_round": round(cpu * 1000 / rounds, 1),
            "server_cpu_us_per_exchange": round(cpu * 1e6 / rounds / len(opened), 1)}


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


async def _streams(n: int, port: int, ca: bytes | None) -> list[Any]:
    opened = []
    for _ in range(n):
        options = [("grpc.use_local_subchannel_pool", 1)]
        channel = (grpc.aio.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(ca),
                                           options=options) if ca is not None
                   else grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options))
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
        for _ in range(3):
            await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url="x"))
            await asyncio.wait_for(call.read(), 30)
        opened.append((channel, call))
    return opened


async def measure(n: int, tls: bool, response_bytes: int, options: list[tuple[str, int]],
                  directory: Path, *, server: str = SERVER,
                  env: dict[str, str] | None = None,
                  heap_shim: Path | None = None, rounds: int = 0) -> dict[str, Any]:
    key_file, cert_file, pem = _certificate(directory)
    port = free_port()
    env = {**os.environ, **(env or {})}
    dump = directory / "heap-counts"
    if heap_shim is not None:
        server = HEAP_HOOK + server
        env.update(LD_PRELOAD=str(heap_shim), HEAP_DUMP=str(dump))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", server, str(port), "tls" if tls else "plain",
        str(response_bytes), json.dumps(options), str(key_file), str(cert_file),
        stdout=asyncio.subprocess.PIPE, env=env)
    opened: list[Any] = []
    try:
        assert child.stdout is not None
        if (await asyncio.wait_for(child.stdout.readline(), 30)).strip() != b"up":
            raise RuntimeError("the grpc server did not start")
        await asyncio.sleep(0.5)
        base = _rss_mib(child.pid)
        heap0 = await _heap_counts(child, dump) if heap_shim is not None else None
        opened = await _streams(n, port, pem if tls else None)
        await asyncio.sleep(1.0)
        result = {"streams": n, "tls": tls, "response_bytes": response_bytes,
                  "options": dict(options), "base_mib": round(base, 1),
                  "kib_per_stream": round((_rss_mib(child.pid) - base) * 1024 / n, 1)}
        if heap0 is not None:
            result.update(_per_stream(heap0, await _heap_counts(child, dump), n))
        if rounds:
            result.update(await _exchange_cpu(child.pid, opened, rounds))
        return result
    finally:
        child.kill()
        await asyncio.wait_for(child.wait(), 10)
        for channel, _ in opened:
            await channel.close()


@dataclass(frozen=True)
class Config:
    label: str
    tls: bool
    options: list[tuple[str, int]] = field(default_factory=list)
    server: str = SERVER
    env: dict[str, str] = field(default_factory=dict)


RECORDS = [("grpc.tsi.max_frame_size", TLS_RECORD_BYTES)]
CONFIGS = [
    Config("plaintext", False),
    Config("TLS, 16 KiB records (grpc default)", True),
    Config(f"TLS, {TLS_RECORD_BYTES // 1024} KiB records (xDS server)", True, RECORDS),
]


def alternatives() -> tuple[list[Config], list[str]]:
    """What else might lower the floor, and the ones this machine cannot run."""
    configs = [
        Config("TLS, 2 KiB records", True, [("grpc.tsi.max_frame_size", 2048)]),
        Config("TLS, 1 KiB records (grpc's lower bound)", True,
               [("grpc.tsi.max_frame_size", 1024)]),
        Config("TLS 4 KiB, no BDP probe, 4-16 KiB TCP reads", True, [
            *RECORDS, ("grpc.http2.bdp_probe", 0), ("grpc.experimental.tcp_read_chunk_size", 4096),
            ("grpc.experimental.tcp_min_read_chunk_size", 1024),
            ("grpc.experimental.tcp_max_read_chunk_size", 16384)]),
        Config("TLS 4 KiB, channelz off", True, [*RECORDS, ("grpc.enable_channelz", 0)]),
        Config("TLS 4 KiB, no HPACK dynamic tables", True, [
            *RECORDS, ("grpc.http2.hpack_table_size.decoder", 0),
            ("grpc.http2.hpack_table_size.encoder", 0)]),
        Config("TLS 4 KiB, 4 KiB HTTP/2 write buffer", True,
               [*RECORDS, ("grpc.http2.write_buffer_size", 4096)]),
        Config("TLS 4 KiB, glibc MALLOC_ARENA_MAX=2", True, RECORDS,
               env={"MALLOC_ARENA_MAX": "2"}),
        Config("TLS 4 KiB, glibc MALLOC_ARENA_MAX=1", True, RECORDS,
               env={"MALLOC_ARENA_MAX": "1"}),
        Config("Python TLS front, plaintext grpc on a Unix socket", True,
               server=FRONT_SERVER),
    ]
    missing: list[str] = []
    if JEMALLOC.exists():
        configs.append(Config("TLS 4 KiB, jemalloc", True, RECORDS,
                              env={"LD_PRELOAD": str(JEMALLOC)}))
    else:
        missing.append(f"jemalloc: {JEMALLOC} not installed (Debian libjemalloc2)")
    if importlib.util.find_spec("grpclib") is not None:
        configs += [Config("grpclib, plaintext", False, server=GRPCLIB_SERVER),
                    Config("grpclib, TLS (asyncio + ssl)", True, server=GRPCLIB_SERVER)]
    else:
        missing.append("grpclib: not installed (pip install grpclib)")
    return configs, missing


def _print_heap(runs: list[dict[str, Any]]) -> None:
    """The median run's live heap per stream and its largest block sizes."""
    run = sorted(runs, key=lambda r: r["heap_kib_per_stream"])[len(runs) // 2]
    print(f"{'':4}live heap {run['heap_kib_per_stream']:.1f} KiB a stream, largest by size:")
    for b in run["blocks"]:
        print(f"{'':6}{b['usable_bytes']:>7} B x {b['per_stream']:4.2f} = "
              f"{b['kib_per_stream']:5.1f} KiB")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=500)
    p.add_argument("--response-bytes", type=int, default=12_000,
                   help="each response (the bench's first config is ~12 KB a proxy)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--alternatives", action="store_true",
                   help="also measure what might lower the floor (see the docstring)")
    p.add_argument("--heap", action="store_true",
                   help="also count the live heap blocks each stream keeps, by size")
    p.add_argument("--cpu-rounds", type=int, default=0,
                   help="also time the server's CPU for this many rounds of one "
                        "request/response on every stream at once (a push and its ACKs)")
    args = p.parse_args()
    configs = list(CONFIGS)
    missing: list[str] = []
    if args.alternatives:
        more, missing = alternatives()
        configs += more
    rows = []
    with tempfile.TemporaryDirectory(prefix="gossamer-grpcfloor-") as tmp:
        shim = compile_shim(Path(tmp)) if args.heap else None
        for config in configs:
            runs = [await measure(args.streams, config.tls, args.response_bytes,
                                  config.options, Path(tmp), server=config.server,
                                  env=config.env, heap_shim=shim, rounds=args.cpu_rounds)
                    for _ in range(args.runs)]
            rows.append({"config": config.label, "runs": runs, "kib_per_stream":
                         statistics.median(r["kib_per_stream"] for r in runs)})
            cpu = ""
            if args.cpu_rounds:
                rows[-1]["server_cpu_us_per_exchange"] = statistics.median(
                    r["server_cpu_us_per_exchange"] for r in runs)
                cpu = f", server CPU {rows[-1]['server_cpu_us_per_exchange']:.0f} us an exchange"
            print(f"{config.label:50s} {rows[-1]['kib_per_stream']:7.1f} KiB per stream{cpu}",
                  flush=True)
            if shim is not None:
                _print_heap(runs)
    for reason in missing:
        print(f"not measured: {reason}")
    out = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "streams": args.streams,
           "response_bytes": args.response_bytes, "configs": rows,
           "not_measured": missing}
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
