"""How to route captured traffic by its destination address (GAMMA's
MeshFrontendHostname): one filter chain per Service virtual IP and HTTP port,
matched by `filter_chain_match` (what translate/capture.py builds), or the same
chains chosen by a `filter_chain_matcher` tree (a map lookup on destination port,
then IP). Measures, for a capturing sidecar that sees S Services:

- the `outbound_capture` listener's bytes, and before this change (no per-address
  HTTP chains: Host-based routing only);
- translation: the mesh and the proxy, and building the listener message alone;
- a real Envoy (ADS from an in-process XdsServer): time to take the first config
  (LDS accepted and no listener warming), and then a one-Service change, with
  whether Envoy updated the listener in place (only the changed chains drain) or
  replaced it (every connection on it drains).

    PYTHONPATH=$PWD/src:$PWD .venv/bin/python -m bench.controlplane.capturechains --s 1000
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.controlplane import mesh as bm
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.matching.common_inputs.network.v3 import network_inputs_pb2  # noqa: F401
from google.protobuf import json_format

from gossamer.contract.node import NodeMetadata
from gossamer.envoy.errors import EnvoyError
from gossamer.index import build_index
from gossamer.model import Resource, parse_document
from gossamer.testing.envoy import EnvoyProcess, ads_bootstrap, free_port
from gossamer.translate import translate_mesh, translate_proxy
from gossamer.translate.capture import CAPTURE_LISTENER
from gossamer.translate.mesh import MeshConfig
from gossamer.translate.protos import build, to_dict
from gossamer.virtualips.table import allocate, load_table
from gossamer.xds.cache import SnapshotCache
from gossamer.xds.server import XdsServer
from gossamer.xds.types import LISTENER, Snapshot, XdsResource

NODE = "bench-capture.default"
_INPUT = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3."
_NAME = "type.googleapis.com/google.protobuf.StringValue"


def _docs(s: int) -> list[Resource]:
    docs = [parse_document(bm.service_doc(i)) for i in range(s)]
    keys = {(d.metadata.namespace, d.metadata.name): None for d in docs}
    table = load_table(allocate(None, keys, ipaddress.IPv4Network("240.240.0.0/16")).document())
    assert table is not None
    return [*docs, table]


def _mesh(s: int) -> MeshConfig:
    return translate_mesh(build_index(_docs(s), 1))


def _node(ports: dict[str, int], i: int = 0) -> NodeMetadata:
    return NodeMetadata.from_metadata(NODE if i == 0 else f"bench-capture-{i}.default", {
        "service": "bench-client", "namespace": "default", "workload": f"bench-client-{i}",
        "outbound_port": ports["outbound"], "capture": True, "capture_port": ports["capture"],
        "dns_port": ports["dns"], "dns_resolvers": ["127.0.0.1"]})


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def to_matcher(listener: Listener) -> Listener:
    """The same chains, chosen by a matcher tree: destination port, then IP (a /32
    exact match), a port's address-less chain when no IP matches."""
    data = to_dict(listener)
    ports: dict[str, dict[str, Any]] = {}
    for chain in data["filterChains"]:
        match = chain.pop("filterChainMatch")
        slot = ports.setdefault(str(match["destinationPort"]), {"ips": {}, "any": None})
        action = {"action": {"name": chain["name"], "typedConfig": {
            "@type": _NAME, "value": chain["name"]}}}
        if ranges := match.get("prefixRanges"):
            slot["ips"][ranges[0]["addressPrefix"]] = action
        else:
            slot["any"] = action
    by_port = {}
    for port, found in ports.items():
        tree: dict[str, Any] = {"matcherTree": {
            "input": {"name": "ip", "typedConfig": {"@type": _INPUT + "DestinationIPInput"}},
            "exactMatchMap": {"map": found["ips"]}}}
        if found["any"] is not None:
            tree["onNoMatch"] = found["any"]
        by_port[port] = found["any"] if not found["ips"] else {"matcher": tree}
    data["filterChainMatcher"] = {"matcherTree": {
        "input": {"name": "port", "typedConfig": {"@type": _INPUT + "DestinationPortInput"}},
        "exactMatchMap": {"map": by_port}}}
    return build(Listener, data)


def _with_listener(snapshot: Snapshot, listener: Listener) -> Snapshot:
    res = dict(snapshot.of(LISTENER))
    res[CAPTURE_LISTENER] = XdsResource.from_message(LISTENER, CAPTURE_LISTENER, listener)
    return snapshot.replace_type(LISTENER, res)


def _strip_vip_chains(listener: Listener) -> Listener:
    """As before this change: HTTP by port and Host only."""
    out = Listener()
    out.CopyFrom(listener)
    del out.filter_chains[:]
    out.filter_chains.extend(c for c in listener.filter_chains
                             if not c.name.startswith("upstream|"))
    return out


async def _settled(envoy: EnvoyProcess, updates: int, timeout: float = 120.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # Envoy's main thread, busy applying the config, answers late
            stats = await envoy.astats("^listener_manager\\.")
        except EnvoyError:
            continue
        if (stats.get("listener_manager.lds.update_success", 0) >= updates
                and stats.get("listener_manager.total_listeners_warming", 1) == 0
                and stats.get("listener_manager.total_listeners_active", 0) >= 2):
            return stats
        await asyncio.sleep(0.02)
    raise TimeoutError(f"Envoy did not settle on LDS update {updates}")


async def _envoy(first: Snapshot, second: Snapshot) -> dict[str, Any]:
    cache = SnapshotCache()
    server = XdsServer(cache)
    envoy: EnvoyProcess | None = None
    try:
        port = await server.start("127.0.0.1", 0)
        cache.set(NODE, first)
        envoy = EnvoyProcess(ads_bootstrap(NODE, port))
        t0 = time.perf_counter()
        await asyncio.to_thread(envoy.start)
        base = await _settled(envoy, 1)
        initial = time.perf_counter() - t0
        mem = await envoy.astat("server.memory_allocated")
        t0 = time.perf_counter()
        cache.set(NODE, second)
        after = await _settled(envoy, base["listener_manager.lds.update_success"] + 1)
        update = time.perf_counter() - t0

        def delta(stat: str) -> int:
            return after.get(stat, 0) - base.get(stat, 0)
        return {"initial_s": round(initial, 3), "update_s": round(update, 3),
                "memory_allocated_mb": round(mem / 2**20, 1),
                "in_place_updated": delta("listener_manager.listener_in_place_updated"),
                "modified": delta("listener_manager.listener_modified")}
    finally:
        if envoy is not None:
            envoy.stop()
        await server.stop(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--s", type=int, default=1000)
    p.add_argument("--no-envoy", action="store_true")
    args = p.parse_args()
    ports = {k: free_port() for k in ("outbound", "capture", "dns")}
    node = _node(ports)
    out: dict[str, Any] = {"services": args.s}
    snaps: dict[str, list[Snapshot]] = {"filter_chain_match": [], "filter_chain_matcher": [],
                                        "before": []}
    for n in (args.s, args.s + 1):  # then one Service more
        mesh, t_mesh = _timed(partial(_mesh, n))
        config, t_proxy = _timed(partial(translate_proxy, mesh, node))
        _, t_again = _timed(partial(translate_proxy, mesh, _node(ports, 1)))
        snap = config.snapshot
        listener = Listener.FromString(snap.of(LISTENER)[CAPTURE_LISTENER].payload)
        _, t_build = _timed(partial(json_format.ParseDict, to_dict(listener), Listener()))
        matcher, t_matcher = _timed(partial(to_matcher, listener))
        before = _strip_vip_chains(listener)
        if n == args.s:
            out["translate_mesh_s"] = round(t_mesh, 3)
            out["translate_proxy_s"] = round(t_proxy, 3)
            out["translate_another_proxy_s"] = round(t_again, 3)
            out["build_listener_s"] = round(t_build, 3)
            out["convert_to_matcher_s"] = round(t_matcher, 3)
            out["listener_bytes"] = {"filter_chain_match": listener.ByteSize(),
                                     "filter_chain_matcher": matcher.ByteSize(),
                                     "before": before.ByteSize()}
        snaps["filter_chain_match"].append(snap)
        snaps["filter_chain_matcher"].append(_with_listener(snap, matcher))
        snaps["before"].append(_with_listener(snap, before))
    if not args.no_envoy:
        out["envoy"] = {k: asyncio.run(_envoy(*v)) for k, v in snaps.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
