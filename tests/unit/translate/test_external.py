"""ExternalService translation (translate/external.py): golden clusters, routes and
capture parts, TLS origination, host clashes, the outbound policy, and what
re-translates a proxy. Regenerate the golden file with GOSSAMER_UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.transport_sockets.tls.v3.tls_pb2 import UpstreamTlsContext

from gossamer.contract.node import NodeMetadata
from gossamer.index import build_index
from gossamer.model import Resource, parse_document, parse_documents
from gossamer.translate import translate_mesh, translate_proxy
from gossamer.translate.capture import CAPTURE_LISTENER, CAPTURE_ROUTES, REFUSED_BODY
from gossamer.translate.dns import DNS_LISTENER
from gossamer.translate.protos import to_dict
from gossamer.translate.proxy import proxy_inputs
from gossamer.virtualips.external import external_key
from gossamer.xds.types import CLUSTER, LISTENER, ROUTE
from tests.unit.translate.vips import with_vip_table

HERE = Path(__file__).parents[1]
API = "mesh.gossamer.dev/v1alpha1"
PAYMENTS = {
    "apiVersion": API, "kind": "ExternalService",
    "metadata": {"name": "payments", "namespace": "default"},
    "spec": {"hosts": ["api.payments.example"],
             "ports": [{"port": 80, "protocol": "HTTP", "targetPort": 443}],
             "tls": {"mode": "ORIGINATE", "caBundle": {"file": "/etc/gossamer/payments-ca.pem"},
                     "subjectAltNames": ["api.payments.example"]},
             "timeouts": {"connect": "3s", "request": "20s"}}}
LEDGER = {
    "apiVersion": API, "kind": "ExternalService",
    "metadata": {"name": "ledger", "namespace": "billing"},
    "spec": {"hosts": ["ledger.bank.example", "ledger-eu.bank.example"],
             "endpoints": ["198.18.7.10", "198.18.7.11"],
             "ports": [{"port": 5432, "protocol": "TCP"},
                       {"port": 8443, "protocol": "HTTPS"},
                       {"port": 9000, "protocol": "GRPC"}]}}
MESH_REGISTRY_ONLY = {"apiVersion": API, "kind": "Mesh", "metadata": {"name": "default"},
                      "spec": {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}}


def _docs(*extra: dict[str, Any]) -> list[Resource]:
    docs = parse_documents((HERE / "testdata" / "mesh.yaml").read_text())
    docs += [parse_document(d) for d in extra]
    keys: dict[tuple[str, str], None] = {}
    for d in docs:
        if d.kind == "Service":
            keys[(d.metadata.namespace, d.metadata.name)] = None
        elif d.kind == "ExternalService":
            keys[external_key(d.metadata.namespace, d.metadata.name)] = None
    return with_vip_table(docs, keys)


def _client(**over: Any) -> NodeMetadata:
    meta: dict[str, object] = {
        "service": "frontend", "namespace": "default", "workload": "frontend-0",
        "inbound_port": 15006, "inbound_address": "198.18.0.2", "app_port": 8080,
        "outbound_port": 15002, "capture": True, "capture_port": 15001, "dns_port": 15053,
        "dns_resolvers": ["198.18.0.53"], "access_log": "/var/run/gossamer/access.log",
    } | over
    return NodeMetadata.from_metadata("frontend-0.default", meta)


def _snapshot(docs: list[Resource], proxy: NodeMetadata | None = None) -> Any:
    return translate_proxy(translate_mesh(build_index(docs, 3)), proxy or _client()).snapshot


def _routes(snap: Any, name: str) -> RouteConfiguration:
    return RouteConfiguration.FromString(snap.of(ROUTE)[name].payload)


def _listener(snap: Any, name: str) -> Listener:
    return Listener.FromString(snap.of(LISTENER)[name].payload)


def _external_vhosts(config: RouteConfiguration) -> dict[str, dict[str, Any]]:
    return {v.name: to_dict(v) for v in config.virtual_hosts if v.name.startswith("external:")}


def test_golden_external_clusters_routes_and_capture_parts() -> None:
    snap = _snapshot(_docs(PAYMENTS, LEDGER))
    capture = _listener(snap, CAPTURE_LISTENER)
    dns = to_dict(_listener(snap, DNS_LISTENER))["listenerFilters"][0]["typedConfig"]
    actual = {
        "clusters": {n: to_dict(Cluster.FromString(r.payload))
                     for n, r in sorted(snap.of(CLUSTER).items()) if n.startswith("external|")},
        "outbound": _external_vhosts(_routes(snap, "outbound")),
        "capture_chains": [to_dict(c) for c in capture.filter_chains
                           if c.name.startswith("external:")],
        "capture_http_chains": [c.name for c in capture.filter_chains
                                if c.name.startswith("http:")],
        "dns": [d for d in dns["serverConfig"]["inlineDnsTable"]["virtualDomains"]
                if d["name"].endswith(".example")],
    }
    golden = HERE / "golden" / "external-frontend.json"
    if os.environ.get("GOSSAMER_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(golden.read_text())


def test_tls_origination_checks_the_ca_sni_and_names() -> None:
    snap = _snapshot(_docs(PAYMENTS))
    cluster = Cluster.FromString(snap.of(CLUSTER)["external|80|api.payments.example|"
                                                  "payments.default"].payload)
    assert cluster.type == Cluster.LOGICAL_DNS
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (address.socket_address.address, address.socket_address.port_value) == (
        "api.payments.example", 443)
    tls = UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(tls)
    assert tls.sni == "api.payments.example"
    validation = tls.common_tls_context.validation_context
    assert validation.trusted_ca.filename == "/etc/gossamer/payments-ca.pem"
    assert [m.matcher.exact for m in validation.match_typed_subject_alt_names] == [
        "api.payments.example"]


def test_an_inline_ca_bundle_and_a_client_certificate() -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "payments CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    doc = json.loads(json.dumps(PAYMENTS))
    doc["spec"]["tls"] = {"mode": "ORIGINATE", "caBundle": {"pem": pem}, "sni": "pay.example",
                          "clientCertificate": {"certificateFile": "/etc/g/c.pem",
                                                "privateKeyFile": "/etc/g/k.pem"}}
    snap = _snapshot(_docs(doc))
    cluster = Cluster.FromString(snap.of(CLUSTER)["external|80|api.payments.example|"
                                                  "payments.default"].payload)
    tls = UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(tls)
    assert tls.sni == "pay.example"
    common = tls.common_tls_context
    assert common.validation_context.trusted_ca.inline_string == pem
    # No subjectAltNames: the certificate must name the SNI.
    assert [m.matcher.exact for m in common.validation_context.match_typed_subject_alt_names
            ] == ["pay.example"]
    assert common.tls_certificates[0].private_key.filename == "/etc/g/k.pem"


def test_registry_only_refuses_unknown_hosts_but_routes_external_ones() -> None:
    snap = _snapshot(_docs(PAYMENTS, MESH_REGISTRY_ONLY))
    config = _routes(snap, CAPTURE_ROUTES)
    payments = next(v for v in config.virtual_hosts if "api.payments.example" in v.domains)
    assert payments.routes[0].route.cluster == \
        "external|80|api.payments.example|payments.default"
    last = config.virtual_hosts[-1].routes[0]
    assert (last.direct_response.status, last.direct_response.body.inline_string) == (
        502, REFUSED_BODY)
    assert "ExternalService" in REFUSED_BODY


def test_explicit_mode_routes_external_hosts_on_the_outbound_listener() -> None:
    proxy = _client(capture=False)
    snap = _snapshot(_docs(PAYMENTS), proxy)
    assert CAPTURE_LISTENER not in snap.of(LISTENER)
    vhosts = _external_vhosts(_routes(snap, "outbound"))
    domains = vhosts["external:api.payments.example@payments.default:80"]["domains"]
    assert domains[:2] == ["api.payments.example", "api.payments.example:80"]


def test_a_host_that_names_a_mesh_service_is_left_to_the_service() -> None:
    doc = json.loads(json.dumps(PAYMENTS))
    doc["spec"]["hosts"] = ["catalog.default", "api.payments.example"]
    snap = _snapshot(_docs(doc))  # Envoy would refuse a domain listed twice
    config = _routes(snap, "outbound")
    owners = [v.name for v in config.virtual_hosts if "catalog.default" in v.domains]
    assert owners == ["catalog.default:80"]
    assert "external|80|catalog.default|payments.default" not in snap.of(CLUSTER)
    from gossamer.model import ResourceKey
    conds = build_index(_docs(doc), 3).conditions[ResourceKey("ExternalService", "default",
                                                               "payments")]
    assert [(c.type, c.status) for c in conds] == [("Accepted", "True"),
                                                    ("HostsAccepted", "False")]
    assert conds[1].reason == "HostConflict"
    assert "catalog.default (Service default/catalog's)" in conds[1].message


def test_applying_an_external_service_retranslates_proxies() -> None:
    proxy = _client()
    before = proxy_inputs(translate_mesh(build_index(_docs(), 3)), proxy)
    after = proxy_inputs(translate_mesh(build_index(_docs(PAYMENTS), 4)), proxy)
    assert before != after
    again = proxy_inputs(translate_mesh(build_index(_docs(PAYMENTS), 5)), proxy)
    assert after == again


def test_incremental_translation_keeps_the_external_parts() -> None:
    docs = _docs(PAYMENTS)
    first = translate_mesh(build_index(docs, 3))
    index = build_index(docs, 4, previous=first.index)
    second = translate_mesh(index, previous=first)
    assert second.external is first.external
    changed = _docs(LEDGER)
    third = translate_mesh(build_index(changed, 5, previous=index), previous=second)
    assert third.external is not second.external
    assert not any(n.startswith("external|80|api.payments") for n in third.external.clusters)


def _via(via: str = "egress") -> dict[str, Any]:
    doc = json.loads(json.dumps(PAYMENTS))
    doc["spec"]["egress"] = {"via": via}
    return doc


EGRESS_SERVICE = {"apiVersion": API, "kind": "Service", "metadata": {"name": "egress"},
                  "spec": {"ports": [{"port": 80, "protocol": "http"}]}}
ONLY_FRONTEND = {
    "apiVersion": API, "kind": "AuthorizationPolicy", "metadata": {"name": "egress-allow"},
    "spec": {"targetRef": {"kind": "Service", "name": "egress"}, "action": "ALLOW",
             "rules": [{"from": [{"source": {
                 "principals": ["gossamer.local/ns/default/sa/frontend"]}}],
                        "to": [{"operation": {"hosts": ["api.payments.example"]}}]}]}}


def _gateway_node() -> NodeMetadata:
    return NodeMetadata.from_metadata("egress-0.default", {
        "service": "egress", "namespace": "default", "workload": "egress-0",
        "inbound_port": 15006, "inbound_address": "198.18.0.9", "app_port": 0,
        "outbound_port": 15002, "gateway": "egress"})


def test_through_a_gateway_sidecars_send_to_its_service_over_the_mesh() -> None:
    snap = _snapshot(_docs(_via(), EGRESS_SERVICE), _client(capture=False))
    vhosts = _external_vhosts(_routes(snap, "outbound"))
    route = vhosts["external:api.payments.example@payments.default:80"]["routes"][0]
    assert route["route"]["cluster"] == "outbound|80||egress.default"
    assert "outbound|80||egress.default" in snap.of(CLUSTER)
    assert "outbound|80||egress.default" in snap.of("type.googleapis.com/envoy.config."
                                                    "endpoint.v3.ClusterLoadAssignment")
    # The TLS-originating cluster is the gateway's alone.
    assert not any(n.startswith("external|") for n in snap.of(CLUSTER))


def test_a_scoped_sidecar_still_gets_the_gateway_cluster() -> None:
    scope = {"apiVersion": API, "kind": "Sidecar", "metadata": {"name": "narrow"},
             "spec": {"egress": {"hosts": ["./catalog"]}}}
    snap = _snapshot(_docs(_via(), EGRESS_SERVICE, scope), _client(capture=False))
    assert "outbound|80||egress.default" in snap.of(CLUSTER)
    assert "outbound|80||frontend.default" not in snap.of(CLUSTER)


def test_the_gateway_routes_by_host_to_the_originating_cluster() -> None:
    snap = _snapshot(_docs(_via(), EGRESS_SERVICE, ONLY_FRONTEND), _gateway_node())
    listener = to_dict(_listener(snap, "inbound"))
    hcm = listener["filterChains"][0]["filters"][0]["typedConfig"]
    config = hcm["routeConfig"]
    assert config["requestHeadersToRemove"] == ["x-forwarded-client-cert"]
    [payments, fallback] = config["virtualHosts"]
    assert payments["routes"][0]["route"]["cluster"] == \
        "external|80|api.payments.example|payments.default"
    assert "api.payments.example" in payments["domains"]
    assert fallback["routes"][0]["directResponse"]["status"] == 404
    assert "external|80|api.payments.example|payments.default" in snap.of(CLUSTER)
    # The AuthorizationPolicy on Service egress names the host it allows.
    rbac = json.dumps([f for f in hcm["httpFilters"] if "rbac" in f["name"]])
    assert '":authority"' in rbac
    assert "api.payments.example" in rbac
    assert "frontend" in rbac


def test_a_gateway_service_that_does_not_exist_answers_503() -> None:
    snap = _snapshot(_docs(_via("nosuch")), _client(capture=False))
    vhosts = _external_vhosts(_routes(snap, "outbound"))
    route = vhosts["external:api.payments.example@payments.default:80"]["routes"][0]
    assert route["directResponse"]["status"] == 503
    assert "default/nosuch" in route["directResponse"]["body"]["inlineString"]


RESILIENCE = {
    "apiVersion": API, "kind": "ResiliencePolicy", "metadata": {"name": "payments"},
    "spec": {"targetRef": {"kind": "ExternalService", "name": "payments"},
             "timeouts": {"request": "4s", "connect": "1s"},
             "retries": {"attempts": 2, "retryOn": ["5xx"]},
             "circuitBreaker": {"maxConnections": 7, "maxPendingRequests": 3},
             "outlierDetection": {"consecutive5xx": 4}}}


def test_a_resilience_policy_on_an_external_service_applies_to_its_callers() -> None:
    snap = _snapshot(_docs(PAYMENTS, RESILIENCE), _client(capture=False))
    cluster = to_dict(Cluster.FromString(snap.of(CLUSTER)[
        "external|80|api.payments.example|payments.default"].payload))
    assert cluster["connectTimeout"] == "1s"  # the policy's, over timeouts.connect
    assert cluster["circuitBreakers"]["thresholds"][0]["maxConnections"] == 7
    assert cluster["outlierDetection"]["consecutive5xx"] == 4
    vhosts = _external_vhosts(_routes(snap, "outbound"))
    route = vhosts["external:api.payments.example@payments.default:80"]["routes"][0]["route"]
    assert route["timeout"] == "4s"
    assert route["retryPolicy"]["numRetries"] == 2
    assert "5xx" in route["retryPolicy"]["retryOn"]


def test_a_resilience_policy_reports_whether_its_external_service_exists() -> None:
    from gossamer.model import ResourceKey

    found = build_index(_docs(PAYMENTS, RESILIENCE), 3)
    key = ResourceKey("ResiliencePolicy", "default", "payments")
    assert [(c.type, c.status) for c in found.conditions[key]] == [
        ("Accepted", "True"), ("ResolvedRefs", "True")]
    assert found.external_resilience[("default", "payments")].metadata.name == "payments"
    assert ("default", "payments") not in found.resilience  # no Service of that name
    missing = build_index(_docs(RESILIENCE), 3)
    resolved = missing.conditions[key][1]
    assert (resolved.status, resolved.reason) == ("False", "TargetNotFound")
    assert "ExternalService 'payments'" in resolved.message


def test_a_host_that_is_a_services_mesh_domain_name_is_left_to_it() -> None:
    doc = json.loads(json.dumps(PAYMENTS))
    doc["spec"]["hosts"] = ["catalog.default.corp", "api.payments.example"]
    mesh = {"apiVersion": API, "kind": "Mesh", "metadata": {"name": "default"},
            "spec": {"dnsDomain": "corp"}}
    snap = _snapshot(_docs(doc, mesh))
    dns = to_dict(_listener(snap, DNS_LISTENER))["listenerFilters"][0]["typedConfig"]
    names = [d["name"] for d in dns["serverConfig"]["inlineDnsTable"]["virtualDomains"]]
    assert names.count("catalog.default.corp") == 1  # the Service's, once
    assert "api.payments.example" in names


WILD = {"apiVersion": API, "kind": "ExternalService", "metadata": {"name": "wild"},
        "spec": {"hosts": ["*.wild.example"],
                 "ports": [{"port": 80, "protocol": "HTTP", "targetPort": 8443}],
                 "tls": {"mode": "ORIGINATE", "caBundle": {"file": "/etc/g/ca.pem"}}}}


def test_a_wildcard_host_goes_where_the_app_connected_named_by_its_host() -> None:
    snap = _snapshot(_docs(WILD, MESH_REGISTRY_ONLY))
    cluster = to_dict(Cluster.FromString(snap.of(CLUSTER)["external|80|*|wild.default"].payload))
    assert (cluster["type"], cluster["lbPolicy"]) == ("ORIGINAL_DST", "CLUSTER_PROVIDED")
    assert cluster["originalDstLbConfig"]["upstreamPortOverride"] == 8443
    tls = cluster["transportSocket"]["typedConfig"]
    assert "sni" not in tls
    assert tls["commonTlsContext"]["validationContext"]["trustedCa"]["filename"] == \
        "/etc/g/ca.pem"
    options = cluster["typedExtensionProtocolOptions"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["upstreamHttpProtocolOptions"] == {"autoSni": True,
                                                       "autoSanValidation": True}
    capture = _routes(snap, CAPTURE_ROUTES)
    wild = next(v for v in capture.virtual_hosts if "*.wild.example" in v.domains)
    assert wild.routes[0].route.cluster == "external|80|*|wild.default"
    assert capture.virtual_hosts[-1].routes[0].direct_response.status == 502  # the rest
    # Capture's one virtual host for them (not the explicit mode's too).
    assert [v.name for v in capture.virtual_hosts if "*.wild.example" in v.domains] == \
        ["external:*@wild.default:80"]
    dns = to_dict(_listener(snap, DNS_LISTENER))["listenerFilters"][0]["typedConfig"]
    assert not any("wild" in d["name"]
                   for d in dns["serverConfig"]["inlineDnsTable"]["virtualDomains"])


def test_a_rate_limit_policy_on_the_egress_gateway_limits_what_goes_out() -> None:
    limit = {"apiVersion": API, "kind": "RateLimitPolicy", "metadata": {"name": "egress"},
             "spec": {"targetRef": {"kind": "Service", "name": "egress"},
                      "local": {"requests": 10, "per": "1s"}}}
    snap = _snapshot(_docs(_via(), EGRESS_SERVICE, limit), _gateway_node())
    hcm = to_dict(_listener(snap, "inbound"))["filterChains"][0]["filters"][0]["typedConfig"]
    limits = [f for f in hcm["httpFilters"] if "local_ratelimit" in f["name"]]
    assert limits
    assert limits[0]["typedConfig"]["tokenBucket"]["maxTokens"] == 10


RAW_VIA = {
    "apiVersion": API, "kind": "ExternalService",
    "metadata": {"name": "raw", "namespace": "default"},
    "spec": {"hosts": ["raw.bank.example"], "endpoints": ["198.18.7.10"],
             "ports": [{"port": 9000, "protocol": "TCP", "targetPort": 8443}],
             "tls": {"mode": "ORIGINATE", "caBundle": {"file": "/etc/bank-ca.pem"}},
             "egress": {"via": "egress"}}}
RAW_SNI = "9000.raw.default.egress.gossamer.internal"


def test_a_tcp_port_through_a_gateway_goes_over_mtls_named_by_sni() -> None:
    snap = _snapshot(_docs(RAW_VIA, EGRESS_SERVICE))
    [chain] = [c for c in to_dict(_listener(snap, CAPTURE_LISTENER))["filterChains"]
               if c.get("name") == "external:raw.default:9000"]
    tcp = chain["filters"][-1]["typedConfig"]
    assert tcp["cluster"] == "external-via|9000||raw.default"
    cluster = Cluster.FromString(snap.of(CLUSTER)["external-via|9000||raw.default"].payload)
    # The gateway Service's endpoints and identities, with the port's SNI.
    assert cluster.eds_cluster_config.service_name == "outbound|80||egress.default"
    context = UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == RAW_SNI
    assert context.common_tls_context.tls_certificate_sds_secret_configs
    assert not cluster.typed_extension_protocol_options  # bytes, not HTTP/2
    assert "outbound|80||egress.default" in snap.of("type.googleapis.com/envoy.config."
                                                    "endpoint.v3.ClusterLoadAssignment")
    assert not any(n.startswith("external|") for n in snap.of(CLUSTER))


def test_the_gateway_picks_a_tcp_port_by_sni_and_originates_tls() -> None:
    snap = _snapshot(_docs(RAW_VIA, EGRESS_SERVICE, ONLY_FRONTEND), _gateway_node())
    chains = to_dict(_listener(snap, "inbound"))["filterChains"]
    [chain] = [c for c in chains if c["filterChainMatch"].get("serverNames")]
    assert chain["filterChainMatch"] == {"serverNames": [RAW_SNI], "transportProtocol": "tls"}
    assert chain["transportSocket"]["typedConfig"]["requireClientCertificate"] is True
    *rbac, tcp = chain["filters"]
    assert tcp["typedConfig"]["cluster"] == "external|9000||raw.default"
    # Service egress's policy, as for TCP: its rule names a host, so it allows nothing.
    assert [f["name"] for f in rbac] == ["envoy.filters.network.rbac.allow"]
    cluster = Cluster.FromString(snap.of(CLUSTER)["external|9000||raw.default"].payload)
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"


def test_a_tcp_port_through_a_missing_gateway_service_gets_no_chain() -> None:
    snap = _snapshot(_docs(RAW_VIA))
    names = [c.get("name") for c in to_dict(_listener(snap, CAPTURE_LISTENER))["filterChains"]]
    assert "external:raw.default:9000" not in names
    assert "external-via|9000||raw.default" not in snap.of(CLUSTER)


def _payments_limit(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "RateLimitPolicy", "metadata": {"name": "pay-limit"},
            "spec": {"targetRef": {"kind": "ExternalService", "name": "payments"}, **spec}}


def test_a_rate_limit_on_an_external_service_is_on_the_callers_route_without_a_gateway(
        ) -> None:
    limit = _payments_limit(local={"requests": 5, "per": "1s"},
                            **{"global": {"rules": [{"requests": 9, "per": "1m"}]}})
    snap = _snapshot(_docs(PAYMENTS, limit), _client(capture=False))
    [route] = _external_vhosts(_routes(snap, "outbound"))[
        "external:api.payments.example@payments.default:80"]["routes"]
    config = route["typedPerFilterConfig"]
    assert config["gossamer.external.local_ratelimit"]["tokenBucket"]["maxTokens"] == 5
    [rule] = config["gossamer.external.ratelimit"]["rateLimits"]
    assert rule["actions"][0]["genericKey"]["descriptorValue"].endswith("pay-limit/0")
    # The filters the route turns on are on the manager, disabled, only while a limit
    # needs them (each costs every request a little even disabled).
    def filters(snapshot: Any) -> list[str]:
        hcm = to_dict(_listener(snapshot, "outbound"))["filterChains"][0]["filters"][0]
        return [f["name"] for f in hcm["typedConfig"]["httpFilters"]]
    assert filters(snap)[-3:] == ["gossamer.external.local_ratelimit",
                                  "gossamer.external.ratelimit", "envoy.filters.http.router"]
    assert "gossamer.external.ratelimit" not in filters(
        _snapshot(_docs(PAYMENTS), _client(capture=False)))
    index = build_index(_docs(PAYMENTS, limit), 3)
    assert [c.status for c in index.conditions[("RateLimitPolicy", "default", "pay-limit")]] \
        == ["True", "True"]


def test_a_rate_limit_on_an_external_service_through_a_gateway_is_at_the_gateway() -> None:
    docs = _docs(_via(), EGRESS_SERVICE, _payments_limit(local={"requests": 5, "per": "1s"}))
    sidecar = _snapshot(docs, _client(capture=False))
    [route] = _external_vhosts(_routes(sidecar, "outbound"))[
        "external:api.payments.example@payments.default:80"]["routes"]
    assert "typedPerFilterConfig" not in route  # not twice: the gateway's bucket is the one
    hcm = to_dict(_listener(_snapshot(docs, _gateway_node()), "inbound"))[
        "filterChains"][0]["filters"][0]["typedConfig"]
    [payments, _] = hcm["routeConfig"]["virtualHosts"]
    assert payments["routes"][0]["typedPerFilterConfig"][
        "gossamer.external.local_ratelimit"]["tokenBucket"]["maxTokens"] == 5
    names = [f["name"] for f in hcm["httpFilters"]]
    assert names[-3:] == ["gossamer.external.local_ratelimit", "gossamer.external.ratelimit",
                          "envoy.filters.http.router"]


def test_a_rate_limit_on_a_missing_external_service_says_so() -> None:
    index = build_index(_docs(_payments_limit(local={"requests": 5, "per": "1s"})), 3)
    accepted, resolved = index.conditions[("RateLimitPolicy", "default", "pay-limit")]
    assert accepted.status == "True"
    assert (resolved.status, resolved.reason) == ("False", "TargetNotFound")
    assert "ExternalService 'payments'" in resolved.message


def test_in_explicit_mode_a_wildcard_host_is_resolved_by_name_on_its_target_port() -> None:
    snap = _snapshot(_docs(WILD), _client(capture=False))
    [vhost] = [to_dict(v) for v in _routes(snap, "outbound").virtual_hosts
               if "*.wild.example" in v.domains]
    [route] = vhost["routes"]
    assert route["route"]["cluster"] == "external|80|dns|wild.default"
    port = route["typedPerFilterConfig"]["gossamer.external.set_port"]["onRequestHeaders"][0]
    assert port["objectKey"] == "envoy.upstream.dynamic_port"
    assert port["formatString"]["textFormatSource"]["inlineString"] == "8443"
    assert "gossamer.external.forward_proxy" in route["typedPerFilterConfig"]
    cluster = to_dict(Cluster.FromString(
        snap.of(CLUSTER)["external|80|dns|wild.default"].payload))
    assert cluster["clusterType"]["name"] == "envoy.clusters.dynamic_forward_proxy"
    assert cluster["lbPolicy"] == "CLUSTER_PROVIDED"
    assert cluster["typedExtensionProtocolOptions"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "upstreamHttpProtocolOptions"] == {"autoSni": True, "autoSanValidation": True}
    hcm = to_dict(_listener(snap, "outbound"))["filterChains"][0]["filters"][0]["typedConfig"]
    names = [f["name"] for f in hcm["httpFilters"]]
    assert names[-3:] == ["gossamer.external.set_port", "gossamer.external.forward_proxy",
                          "envoy.filters.http.router"]
    assert all(f.get("disabled") for f in hcm["httpFilters"][-3:-1])
