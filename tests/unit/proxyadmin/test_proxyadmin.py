"""Reaching sidecars' admins on any host (proxyadmin/, agent/adminlisteners.py): the two
static listeners as Envoy's own protos parse them, where the control plane dials a
proxy from its metadata, the control plane's client certificate, the redacted config
dump, and the Prometheus targets. Real Envoy: tests/envoy/test_admin_listener.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 - Any types
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

import gossamer
from gossamer.agent.bootstrap import bootstrap
from gossamer.agent.ports import PortInUse, off_host_port
from gossamer.ca.authority import MeshCA
from gossamer.ca.errors import IdentityMismatch
from gossamer.ca.pki import generate_workload_key, make_csr
from gossamer.contract.names import CERT_SECRET, ROOT_SECRET, sds_config
from gossamer.contract.node import NodeMetadata
from gossamer.contract.spiffe import SpiffeId, control_plane_id
from gossamer.proxyadmin import configdump
from gossamer.proxyadmin.access import SidecarAdmin
from gossamer.proxyadmin.target import ADMIN_CLUSTER, ALLOWED
from gossamer.store import open_store
from gossamer.telemetry.promconfig import scrape_config, sidecar_targets

TD = "gossamer.local"
CP_ID = "spiffe://gossamer.local/ns/gossamer-system/sa/control-plane"
NODE = NodeMetadata(node_id="web-1.default", service="web", namespace="default", workload="web-1",
                inbound_port=15006, inbound_address="198.18.0.3", app_port=8080,
                app_protocol=None, outbound_port=15001, admin_port=15000,
                admin_tls_port=15091, prometheus_port=15090)


def _tls_bootstrap(node: NodeMetadata = NODE) -> dict[str, Any]:
    return bootstrap(node, "198.18.0.2", 15010, sds_socket="/run/sds.sock", tls=True,
                     trust_domain=TD)


def _listener(b: bootstrap_pb2.Bootstrap, name: str) -> Any:
    [found] = [x for x in b.static_resources.listeners if x.name == name]
    return found


def _hcm(listener: Any) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return hcm


def test_the_admin_listeners_parse_as_envoys_bootstrap() -> None:
    b = json_format.ParseDict(_tls_bootstrap(), bootstrap_pb2.Bootstrap())
    admin, prom = _listener(b, "gossamer_admin"), _listener(b, "gossamer_prometheus")
    for listener, port in ((admin, 15091), (prom, 15090)):
        assert (listener.address.socket_address.address,
                listener.address.socket_address.port_value) == ("198.18.0.3", port)
        assert listener.enable_reuse_port.value is False
    [cluster] = [c for c in b.static_resources.clusters if c.name == ADMIN_CLUSTER]
    [endpoint] = cluster.load_assignment.endpoints[0].lb_endpoints
    assert (endpoint.endpoint.address.socket_address.address,
            endpoint.endpoint.address.socket_address.port_value) == ("127.0.0.1", 15000)
    # Envoy's own admin stays on loopback.
    assert b.admin.address.socket_address.address == "127.0.0.1"

    tls = tls_pb2.DownstreamTlsContext()
    admin.filter_chains[0].transport_socket.typed_config.Unpack(tls)
    assert tls.require_client_certificate.value is True
    common = tls.common_tls_context
    assert common.tls_params.tls_minimum_protocol_version == common.tls_params.TLSv1_3
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == [CERT_SECRET]
    validation = common.combined_validation_context
    assert validation.validation_context_sds_secret_config.name == ROOT_SECRET
    [san] = validation.default_validation_context.match_typed_subject_alt_names
    assert (san.san_type, san.matcher.exact) == (san.URI, CP_ID)
    # One SDS subscription per secret: the same config source as every other reference.
    assert json_format.MessageToDict(
        common.tls_certificate_sds_secret_configs[0].sds_config) == json_format.MessageToDict(
        json_format.ParseDict(sds_config(), type(common.tls_certificate_sds_secret_configs[0]
                                                 .sds_config)()))


def _routes(listener: Any) -> list[tuple[str, str, str, str]]:
    """(method, match, path, what) per route: the cluster, or the direct status."""
    out = []
    hcm = _hcm(listener)
    assert hcm.normalize_path.value
    assert hcm.merge_slashes
    assert hcm.path_with_escaped_slashes_action == hcm.REJECT_REQUEST
    for r in hcm.route_config.virtual_hosts[0].routes:
        kind = r.match.WhichOneof("path_specifier")
        method = r.match.headers[0].string_match.exact if r.match.headers else "*"
        what = r.route.cluster if r.HasField("route") else str(r.direct_response.status)
        out.append((method, kind, getattr(r.match, kind), what))
    return out


def test_the_admin_listener_passes_on_only_the_allow_list() -> None:
    b = json_format.ParseDict(_tls_bootstrap(), bootstrap_pb2.Bootstrap())
    assert _routes(_listener(b, "gossamer_admin")) == [
        ("GET", "prefix", "/stats", ADMIN_CLUSTER),
        ("GET", "prefix", "/config_dump", ADMIN_CLUSTER),
        ("GET", "path", "/clusters", ADMIN_CLUSTER), ("GET", "path", "/certs", ADMIN_CLUSTER),
        ("GET", "path", "/ready", ADMIN_CLUSTER), ("GET", "path", "/server_info", ADMIN_CLUSTER),
        ("POST", "path", "/tap", ADMIN_CLUSTER), ("*", "prefix", "/", "403")]
    assert len(ALLOWED) == 7
    assert _routes(_listener(b, "gossamer_prometheus")) == [
        ("GET", "path", "/stats/prometheus", ADMIN_CLUSTER), ("*", "prefix", "/", "404")]
    # The tap streams as long as the control plane reads: no route or idle timeout.
    tap = _hcm(_listener(b, "gossamer_admin")).route_config.virtual_hosts[0].routes[6].route
    assert (tap.timeout.ToSeconds(), tap.idle_timeout.ToSeconds()) == (0, 0)


def test_the_listeners_and_their_metadata_follow_the_ports() -> None:
    meta = NODE.to_metadata()
    assert {k: meta[k] for k in ("admin_tls_address", "admin_tls_port", "prometheus_address",
                                 "prometheus_port")} == {
        "admin_tls_address": "198.18.0.3", "admin_tls_port": 15091,
        "prometheus_address": "198.18.0.3", "prometheus_port": 15090}
    off = NodeMetadata(**{**NODE.__dict__, "admin_tls_port": 0, "prometheus_port": 0})
    doc = bootstrap(off, "198.18.0.2", 15010)
    assert "listeners" not in doc["staticResources"]
    assert [c["name"] for c in doc["staticResources"]["clusters"]] == ["gossamer_xds"]
    assert not {"admin_tls_port", "prometheus_port"} & set(off.to_metadata())
    # Prometheus's listener needs no TLS; the control plane's does.
    prom_only = NodeMetadata(**{**NODE.__dict__, "admin_tls_port": 0})
    names = [x["name"] for x in bootstrap(prom_only, "x", 1)["staticResources"]["listeners"]]
    assert names == ["gossamer_prometheus"]
    with pytest.raises(ValueError, match="needs a TLS bootstrap and the trust domain"):
        bootstrap(NODE, "198.18.0.2", 15010)
    with pytest.raises(ValueError, match="needs a TLS bootstrap and the trust domain"):
        bootstrap(NODE, "198.18.0.2", 15010, sds_socket="/s", tls=True)


def test_off_host_ports_default_on_a_host_address_and_off_on_loopback() -> None:
    import socket

    with socket.socket() as probe:  # a free port of this host's loopback
        probe.bind(("127.0.0.2", 0))
        default = probe.getsockname()[1]
    assert off_host_port(None, "127.0.0.1", default, "--admin-tls-port") == 0
    assert off_host_port(None, "::1", default, "--prometheus-port") == 0
    assert off_host_port(0, "127.0.0.2", default, "--admin-tls-port") == 0
    assert off_host_port(default, "127.0.0.1", 15091, "--admin-tls-port") == default
    # 127.0.0.2 stands for a host address here (it is not loopback to the rule)...
    with mock_loopback(False):
        assert off_host_port(None, "127.0.0.2", default, "--admin-tls-port") == default
        with socket.create_server(("127.0.0.2", default)):
            # ... whose default port another sidecar holds: a free one instead.
            other = off_host_port(None, "127.0.0.2", default, "--admin-tls-port")
            assert other not in (0, default)
        assert off_host_port(None, "127.0.0.2", default, "--admin-tls-port",
                             own={default}) not in (0, default)


def mock_loopback(value: bool) -> Any:
    from unittest import mock

    return mock.patch("gossamer.agent.ports.is_loopback", return_value=value)


def test_an_asked_port_that_is_taken_is_refused_in_one_line() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=rf"--admin-tls-port {port}: cannot listen on "
                                            rf"127.0.0.1:{port} \(Address already in use\); "
                                            "another sidecar on this host"):
            off_host_port(port, "127.0.0.1", 15091, "--admin-tls-port")
    assert off_host_port(port, "127.0.0.1", 15091, "--admin-tls-port") == port  # free again
    with pytest.raises(PortInUse, match="--prometheus-port 15006 is also one of this "
                                        "sidecar's own ports"):
        off_host_port(15006, "127.0.0.1", 15090, "--prometheus-port", own={15006})


def _meta(**extra: Any) -> dict[str, Any]:
    return {"service": "web", "namespace": "shop", "workload": "web-0", "admin_port": 15000,
            "inbound_address": "198.18.0.3", **extra}


async def _ca(clock: Any = None) -> MeshCA:
    kwargs = {"clock": clock} if clock else {}
    return await MeshCA.open(open_store("memory://"), TD, **kwargs)


async def test_where_the_control_plane_dials_a_sidecar() -> None:
    remote = _meta(admin_tls_address="198.18.0.3", admin_tls_port=15091)
    # Without the CA (security off) the mTLS listener cannot be used; a remote sidecar's
    # loopback is not ours, so it is not dialled there either.
    plain = SidecarAdmin()
    assert plain.target(remote) is None
    assert plain.target(_meta()) is None
    local = plain.target(_meta(inbound_address="127.0.0.1"))
    assert local is not None
    assert (local.host, local.port, local.tls) == ("127.0.0.1", 15000, None)
    assert str(local) == "127.0.0.1:15000"
    with_ca = SidecarAdmin(await _ca())
    target = with_ca.target(remote)
    assert target is not None
    assert target.tls is not None
    assert (target.host, target.port, str(target)) == ("198.18.0.3", 15091,
                                                       "198.18.0.3:15091 (mTLS)")
    assert target.tls.spiffe_id == "spiffe://gossamer.local/ns/shop/sa/web"
    account = with_ca.target({**remote, "service_account": "web-sa"})
    assert account is not None
    assert account.tls is not None
    assert account.tls.spiffe_id == "spiffe://gossamer.local/ns/shop/sa/web-sa"
    assert with_ca.target({**remote, "admin_tls_port": 0}) is None


async def test_the_control_planes_client_certificate() -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    ca = await _ca(lambda: now[0])
    chain, key = ca.control_plane_client_cert()
    cert = x509.load_pem_x509_certificate(chain)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [CP_ID]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert b"PRIVATE KEY" in key
    admin = SidecarAdmin(ca)
    context = admin.context()
    assert admin.context() is context  # one context while nothing changed
    assert ca.control_plane_client_cert() == (chain, key)
    # Renewed at half its life (as the serving certificate), and the context with it.
    now[0] += ca.server_ttl / 2 + timedelta(seconds=1)
    renewed, _ = ca.control_plane_client_cert()
    assert renewed != chain
    assert admin.context() is not context
    # A root rotation's switch: the next one comes from the new signer.
    await ca.begin_root_rotation()
    await ca.switch_signer()
    switched = x509.load_pem_x509_certificate(ca.control_plane_client_cert()[0])
    switched.verify_directly_issued_by(ca.signer.cert)
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(ca.signer.cert)


async def test_no_csr_gets_the_control_planes_identity() -> None:
    ca = await _ca()
    identity = control_plane_id(TD)
    with pytest.raises(IdentityMismatch, match="the control plane's own identity"):
        ca.sign(make_csr(generate_workload_key(), identity), identity)
    other = SpiffeId(TD, "gossamer-system", "other")
    assert ca.sign(make_csr(generate_workload_key(), other), other).spiffe_id == other


def test_the_config_dump_is_selected_and_redacted() -> None:
    dump = {"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": {
            "dynamic_resources": {"ads_config": {"grpc_services": [{"initial_metadata": [
                {"key": "authorization", "value": "Bearer gst_secret"}]}]}}}},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
         "dynamic_active_clusters": [{"cluster": {"name": "c"}}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
         "dynamic_endpoint_configs": [{"endpoint_config": {"cluster_name": "c"}}]}]}
    assert configdump.target("clusters") == "/config_dump"
    assert configdump.target("endpoints") == "/config_dump?include_eds"
    assert configdump.target("all") == "/config_dump?include_eds"
    with pytest.raises(configdump.BadSection, match="unknown section 'secrets'"):
        configdump.target("secrets")
    assert configdump.select(dump, "clusters") == {
        "dynamic_active_clusters": [{"cluster": {"name": "c"}}]}
    everything = configdump.select(dump, "all")
    assert set(everything) == {"bootstrap", "dynamic_active_clusters", "dynamic_endpoint_configs"}
    assert "gst_secret" not in repr(everything)
    assert everything["bootstrap"]["dynamic_resources"]["ads_config"]["grpc_services"][0][
        "initial_metadata"] == [{"key": "authorization", "value": "[redacted]"}]


PROXIES = [
    {"node_id": "b-0.shop", "connected": True, "metadata": _meta(
        service="b", workload="b-0", prometheus_address="198.18.0.3", prometheus_port=15090)},
    {"node_id": "c-0.shop", "connected": True, "metadata": _meta(
        service="c", workload="c-0", inbound_address="fd00::3", prometheus_address="fd00::3",
        prometheus_port=15090)},
    {"node_id": "l-0.shop", "connected": True, "metadata": _meta(
        service="l", workload="l-0", inbound_address="127.0.0.1", admin_port=9901)},
    # On a host address without the Prometheus listener: nothing Prometheus can reach.
    {"node_id": "r-0.shop", "connected": True, "metadata": _meta(service="r", workload="r-0")},
]


def test_prometheus_scrapes_every_host() -> None:
    assert [(t["targets"], t["labels"]["workload"]) for t in sidecar_targets(PROXIES)] == [
        (["198.18.0.3:15090"], "b-0"), (["[fd00::3]:15090"], "c-0"),
        (["127.0.0.1:9901"], "l-0")]
    config = scrape_config("https://198.18.0.2:15080", PROXIES, ca_file="/etc/gossamer/ca.pem")
    cp = config["scrape_configs"][0]
    assert (cp["scheme"], cp["tls_config"], cp["static_configs"]) == (
        "https", {"ca_file": "/etc/gossamer/ca.pem"}, [{"targets": ["198.18.0.2:15080"]}])
    assert "tls_config" not in scrape_config("https://cp:15080", PROXIES)["scrape_configs"][0]
    assert "tls_config" not in scrape_config("http://127.0.0.1:15080", PROXIES,
                                             ca_file="/x")["scrape_configs"][0]


SOURCE = Path(gossamer.__file__).parent


def test_no_observability_code_assumes_a_sidecar_on_loopback() -> None:
    """Where a sidecar's admin is reached is proxyadmin/'s business alone: telemetry/ and
    tap/ name no loopback address, and the CLI dials no admin itself (it asks the API)."""
    loopback = re.compile(r"127\.0\.0\.1|localhost|::1")
    for folder in ("telemetry", "tap"):
        for path in sorted((SOURCE / folder).glob("*.py")):
            assert not loopback.search(path.read_text()), path
    for path in sorted((SOURCE / "cli").glob("*.py")):
        assert "envoyadmin" not in path.read_text(), path


async def test_no_join_token_grants_the_control_planes_identity() -> None:
    import httpx

    from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions

    cp = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, api_port=0))
    await cp.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cp.api_port}",
                                     trust_env=False, headers={
                                         "Authorization": f"Bearer {cp.admin_token}"}) as api:
            refused = await api.post("/api/v1/tokens", json={
                "scope": "join", "namespace": "gossamer-system", "service": "control-plane"})
            assert refused.status_code == 422
            assert refused.json()["error"] == ("gossamer-system/control-plane is the control "
                                               "plane's own identity; no join token grants it")
            also = await api.post("/api/v1/tokens", json={
                "scope": "join", "namespace": "gossamer-system", "service": "x",
                "service_account": "control-plane"})
            assert also.status_code == 422
            fine = await api.post("/api/v1/tokens", json={
                "scope": "join", "namespace": "gossamer-system", "service": "other"})
            assert fine.status_code == 200
    finally:
        await cp.stop()
