"""Capture mode translation (translate/capture.py, translate/dns.py): golden listeners
and route config, the outbound policy, the DNS table, and what re-translates a
capturing proxy. Regenerate the golden file with GOSSAMER_UPDATE_GOLDEN=1."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import pytest
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.udp.dns_filter.v3.dns_filter_pb2 import DnsFilterConfig

from gossamer.contract.node import BadNodeMetadata, NodeMetadata
from gossamer.index import build_index
from gossamer.model import Resource, parse_document, parse_documents
from gossamer.translate import InconsistentConfig, translate_mesh, translate_proxy
from gossamer.translate.capture import (
    BLACKHOLE_CLUSTER,
    CAPTURE_LISTENER,
    CAPTURE_ROUTES,
    PASSTHROUGH_CLUSTER,
    REFUSED_BODY,
)
from gossamer.translate.dns import DNS_LISTENER, dns_table
from gossamer.translate.protos import to_dict
from gossamer.translate.proxy import proxy_inputs
from gossamer.virtualips.table import allocate, load_table
from gossamer.xds.types import CLUSTER, LISTENER, ROUTE
from tests.unit.translate.vips import with_vip_table

HERE = Path(__file__).parents[1]
API = "mesh.gossamer.dev/v1alpha1"


def _docs(*extra: dict[str, Any]) -> list[Resource]:
    docs = parse_documents((HERE / "testdata" / "mesh.yaml").read_text())
    return with_vip_table(docs + [parse_document(d) for d in extra])


def _client(**over: Any) -> NodeMetadata:
    meta: dict[str, object] = {
        "service": "frontend", "namespace": "default", "workload": "frontend-0",
        "inbound_port": 15006, "inbound_address": "198.18.0.2", "app_port": 8080,
        "outbound_port": 15002, "capture": True, "capture_port": 15001, "dns_port": 15053,
        "dns_resolvers": ["198.18.0.53"], "access_log": "/var/run/gossamer/access.log",
    } | over
    return NodeMetadata.from_metadata("frontend-0.default", meta)


def _translate(docs: list[Resource], proxy: NodeMetadata | None = None) -> Any:
    return translate_proxy(translate_mesh(build_index(docs, 3)), proxy or _client()).snapshot


def _listener(snapshot: Any, name: str) -> Listener:
    return Listener.FromString(snapshot.of(LISTENER)[name].payload)


def _routes(snapshot: Any) -> RouteConfiguration:
    return RouteConfiguration.FromString(snapshot.of(ROUTE)[CAPTURE_ROUTES].payload)


def _mesh_resource(mode: str, domain: str = "mesh") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Mesh", "metadata": {"name": "default"},
            "spec": {"outboundTrafficPolicy": {"mode": mode}, "dnsDomain": domain}}


def test_golden_capture_listeners_and_routes() -> None:
    snap = _translate(_docs())
    actual = {
        "listeners": {n: to_dict(_listener(snap, n)) for n in (CAPTURE_LISTENER, DNS_LISTENER)},
        "routes": to_dict(_routes(snap)),
        "clusters": sorted(n for n in snap.of(CLUSTER) if not n.startswith("outbound|")),
    }
    golden = HERE / "golden" / "capture-frontend.json"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(golden.read_text())


def _rds(chain: Any) -> str:
    return str(to_dict(chain)["filters"][0]["typedConfig"]["rds"]["routeConfigName"])


def test_service_ports_match_by_virtual_ip_and_other_addresses_by_port() -> None:
    listener = _listener(_translate(_docs()), CAPTURE_LISTENER)
    matches = {c.name: c.filter_chain_match for c in listener.filter_chains}
    db = matches["db.data:5432"]
    assert [(r.address_prefix, r.prefix_len.value) for r in db.prefix_ranges] == [
        ("240.240.0.1", 32)]
    assert db.destination_port.value == 5432
    catalog = matches["upstream|9090||catalog.default"]
    assert [(r.address_prefix, r.prefix_len.value) for r in catalog.prefix_ranges] == [
        ("240.240.0.2", 32)]
    assert catalog.destination_port.value == 9090
    assert set(matches) == {"db.data:5432", "http:80", "http:9090", *(
        f"upstream|{port}||{name}.default" for name, port in (
            ("catalog", 80), ("catalog", 9090), ("catalog-v1", 80), ("catalog-v2", 80),
            ("frontend", 80)))}
    assert not matches["http:80"].prefix_ranges
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.original_dst"]
    assert listener.default_filter_chain.name == PASSTHROUGH_CLUSTER


def test_a_virtual_ip_takes_its_ports_routes_whatever_the_host() -> None:
    """GAMMA's MeshFrontendHostname: the address decides. Each virtual IP's chain
    names its port's own route config, sent by RDS, whose one virtual host answers
    any Host; other addresses keep the Host-based `outbound_capture`."""
    snap = _translate(_docs())
    chains = {c.name: c for c in _listener(snap, CAPTURE_LISTENER).filter_chains}
    for name in ("upstream|80||catalog.default", "upstream|80||catalog-v2.default"):
        assert _rds(chains[name]) == name
        config = RouteConfiguration.FromString(snap.of(ROUTE)[name].payload)
        assert [list(v.domains) for v in config.virtual_hosts] == [["*"]]
    catalog = RouteConfiguration.FromString(
        snap.of(ROUTE)["upstream|80||catalog.default"].payload).virtual_hosts[0]
    # catalog's HTTPRoute (testdata/mesh.yaml), not catalog-v2's plain route
    assert any(r.match.path == "/v2/items" for r in catalog.routes)
    assert _rds(chains["http:80"]) == CAPTURE_ROUTES


def test_a_scoped_sidecar_gets_chains_for_its_scope_only() -> None:
    scoped = {"apiVersion": API, "kind": "Sidecar",
              "metadata": {"name": "frontend", "namespace": "default"},
              "spec": {"egress": {"hosts": ["./catalog"]}}}
    snap = _translate(_docs(scoped))
    chains = {c.name for c in _listener(snap, CAPTURE_LISTENER).filter_chains}
    assert {c for c in chains if c.startswith("upstream|")} == {
        "upstream|80||catalog.default", "upstream|9090||catalog.default"}
    assert "upstream|80||catalog-v2.default" not in snap.of(ROUTE)


def test_a_route_change_resends_the_ports_config_and_not_the_listener() -> None:
    docs = _docs()
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "v2-header"},
             "spec": {"parentRefs": [{"kind": "Service", "name": "catalog-v2"}],
                      "rules": [{"filters": [{"type": "ResponseHeaderModifier",
                                              "responseHeaderModifier": {
                                                  "set": [{"name": "x-v2", "value": "1"}]}}],
                                 "backendRefs": [{"name": "catalog-v2", "port": 80}]}]}}
    before = _translate(docs)
    after = _translate([*docs, parse_document(route)])
    name = "upstream|80||catalog-v2.default"
    assert after.of(ROUTE)[name].version != before.of(ROUTE)[name].version
    assert after.of(ROUTE)["upstream|80||catalog.default"].version == before.of(ROUTE)[
        "upstream|80||catalog.default"].version
    assert after.of(LISTENER)[CAPTURE_LISTENER].version == before.of(LISTENER)[
        CAPTURE_LISTENER].version


def test_the_capture_routes_answer_to_virtual_ips_and_pass_the_rest_through() -> None:
    routes = _routes(_translate(_docs()))
    vhosts = {v.name: list(v.domains) for v in routes.virtual_hosts}
    # catalog: 240.240.0.2; port 80 is its default port, so the bare address too
    assert "240.240.0.2" in vhosts["catalog.default:80"]
    assert "240.240.0.2:80" in vhosts["catalog.default:80"]
    assert "240.240.0.2:9090" in vhosts["catalog.default:9090"]
    assert "240.240.0.2" not in vhosts["catalog.default:9090"]
    last = routes.virtual_hosts[-1]
    assert (list(last.domains), last.routes[0].route.cluster) == (["*"], PASSTHROUGH_CLUSTER)


def test_registry_only_refuses_what_is_not_a_mesh_service() -> None:
    snap = _translate(_docs(_mesh_resource("REGISTRY_ONLY")))
    last = _routes(snap).virtual_hosts[-1].routes[0]
    assert (last.direct_response.status, last.direct_response.body.inline_string) == (
        502, REFUSED_BODY)
    default = _listener(snap, CAPTURE_LISTENER).default_filter_chain
    proxy = to_dict(default)["filters"][0]["typedConfig"]
    assert (proxy["cluster"], proxy["statPrefix"]) == (BLACKHOLE_CLUSTER, "registry_only_refused")
    assert "REGISTRY_ONLY" in proxy["accessLog"][0]["typedConfig"]["logFormat"][
        "textFormatSource"]["inlineString"]
    assert BLACKHOLE_CLUSTER in snap.of(CLUSTER)


def test_a_sidecar_overrides_the_mesh_policy_for_the_workloads_it_covers() -> None:
    sidecar = {"apiVersion": API, "kind": "Sidecar", "metadata": {"name": "open"},
               "spec": {"workloadSelector": {"matchLabels": {"app": "frontend"}},
                        "outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}}
    docs = _docs(_mesh_resource("REGISTRY_ONLY"), sidecar)
    covered = _listener(_translate(docs, _client(labels={"app": "frontend"})), CAPTURE_LISTENER)
    assert covered.default_filter_chain.name == PASSTHROUGH_CLUSTER
    other = _listener(_translate(docs, _client(labels={"app": "other"})), CAPTURE_LISTENER)
    assert other.default_filter_chain.name == "registry-only"


def test_the_dns_table_has_every_name_of_each_service_in_scope() -> None:
    vips = {("default", "catalog"): "240.240.0.2", ("data", "db"): "240.240.0.5"}
    table = dict(dns_table(vips, [("default", "catalog"), ("data", "db"), ("x", "none")],
                           "default", "corp.mesh"))
    assert table == {
        "catalog": "240.240.0.2", "catalog.default": "240.240.0.2",
        "catalog.default.svc": "240.240.0.2", "catalog.default.svc.cluster.local": "240.240.0.2",
        "catalog.default.corp.mesh": "240.240.0.2",
        # another namespace's Service has no bare name here
        "db.data": "240.240.0.5", "db.data.svc": "240.240.0.5",
        "db.data.svc.cluster.local": "240.240.0.5", "db.data.corp.mesh": "240.240.0.5"}


def test_the_dns_listener_uses_the_mesh_domain_and_the_host_resolvers() -> None:
    listener = _listener(_translate(_docs(_mesh_resource("ALLOW_ANY", "corp"))), DNS_LISTENER)
    config = DnsFilterConfig()
    listener.listener_filters[0].typed_config.Unpack(config)
    names = {d.name for d in config.server_config.inline_dns_table.virtual_domains}
    assert {"catalog", "catalog.default.corp", "db.data.corp"} <= names
    assert "catalog.default.mesh" not in names
    resolvers = to_dict(config)["clientConfig"]["typedDnsResolverConfig"]["typedConfig"]
    assert resolvers["resolvers"] == [{"socketAddress": {"address": "198.18.0.53",
                                                         "portValue": 53}}]
    assert listener.address.socket_address.protocol == 1  # UDP
    assert listener.address.socket_address.port_value == 15053


def test_a_sidecar_without_capture_gets_none_of_it() -> None:
    snap = _translate(_docs(), _client(capture=False))
    assert not {CAPTURE_LISTENER, DNS_LISTENER} & set(snap.of(LISTENER))
    assert CAPTURE_ROUTES not in snap.of(ROUTE)
    assert PASSTHROUGH_CLUSTER not in snap.of(CLUSTER)


def test_what_the_capture_config_reads_retranslates_only_capturing_proxies() -> None:
    docs = _docs()
    plain = _client(capture=False, outbound_port=15001)
    before = translate_mesh(build_index(docs, 1))
    moved = [d for d in docs if d.kind != "_VirtualIPs"]
    table = load_table(allocate(None, {("default", "z-first"): None, **{
        (d.metadata.namespace, d.metadata.name): None for d in docs if d.kind == "Service"}},
        ipaddress.IPv4Network("240.241.0.0/16")).document())
    assert table is not None
    for change in ([*moved, table], [*docs, parse_document(_mesh_resource("REGISTRY_ONLY"))]):
        after = translate_mesh(build_index(change, 2, build_index(docs, 1)), previous=before)
        assert proxy_inputs(after, _client()) != proxy_inputs(before, _client())
        assert proxy_inputs(after, plain) == proxy_inputs(before, plain)


def test_a_capture_port_taken_by_another_listener_withholds_the_config() -> None:
    with pytest.raises(InconsistentConfig, match="both use port 15001"):
        _translate(_docs(), _client(outbound_port=15001))


@pytest.mark.parametrize(("over", "reason"), [
    ({"capture": "yes"}, "'capture' must be true or false"),
    ({"dns_resolvers": "10.0.0.1"}, "'dns_resolvers' must be a list"),
    ({"dns_resolvers": ["resolver.local"]}, "is not IP"),
    ({"capture_port": 70000}, "'capture_port' is not a port"),
])
def test_bad_capture_metadata_is_refused(over: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadNodeMetadata, match=reason):
        _client(**over)
