"""What one ADS stream costs a bare grpc.aio server: the floor under the control
plane's memory per proxy, with none of Gossamer's code.

A child process runs a grpc.aio server with a DeltaAggregatedResources handler
that answers every request with a fixed response (as big as a proxy's first
config); this process opens N streams to it, one channel (one connection) each,
as N Envoys would, exchanges three request/response pairs on each, and reads
the server's RSS before and after. Configurations: plaintext, TLS (a P-256
certificate, as the mesh CA issues), and TLS with the record size the xDS
server sets (`grpc.tsi.max_frame_size`, see xds/server.py).

    PYTHONPATH=$PWD/src .venv/bin/python -m bench.controlplane.grpcfloor

Loopback only; the child is stopped by PID; each configuration takes seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from gossamer.agent.ports import free_port
from gossamer.ca.pki import generate_root, issue_server_cert
from gossamer.xds.server import TLS_RECORD_BYTES

SERVER = r'''
import asyncio, json, sys
import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

port, tls, size, options = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
count = max(1, size // 1000)
RESPONSE = discovery_pb2.DeltaDiscoveryResponse(nonce="1", resources=[
    discovery_pb2.Resource(name=f"r{i}", version="v", resource=any_pb2.Any(
        type_url="x", value=b"a" * (size // count))) for i in range(count)])

class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    async def DeltaAggregatedResources(self, requests, context):
        async for _ in requests:
            yield RESPONSE

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
                  directory: Path) -> dict[str, Any]:
    key_file, cert_file, pem = _certificate(directory)
    port = free_port()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(port), "tls" if tls else "plain",
        str(response_bytes), json.dumps(options), str(key_file), str(cert_file),
        stdout=asyncio.subprocess.PIPE)
    opened: list[Any] = []
    try:
        assert child.stdout is not None
        if (await asyncio.wait_for(child.stdout.readline(), 30)).strip() != b"up":
            raise RuntimeError("the grpc server did not start")
        await asyncio.sleep(0.5)
        base = _rss_mib(child.pid)
        opened = await _streams(n, port, pem if tls else None)
        await asyncio.sleep(1.0)
        return {"streams": n, "tls": tls, "response_bytes": response_bytes,
                "options": dict(options), "base_mib": round(base, 1),
                "kib_per_stream": round((_rss_mib(child.pid) - base) * 1024 / n, 1)}
    finally:
        child.kill()
        await asyncio.wait_for(child.wait(), 10)
        for channel, _ in opened:
            await channel.close()


CONFIGS: list[tuple[str, bool, list[tuple[str, int]]]] = [
    ("plaintext", False, []),
    ("TLS, 16 KiB records (grpc default)", True, []),
    (f"TLS, {TLS_RECORD_BYTES // 1024} KiB records (xDS server)", True,
     [("grpc.tsi.max_frame_size", TLS_RECORD_BYTES)]),
]


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=500)
    p.add_argument("--response-bytes", type=int, default=12_000,
                   help="each response (the bench's first config is ~12 KB a proxy)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gossamer-grpcfloor-") as tmp:
        for label, tls, options in CONFIGS:
            runs = [await measure(args.streams, tls, args.response_bytes, options, Path(tmp))
                    for _ in range(args.runs)]
            rows.append({"config": label, "runs": runs, "kib_per_stream": statistics.median(
                r["kib_per_stream"] for r in runs)})
            print(f"{label:40s} {rows[-1]['kib_per_stream']:7.1f} KiB per stream", flush=True)
    out = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "streams": args.streams,
           "response_bytes": args.response_bytes, "configs": rows}
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
