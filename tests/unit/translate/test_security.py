"""Security translation: mTLS, PeerAuthentication, AuthorizationPolicy (RBAC) and
RequestAuthentication (jwt_authn) as Envoy config.

Regenerate the golden files after an intended change with
`GOSSAMER_UPDATE_GOLDEN=1 pytest tests/unit/translate/test_security.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from gossamer.agent.bootstrap import layered_runtime
from gossamer.contract.node import BadNodeMetadata, NodeMetadata
from gossamer.envoy.binary import find_envoy
from gossamer.envoy.errors import EnvoyNotFound
from gossamer.index import build_index
from gossamer.model import Resource, parse_documents
from gossamer.translate import MeshConfig, MeshSettings, translate_mesh, translate_proxy
from gossamer.translate.protos import build, to_dict
from gossamer.translate.tls import AGENT_SDS
from gossamer.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SHORT, Snapshot

HERE = Path(__file__).parents[1]
MESSAGE = {CLUSTER: Cluster, ENDPOINT: ClusterLoadAssignment, LISTENER: Listener,
           ROUTE: RouteConfiguration}
PROXIES: dict[str, dict[str, object]] = {
    "catalog": {"service": "catalog", "workload": "catalog-0", "inbound_port": 15006,
                "inbound_address": "127.0.0.11", "app_port": 8080, "outbound_port": 15001},
    "frontend": {"service": "frontend", "workload": "frontend-0", "service_account": "web",
                 "inbound_port": 15006, "inbound_address": "127.0.0.10", "app_port": 8080,
                 "outbound_port": 15001,
                 "upstreams": [{"service": "catalog", "port": 9090, "local_port": 15101}]},
    "db": {"service": "db", "namespace": "data", "workload": "db-0", "inbound_port": 15006,
           "inbound_address": "127.0.0.13", "app_port": 5432, "outbound_port": 0},
}


def docs(extra: str = "") -> list[Resource]:
    text = (HERE / "testdata" / "security.yaml").read_text()
    return parse_documents(text + ("\n---\n" + extra if extra else ""))


def mesh_of(resources: list[Resource], **settings: Any) -> MeshConfig:
    return translate_mesh(build_index(resources, 3), MeshSettings(**settings))


def proxy(name: str, **over: object) -> NodeMetadata:
    return NodeMetadata.from_metadata(f"{name}-node", PROXIES[name] | over)


def snapshot(mesh: MeshConfig, name: str, **over: object) -> Snapshot:
    return translate_proxy(mesh, proxy(name, **over)).snapshot


def as_json(snap: Snapshot, types: tuple[str, ...] = (CLUSTER, LISTENER)) -> dict[str, Any]:
    return {SHORT[t]: {n: to_dict(MESSAGE[t].FromString(r.payload))
                       for n, r in sorted(snap.resources[t].items())} for t in types}


def inbound(snap: Snapshot) -> dict[str, Any]:
    return to_dict(Listener.FromString(snap.of(LISTENER)["inbound"].payload))


def cluster(snap: Snapshot, name: str) -> dict[str, Any]:
    return to_dict(Cluster.FromString(snap.of(CLUSTER)[name].payload))


def chain_filters(listener: dict[str, Any], index: int = 0) -> list[dict[str, Any]]:
    return list(listener["filterChains"][index]["filters"])


def http_filters(listener: dict[str, Any]) -> list[str]:
    """The HTTP filters after the tap filter (always first on the inbound side)."""
    names = [f["name"] for f in chain_filters(listener)[0]["typedConfig"]["httpFilters"]]
    if names[0] == "envoy.filters.http.tap":
        return names[1:]
    return names


def transports(listener: dict[str, Any]) -> list[str]:
    return [c.get("filterChainMatch", {}).get("transportProtocol", "")
            for c in listener["filterChains"]]


# ---------------------------------------------------------------- golden files


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_golden_security_snapshot(name: str) -> None:
    actual = as_json(snapshot(mesh_of(docs()), name))
    golden = HERE / "golden" / f"security-{name}.json"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(golden.read_text())


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_every_resource_round_trips_through_its_protobuf(name: str) -> None:
    snap = snapshot(mesh_of(docs()), name)
    for type_url, resources in snap.resources.items():
        for rname, res in resources.items():
            message = MESSAGE[type_url].FromString(res.payload)
            again = build(MESSAGE[type_url], to_dict(message))
            assert again.SerializeToString(deterministic=True) == res.payload, rname


# ---------------------------------------------------------------- mTLS


def test_outbound_clusters_verify_every_identity_of_the_destination() -> None:
    snap = snapshot(mesh_of(docs()), "frontend")
    tls = cluster(snap, "outbound|80||catalog.default")["transportSocket"]
    assert tls["name"] == "envoy.transport_sockets.tls"
    common = tls["typedConfig"]["commonTlsContext"]
    assert common["tlsParams"] == {"tlsMinimumProtocolVersion": "TLSv1_3",
                                   "tlsMaximumProtocolVersion": "TLSv1_3"}
    assert common["tlsCertificateSdsSecretConfigs"] == [{"name": "default",
                                                         "sdsConfig": AGENT_SDS}]
    combined = common["combinedValidationContext"]
    assert combined["validationContextSdsSecretConfig"] == {"name": "ROOTCA",
                                                            "sdsConfig": AGENT_SDS}
    # Unhealthy workloads count too: health changes must not move CDS.
    assert combined["defaultValidationContext"]["matchTypedSubjectAltNames"] == [
        {"sanType": "URI", "matcher": {"exact": f"spiffe://gossamer.local/ns/default/sa/{sa}"}}
        for sa in ("catalog", "catalog-canary")]
    assert common["alpnProtocols"] == ["h2"]  # sidecar to sidecar is HTTP/2 for every app
    grpc = cluster(snap, "outbound|9090||catalog.default")["transportSocket"]
    assert grpc["typedConfig"]["commonTlsContext"]["alpnProtocols"] == ["h2"]


def test_agent_sds_config_is_the_agreed_one() -> None:
    assert AGENT_SDS == {"apiConfigSource": {
        "apiType": "GRPC", "transportApiVersion": "V3",
        "grpcServices": [{"envoyGrpc": {"clusterName": "gossamer_sds"}}]},
        "resourceApiVersion": "V3"}


def test_service_without_workloads_gets_its_default_identity_and_trust_domain() -> None:
    snap = snapshot(mesh_of(docs(), trust_domain="prod.example"), "frontend")
    combined = cluster(snap, "outbound|9090||prometheus.monitoring")["transportSocket"][
        "typedConfig"]["commonTlsContext"]["combinedValidationContext"]
    assert combined["defaultValidationContext"]["matchTypedSubjectAltNames"] == [
        {"sanType": "URI", "matcher": {"exact": "spiffe://prod.example/ns/monitoring/sa/"
                                                "prometheus"}}]


def test_inbound_tls_chain_requires_a_client_certificate() -> None:
    listener = inbound(snapshot(mesh_of(docs()), "frontend"))
    assert listener["listenerFilters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    chain = listener["filterChains"][0]
    assert chain["name"] == "inbound-mtls"
    context = chain["transportSocket"]["typedConfig"]
    assert context["requireClientCertificate"] is True
    assert context["commonTlsContext"]["alpnProtocols"] == ["h2", "http/1.1"]
    assert context["commonTlsContext"]["validationContextSdsSecretConfig"]["name"] == "ROOTCA"


def test_mtls_off_is_plaintext_and_ignores_peer_authentication() -> None:
    mesh = mesh_of(docs(), mtls=False)
    snap = snapshot(mesh, "catalog")
    mesh_clusters = [n for n in snap.of(CLUSTER) if not n.startswith("jwks|")]
    assert not any("transportSocket" in cluster(snap, n) for n in mesh_clusters)
    listener = inbound(snap)
    assert "listenerFilters" not in listener
    assert transports(listener) == [""]
    # Authorization still applies (it is not a TLS feature).
    assert "envoy.filters.http.rbac.allow" in http_filters(listener)


def test_plaintext_mesh_translates_like_before_security() -> None:
    """No policy and mTLS off: the pre-security config, plus the local-reply mappers."""
    base = parse_documents((HERE / "testdata" / "mesh.yaml").read_text())
    snap = translate_proxy(translate_mesh(build_index(base, 1), MeshSettings(mtls=False)),
                           NodeMetadata.from_metadata("f", {
                               "service": "frontend", "inbound_port": 15006,
                               "app_port": 8080, "outbound_port": 15001})).snapshot
    listener = inbound(snap)
    assert http_filters(listener) == ["envoy.filters.http.router"]
    assert len(listener["filterChains"]) == 1
    assert "filterChainMatch" not in listener["filterChains"][0]


# ---------------------------------------------------------------- PeerAuthentication


def _peer(name: str, namespace: str, mode: str, target: str | None = None) -> str:
    ref = f"targetRef: {{kind: Service, name: {target}}}, " if target else ""
    return (f"apiVersion: mesh.gossamer.dev/v1alpha1\nkind: PeerAuthentication\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec: {{{ref}mtls: {{mode: {mode}}}}}\n")


BASE = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: catalog}
spec: {selector: {app: catalog}, ports: [{port: 80}]}
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Service
metadata: {name: catalog-v2}
spec: {selector: {app: catalog, version: v2}, ports: [{port: 80}]}
---
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Workload
metadata: {name: catalog-0, labels: {app: catalog, version: v2}}
spec: {service: catalog, address: 127.0.0.11, port: 15006, appPort: 8080}
"""
MESH_NS = "gossamer-system"
PRECEDENCE = [
    ("nothing applies: STRICT (zero trust)", [], ["tls"]),
    ("mesh PERMISSIVE", [("m", MESH_NS, "PERMISSIVE", None)], ["tls", "raw_buffer"]),
    ("namespace beats mesh", [("m", MESH_NS, "PERMISSIVE", None),
                              ("n", "default", "STRICT", None)], ["tls"]),
    ("namespace PERMISSIVE over mesh STRICT", [("m", MESH_NS, "STRICT", None),
                                              ("n", "default", "PERMISSIVE", None)],
     ["tls", "raw_buffer"]),
    ("service beats namespace", [("n", "default", "STRICT", None),
                                 ("s", "default", "PERMISSIVE", "catalog")],
     ["tls", "raw_buffer"]),
    ("service STRICT over namespace PERMISSIVE", [("n", "default", "PERMISSIVE", None),
                                                  ("s", "default", "STRICT", "catalog")],
     ["tls"]),
    ("two services select the workload: STRICT wins",
     [("a", "default", "PERMISSIVE", "catalog"), ("b", "default", "STRICT", "catalog-v2")],
     ["tls"]),
    ("another namespace's policy does not apply", [("o", "other", "PERMISSIVE", None)],
     ["tls"]),
    ("a policy for another service does not apply",
     [("s", "default", "PERMISSIVE", "frontend")], ["tls"]),
    ("conflict in one scope: the first by name wins",
     [("a", "default", "PERMISSIVE", None), ("b", "default", "STRICT", None)],
     ["tls", "raw_buffer"]),
]


@pytest.mark.parametrize(("policies", "chains"), [p[1:] for p in PRECEDENCE],
                         ids=[p[0] for p in PRECEDENCE])
def test_peer_authentication_precedence(policies: list[tuple[str, str, str, str | None]],
                                        chains: list[str]) -> None:
    extra = "---\n".join(_peer(*p) for p in policies)
    resources = parse_documents(BASE + ("---\n" + extra if extra else ""))
    snap = translate_proxy(translate_mesh(build_index(resources, 1)), NodeMetadata.from_metadata(
        "n", {"service": "catalog", "workload": "catalog-0", "inbound_port": 15006,
              "app_port": 8080, "outbound_port": 0})).snapshot
    listener = inbound(snap)
    assert transports(listener) == chains
    # The plaintext chain runs exactly the same filters as the TLS one, counting under
    # its own stat prefix, and a plaintext caller that waits for the server to speak
    # first is let through after a second.
    if len(chains) == 2:
        tls_hcm, plain_hcm = (chain_filters(listener, i)[-1]["typedConfig"] for i in (0, 1))
        assert (tls_hcm["statPrefix"], plain_hcm["statPrefix"]) == (
            "inbound", "inbound_plaintext")
        assert {**tls_hcm, "statPrefix": None} == {**plain_hcm, "statPrefix": None}
        assert chain_filters(listener, 0)[:-1] == chain_filters(listener, 1)[:-1]
        assert listener["continueOnListenerFiltersTimeout"] is True
        assert listener["listenerFiltersTimeout"] == "1s"
    else:
        assert "continueOnListenerFiltersTimeout" not in listener


def test_policy_status_conditions() -> None:
    extra = (_peer("z-dup", "data", "STRICT") + "---\n"
             + _peer("ghost-target", "default", "STRICT", "ghost"))
    resources = docs(extra)
    index = build_index(resources, 1)
    by_name = {r.metadata.name: r.key for r in resources}
    conds = {c.type: c for c in index.conditions[by_name["ghost-target"]]}
    assert conds["Accepted"].status == "True"
    assert conds["ResolvedRefs"].status == "False"
    assert conds["ResolvedRefs"].reason == "TargetNotFound"
    assert "ghost" in conds["ResolvedRefs"].message
    dup = {c.type: c for c in index.conditions[by_name["z-dup"]]}
    assert dup["Accepted"].reason == "Conflicted"
    assert "data-permissive" in dup["Accepted"].message
    ok = {c.type: c for c in index.conditions[by_name["catalog-readers"]]}
    assert ok["Accepted"].status == ok["ResolvedRefs"].status == "True"


# ---------------------------------------------------------------- AuthorizationPolicy


def _rbac(listener: dict[str, Any], action: str) -> dict[str, Any]:
    hcm = chain_filters(listener)[0]["typedConfig"]
    found = [f for f in hcm["httpFilters"] if f["name"] == f"envoy.filters.http.rbac.{action}"]
    return dict(found[0]["typedConfig"]["rules"]) if found else {}


def test_filter_order_jwt_then_deny_then_allow_then_router() -> None:
    listener = inbound(snapshot(mesh_of(docs()), "catalog"))
    assert http_filters(listener) == [
        "envoy.filters.http.jwt_authn", "envoy.filters.http.rbac.deny",
        "envoy.filters.http.rbac.allow", "envoy.filters.http.router"]


def test_rbac_policies_are_named_after_their_rules() -> None:
    listener = inbound(snapshot(mesh_of(docs()), "catalog"))
    assert sorted(_rbac(listener, "allow")["policies"]) == [
        f"default/catalog-readers[rule-{i}]" for i in range(3)]
    deny = _rbac(listener, "deny")
    assert deny["action"] == "DENY"
    assert sorted(deny["policies"]) == ["default/catalog-no-debug[rule-0]",
                                        "default/catalog-no-debug[rule-1]"]


def test_default_deny_is_an_allow_filter_without_policies() -> None:
    listener = inbound(snapshot(mesh_of(docs()), "frontend"))
    assert _rbac(listener, "allow") == {}  # ALLOW (the default action) and no policy
    assert "envoy.filters.http.rbac.allow" in http_filters(listener)
    assert "envoy.filters.http.rbac.deny" not in http_filters(listener)


def test_no_authorization_policy_no_rbac_filter() -> None:
    resources = [r for r in docs() if r.kind != "AuthorizationPolicy"]
    listener = inbound(snapshot(mesh_of(resources), "catalog"))
    assert not [n for n in http_filters(listener) if "rbac" in n]


def test_ports_are_the_workload_app_port() -> None:
    policy = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: by-port}
spec:
  targetRef: {kind: Service, name: catalog}
  rules: [{to: [{operation: {ports: [8080]}}]}, {to: [{operation: {ports: [9999]}}]}]
"""
    listener = inbound(snapshot(mesh_of(docs(policy)), "catalog"))
    policies = _rbac(listener, "allow")["policies"]
    assert policies["default/by-port[rule-0]"]["permissions"] == [{"destinationPort": 15006}]
    assert policies["default/by-port[rule-1]"]["permissions"] == [
        {"notRule": {"any": True}}]


def test_claims_and_request_principals_read_the_jwt_payload() -> None:
    listener = inbound(snapshot(mesh_of(docs()), "catalog"))
    rule = _rbac(listener, "allow")["policies"]["default/catalog-readers[rule-2]"]
    ids = rule["principals"][0]["andIds"]["ids"]
    matchers = [i["sourcedMetadata"]["metadataMatcher"] for i in ids[0]["andIds"]["ids"]]
    assert [m["path"] for m in matchers] == [
        [{"key": "jwt_payload"}, {"key": "iss"}], [{"key": "jwt_payload"}, {"key": "sub"}]]
    assert matchers[0]["value"] == {"stringMatch": {"exact": "https://issuer.example"}}
    assert matchers[1]["value"] == {"presentMatch": True}
    groups = ids[1]["sourcedMetadata"]["metadataMatcher"]
    assert groups["filter"] == "envoy.filters.http.jwt_authn"
    assert groups["value"]["orMatch"]["valueMatchers"][1] == {
        "listMatch": {"oneOf": {"stringMatch": {"exact": "admins"}}}}


def _network_rbac(listener: dict[str, Any], action: str) -> dict[str, Any]:
    found = [f for f in chain_filters(listener)
             if f["name"] == f"envoy.filters.network.rbac.{action}"]
    return dict(found[0]["typedConfig"]) if found else {}


def test_tcp_services_get_network_rbac_before_tcp_proxy() -> None:
    listener = inbound(snapshot(mesh_of(docs()), "db"))
    assert [f["name"] for f in chain_filters(listener)] == [
        "envoy.filters.network.rbac.allow", "envoy.filters.network.tcp_proxy"]
    allow = _network_rbac(listener, "allow")
    assert allow["statPrefix"] == "inbound_allow."
    # rule-1 needs HTTP (methods): dropped from an ALLOW policy, so it allows nothing.
    assert sorted(allow["rules"]["policies"]) == ["data/db-clients[rule-0]"]


def test_tcp_deny_rules_drop_http_conditions_and_deny_more() -> None:
    policy = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-posts, namespace: data}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: [POST]}}], from: [{source: {namespaces: [default]}}]}]
"""
    listener = inbound(snapshot(mesh_of(docs(policy)), "db"))
    rule = _network_rbac(listener, "deny")["rules"]["policies"]["data/no-posts[rule-0]"]
    assert rule["permissions"] == [{"any": True}]
    assert "authenticated" in rule["principals"][0]


# ---------------------------------------------------------------- RequestAuthentication


def _jwt(listener: dict[str, Any]) -> dict[str, Any]:
    hcm = chain_filters(listener)[0]["typedConfig"]
    return dict(hcm["httpFilters"][1]["typedConfig"])  # after the tap filter


def test_jwt_providers_allow_a_missing_token_only() -> None:
    config = _jwt(inbound(snapshot(mesh_of(docs()), "catalog")))
    assert sorted(config["providers"]) == ["default/catalog-jwt[jwt-0]",
                                           "gossamer-system/oidc[jwt-0]"]
    inline = config["providers"]["default/catalog-jwt[jwt-0]"]
    assert inline["payloadInMetadata"] == "jwt_payload"
    assert inline["failedStatusInMetadata"] == "jwt_failure"
    assert inline["audiences"] == ["catalog"]
    assert json.loads(inline["localJwks"]["inlineString"])["keys"]
    assert inline["claimToHeaders"] == [{"headerName": "x-user", "claimName": "sub"}]
    requirements = config["rules"][0]["requires"]["requiresAny"]["requirements"]
    assert requirements[-1] == {"allowMissing": {}}


def test_jwks_uri_gets_a_cluster_of_its_own() -> None:
    snap = snapshot(mesh_of(docs()), "frontend")
    remote = _jwt(inbound(snap))["providers"]["gossamer-system/oidc[jwt-0]"]["remoteJwks"]
    assert remote["httpUri"] == {"uri": "https://idp.example.com/.well-known/jwks.json",
                                 "cluster": "jwks|idp.example.com:443", "timeout": "5s"}
    jwks = cluster(snap, "jwks|idp.example.com:443")
    assert jwks["type"] == "STRICT_DNS"
    assert "edsClusterConfig" not in jwks
    tls = jwks["transportSocket"]["typedConfig"]
    assert tls["sni"] == "idp.example.com"
    assert tls["commonTlsContext"]["validationContext"]["matchTypedSubjectAltNames"] == [
        {"sanType": "DNS", "matcher": {"exact": "idp.example.com"}}]
    # Not an EDS cluster: no assignment is expected, and consistency holds.
    assert "jwks|idp.example.com:443" not in snap.of(ENDPOINT)


def test_jwks_ip_literal_is_a_static_cluster_and_only_covered_proxies_get_it() -> None:
    extra = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: RequestAuthentication
metadata: {name: local-idp}
spec:
  targetRef: {kind: Service, name: frontend}
  jwtRules: [{issuer: local, jwksUri: "http://10.1.2.3:8081/keys"}]
"""
    mesh = mesh_of(docs(extra), jwks_ca_file=None)
    jwks = cluster(snapshot(mesh, "frontend"), "jwks|10.1.2.3:8081")
    assert jwks["type"] == "STATIC"
    assert "transportSocket" not in jwks  # http
    assert "jwks|10.1.2.3:8081" not in snapshot(mesh, "catalog").of(CLUSTER)
    assert "jwks|idp.example.com:443" not in snapshot(mesh, "db").of(CLUSTER)  # TCP: no JWT


def test_inbound_local_replies_name_the_mesh_policy() -> None:
    hcm = chain_filters(inbound(snapshot(mesh_of(docs()), "catalog")))[0]["typedConfig"]
    mappers = hcm["localReplyConfig"]["mappers"]
    assert mappers[0]["filter"] == {"responseFlagFilter": {"flags": ["UF", "UH"]}}
    assert mappers[1]["statusCode"] == 401
    body = mappers[2]["bodyFormatOverride"]["textFormatSource"]["inlineString"]
    assert body.startswith("gossamer: denied by mesh authorization policy")


# ---------------------------------------------------------------- sharing, identity


def test_replicas_share_translated_policies() -> None:
    mesh = mesh_of(docs())
    a = translate_proxy(mesh, proxy("catalog"))
    b = translate_proxy(mesh, proxy("catalog", workload="catalog-1",
                                    inbound_address="127.0.0.12"))
    assert len(mesh.memo.inbound) == 1
    assert inbound(a.snapshot)["filterChains"] == inbound(b.snapshot)["filterChains"]


def test_proxy_identity_service_account() -> None:
    assert proxy("catalog").account == "catalog"
    assert proxy("frontend").account == "web"
    assert str(proxy("frontend").spiffe_id("td")) == "spiffe://td/ns/default/sa/web"
    with pytest.raises(BadNodeMetadata):
        proxy("catalog", service_account="Not_A_Label")


# ---------------------------------------------------------------- Envoy itself


def _static_bootstrap(snap: Snapshot) -> dict[str, Any]:
    """Listeners and clusters as static resources: EDS clusters become STATIC with a
    dummy endpoint, RDS is inlined, and `gossamer_sds` points at a pipe."""
    routes = {n: to_dict(RouteConfiguration.FromString(r.payload))
              for n, r in snap.of(ROUTE).items()}
    clusters = []
    for res in snap.of(CLUSTER).values():
        c = to_dict(Cluster.FromString(res.payload))
        if c.get("type") == "EDS":
            c["type"] = "STATIC"
            del c["edsClusterConfig"]
            c["loadAssignment"] = {"clusterName": c["name"], "endpoints": [{"lbEndpoints": [
                {"endpoint": {"address": {"socketAddress": {"address": "127.0.0.1",
                                                            "portValue": 9}}}}]}]}
        clusters.append(c)
    options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    clusters.append({
        "name": "gossamer_sds", "type": "STATIC", "connectTimeout": "1s",
        "typedExtensionProtocolOptions": {options: {
            "@type": f"type.googleapis.com/{options}",
            "explicitHttpConfig": {"http2ProtocolOptions": {}}}},
        "loadAssignment": {"clusterName": "gossamer_sds", "endpoints": [{"lbEndpoints": [
            {"endpoint": {"address": {"pipe": {"path": "/tmp/gossamer-sds-validate.sock"}}}}]}]},
    })
    listeners = []
    for res in snap.of(LISTENER).values():
        listener = to_dict(Listener.FromString(res.payload))
        for chain in listener["filterChains"]:
            for f in chain["filters"]:
                if "rds" in f["typedConfig"]:
                    name = f["typedConfig"].pop("rds")["routeConfigName"]
                    f["typedConfig"]["routeConfig"] = routes[name]
        listeners.append(listener)
    # An admin section as the agent writes: the tap filter registers its admin handler
    # (Envoy 1.40 crashes validating a tap filter when there is no admin).
    return {"node": {"id": "validate", "cluster": "validate"},
            "admin": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 0}}},
            "staticResources": {"listeners": listeners, "clusters": clusters},
            "layeredRuntime": layered_runtime()}


def assert_envoy_accepts(bootstrap: dict[str, Any], tmp_path: Path) -> None:
    """`envoy --mode validate` accepts the bootstrap (skips without an Envoy binary)."""
    try:
        envoy = find_envoy()
    except EnvoyNotFound as exc:
        pytest.skip(str(exc))
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(bootstrap))
    result = subprocess.run([envoy, "--mode", "validate", "-c", str(config), "-l", "error"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROXIES))
def test_envoy_accepts_the_generated_config(name: str, tmp_path: Path) -> None:
    assert_envoy_accepts(_static_bootstrap(snapshot(mesh_of(docs()), name)), tmp_path)


@pytest.mark.parametrize("mtls", [True, False])
def test_inbound_http_side_taps_first_and_names_the_verified_caller(mtls: bool) -> None:
    snap = snapshot(mesh_of(docs(), mtls=mtls), "catalog")
    listener = to_dict(Listener.FromString(snap.of(LISTENER)["inbound"].payload))
    for chain in listener["filterChains"]:
        hcm = chain["filters"][0]["typedConfig"]
        tap = hcm["httpFilters"][0]
        assert tap["name"] == "envoy.filters.http.tap"
        assert tap["typedConfig"]["commonConfig"] == {"adminConfig": {"configId": "gossamer"}}
        assert hcm["forwardClientCertDetails"] == "SANITIZE_SET"
        assert hcm["setCurrentClientCertDetails"] == {"uri": True}
    outbound = to_dict(Listener.FromString(snap.of(LISTENER)["outbound"].payload))
    names = [f["name"] for f in outbound["filterChains"][0]["filters"][0]["typedConfig"][
        "httpFilters"]]
    assert "envoy.filters.http.tap" not in names  # callers are tapped at their callee
