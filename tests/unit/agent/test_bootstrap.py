"""Envoy's bootstrap, plaintext and TLS: it must parse as Envoy's own Bootstrap proto.

ParseDict rejects unknown fields and wrong types, so a typo in a key fails
here instead of in a sidecar at start-up (the real-Envoy check of the TLS
bootstrap is in tests/envoy/test_sds.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format

from gossamer.agent.bootstrap import bootstrap
from gossamer.contract.names import (
    CONTROL_PLANE_NAME,
    ROOT_SECRET,
    SDS_CLUSTER,
    XDS_CLUSTER,
    sds_config,
)
from gossamer.contract.node import NodeMetadata

NODE = NodeMetadata(node_id="web-1.default", service="web", namespace="default", workload="web-1",
                    inbound_port=15006, inbound_address="127.0.0.1", app_port=8080,
                    app_protocol=None, outbound_port=15001, admin_port=15000)


def parse(doc: dict[str, Any]) -> bootstrap_pb2.Bootstrap:
    return json_format.ParseDict(doc, bootstrap_pb2.Bootstrap())


def cluster(b: bootstrap_pb2.Bootstrap, name: str) -> Any:
    [found] = [c for c in b.static_resources.clusters if c.name == name]
    return found


def test_plaintext_bootstrap_is_unchanged_by_default() -> None:
    b = parse(bootstrap(NODE, "127.0.0.1", 15010))
    assert [c.name for c in b.static_resources.clusters] == [XDS_CLUSTER]
    assert not cluster(b, XDS_CLUSTER).HasField("transport_socket")
    [svc] = b.dynamic_resources.ads_config.grpc_services
    assert svc.envoy_grpc.cluster_name == XDS_CLUSTER
    assert not svc.initial_metadata
    # A broken xDS stream is retried within seconds, not Envoy's default 30 s cap.
    backoff = svc.envoy_grpc.retry_policy.retry_back_off
    assert (backoff.base_interval.ToMilliseconds(), backoff.max_interval.ToMilliseconds()) == (
        250, 2000)


def test_an_advertised_name_is_resolved_by_envoy() -> None:
    """`--advertise-address cp.example` reaches the bootstrap as a name: a STATIC
    cluster takes only IPs (Envoy refuses the bootstrap), so the name is resolved."""
    by_name = cluster(parse(bootstrap(NODE, "cp.example", 15010)), XDS_CLUSTER)
    by_ip = cluster(parse(bootstrap(NODE, "198.18.0.2", 15010)), XDS_CLUSTER)
    assert (by_name.type, by_ip.type) == (by_name.STRICT_DNS, by_ip.STATIC)
    [endpoint] = by_name.load_assignment.endpoints[0].lb_endpoints
    assert endpoint.endpoint.address.socket_address.address == "cp.example"
    # A records first: a name known only as IPv4 (/etc/hosts) is not held up by an
    # AAAA query to resolvers that do not answer (Envoy's default asks AAAA first).
    assert by_name.dns_lookup_family == by_name.V4_PREFERRED


def test_every_replica_is_an_endpoint_of_the_xds_cluster() -> None:
    """Replicas' xDS addresses (issue 19): Envoy reconnects to another one when its
    stream's replica goes; a repeated address is listed once."""
    def endpoints(c: Any) -> list[tuple[str, int]]:
        return [(e.endpoint.address.socket_address.address,
                 e.endpoint.address.socket_address.port_value)
                for e in c.load_assignment.endpoints[0].lb_endpoints]
    by_ip = cluster(parse(bootstrap(NODE, "198.18.0.2", 15010, more_xds=[
        ("198.18.0.3", 15010), ("198.18.0.2", 15010)])), XDS_CLUSTER)
    assert by_ip.type == by_ip.STATIC
    assert endpoints(by_ip) == [("198.18.0.2", 15010), ("198.18.0.3", 15010)]
    mixed = cluster(parse(bootstrap(NODE, "198.18.0.2", 15010,
                                    more_xds=[("cp2.example", 15011)])), XDS_CLUSTER)
    assert mixed.type == mixed.STRICT_DNS
    assert endpoints(mixed) == [("198.18.0.2", 15010), ("cp2.example", 15011)]


def test_tls_bootstrap() -> None:
    doc = bootstrap(NODE, "10.0.0.5", 15012, sds_socket="unix:/run/gossamer/web-1/sds.sock",
                    token="s3cret", tls=True)
    b = parse(doc)

    sds = cluster(b, SDS_CLUSTER)
    assert sds.type == sds.STATIC
    [endpoint] = sds.load_assignment.endpoints[0].lb_endpoints
    assert endpoint.endpoint.address.pipe.path == "/run/gossamer/web-1/sds.sock"
    options = sds.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    http = http_protocol_options_pb2.HttpProtocolOptions()
    assert options.Unpack(http)
    assert http.explicit_http_config.HasField("http2_protocol_options")

    xds = cluster(b, XDS_CLUSTER)
    assert xds.transport_socket.name == "envoy.transport_sockets.tls"
    ctx = tls_pb2.UpstreamTlsContext()
    assert xds.transport_socket.typed_config.Unpack(ctx)
    assert ctx.sni == CONTROL_PLANE_NAME
    params = ctx.common_tls_context.tls_params
    assert params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    assert params.tls_maximum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    combined = ctx.common_tls_context.combined_validation_context
    [san] = combined.default_validation_context.match_typed_subject_alt_names
    assert san.san_type == common_pb2.SubjectAltNameMatcher.DNS
    assert san.matcher.exact == CONTROL_PLANE_NAME
    roots = combined.validation_context_sds_secret_config
    assert roots.name == ROOT_SECRET
    source = roots.sds_config
    assert source.resource_api_version == config_source_pb2.V3
    api = source.api_config_source
    assert api.api_type == api.GRPC
    assert api.transport_api_version == config_source_pb2.V3
    assert [g.envoy_grpc.cluster_name for g in api.grpc_services] == [SDS_CLUSTER]

    [svc] = b.dynamic_resources.ads_config.grpc_services
    assert [(m.key, m.value) for m in svc.initial_metadata] == [
        ("authorization", "Bearer s3cret")]


def test_token_without_tls_still_rides_in_metadata() -> None:
    b = parse(bootstrap(NODE, "127.0.0.1", 15010, token="t"))
    [svc] = b.dynamic_resources.ads_config.grpc_services
    assert [(m.key, m.value) for m in svc.initial_metadata] == [("authorization", "Bearer t")]
    assert [c.name for c in b.static_resources.clusters] == [XDS_CLUSTER]


def test_tls_needs_the_sds_socket() -> None:
    with pytest.raises(ValueError, match="SDS socket"):
        bootstrap(NODE, "127.0.0.1", 15010, tls=True)


def test_plain_path_works_as_sds_socket() -> None:
    b = parse(bootstrap(NODE, "127.0.0.1", 15010, sds_socket="/tmp/x/sds.sock", tls=True))
    endpoint = cluster(b, SDS_CLUSTER).load_assignment.endpoints[0].lb_endpoints[0]
    assert endpoint.endpoint.address.pipe.path == "/tmp/x/sds.sock"


def test_sds_config_is_a_config_source_and_a_fresh_copy() -> None:
    source = json_format.ParseDict(sds_config(), config_source_pb2.ConfigSource())
    assert source.api_config_source.grpc_services[0].envoy_grpc.cluster_name == SDS_CLUSTER
    a = sds_config()
    a["apiConfigSource"]["apiType"] = "DELTA_GRPC"
    assert sds_config()["apiConfigSource"]["apiType"] == "GRPC"


def test_stats_config_labels_the_sidecar_and_keeps_only_mesh_stats() -> None:
    stats = parse(bootstrap(NODE, "127.0.0.1", 15010)).stats_config
    # Envoy's defaults cut names at the first dot (splitting `SVC.NS`): ours replace them.
    assert not stats.use_all_default_tags.value
    fixed = {t.tag_name: t.fixed_value for t in stats.stats_tags if t.fixed_value}
    assert fixed == {"source_namespace": "default", "source_service": "web",
                     "source_workload": "web-1"}
    regex = {t.tag_name for t in stats.stats_tags if t.regex}
    assert {"destination_service", "destination_namespace", "destination_port",
            "envoy.cluster_name", "envoy.response_code", "envoy.response_code_class",
            "envoy.http_conn_manager_prefix", "envoy.listener_address"} <= regex
    assert len(stats.stats_matcher.inclusion_list.patterns) >= 5


def test_an_external_services_cluster_stats_are_kept_and_tagged() -> None:
    import re

    from gossamer.agent.stats import KEEP, TAGS

    name = "cluster.external|80|api.pay.example|payments.shop.upstream_rq_200"
    assert any(re.search(pattern, name) for pattern in KEEP)
    found = {tag: re.search(regex, name) for tag, regex in TAGS}
    values = {tag: m.group(2) for tag, m in found.items() if m is not None}
    assert values["envoy.cluster_name"] == "external|80|api.pay.example|payments.shop"
    assert (values["destination_service"], values["destination_namespace"],
            values["destination_port"]) == ("payments", "shop", "80")


def test_a_vhds_virtual_host_is_tagged_as_the_rds_one() -> None:
    """VHDS names a virtual host `outbound/SVC.NS:PORT` (translate/vhds.py): its stats
    carry the same tags as the RDS form's `SVC.NS:PORT`, the prefix removed."""
    import re

    from gossamer.agent.stats import KEEP, TAGS

    for prefix in ("", "outbound/"):
        name = f"vhost.{prefix}catalog.shop:80.route.called.upstream_rq_total"
        assert any(re.search(pattern, name) for pattern in KEEP), name
        found = {tag: re.search(regex, name) for tag, regex in TAGS}
        values = {tag: m.group(2) for tag, m in found.items() if m is not None}
        assert values["envoy.virtual_host"] == "catalog.shop:80"
        assert values["envoy.route"] == "called"
        assert (values["destination_service"], values["destination_namespace"],
                values["destination_port"]) == ("catalog", "shop", "80")
        removed = found["envoy.virtual_host"]
        assert removed is not None
        assert removed.group(1) == f"{prefix}catalog.shop:80."
