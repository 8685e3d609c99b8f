"""The hand-assembled response bytes parse back into exactly the intended messages."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, duration_pb2
from hypothesis import given
from hypothesis import strategies as st

from gossamer.xds import wire
from gossamer.xds.types import CLUSTER, ENDPOINT, XdsResource


def _cluster(name: str, timeout: int = 1) -> XdsResource:
    msg = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS,
                              connect_timeout=duration_pb2.Duration(seconds=timeout))
    msg.eds_cluster_config.eds_config.ads.SetInParent()
    return XdsResource.from_message(CLUSTER, name, msg)


def _any_of(res: XdsResource) -> any_pb2.Any:
    return any_pb2.Any(type_url=res.type_url, value=res.payload)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**31, 2**63 - 1])
def test_varint_matches_protobuf(value: int) -> None:
    # A Duration's seconds field (int64, field 1) is tag 0x08 + varint.
    expected = duration_pb2.Duration(seconds=value).SerializeToString()
    assert (b"\x08" + wire.varint(value) if value else b"") == expected


def test_any_bytes_equal_protobuf_encoding() -> None:
    res = _cluster("a")
    assert wire.any_bytes(res) == _any_of(res).SerializeToString(deterministic=True)


def test_delta_resource_bytes() -> None:
    res = _cluster("a")
    parsed = discovery_pb2.Resource.FromString(wire.delta_resource_bytes(res))
    assert parsed == discovery_pb2.Resource(name="a", version=res.version,
                                            resource=_any_of(res))
    assert wire.delta_resource_bytes(res) == parsed.SerializeToString(deterministic=True)


def test_sotw_response_round_trip() -> None:
    resources = [_cluster("a"), _cluster("b", 2), _cluster("c", 3)]
    payload = wire.sotw_response(CLUSTER, "v1", resources, "7")
    parsed = discovery_pb2.DiscoveryResponse.FromString(payload)
    expected = discovery_pb2.DiscoveryResponse(
        version_info="v1", type_url=CLUSTER, nonce="7",
        resources=[_any_of(r) for r in resources])
    assert parsed == expected
    assert payload == expected.SerializeToString(deterministic=True)
    clusters = [cluster_pb2.Cluster.FromString(a.value) for a in parsed.resources]
    assert [c.name for c in clusters] == ["a", "b", "c"]


def test_empty_sotw_response() -> None:
    parsed = discovery_pb2.DiscoveryResponse.FromString(
        wire.sotw_response(ENDPOINT, "v0", [], "1"))
    assert parsed == discovery_pb2.DiscoveryResponse(version_info="v0", type_url=ENDPOINT,
                                                     nonce="1")


def test_delta_response_round_trip() -> None:
    resources = [_cluster("a"), _cluster("b", 2)]
    payload = wire.delta_response(CLUSTER, "sys", resources, ["gone", "also-gone"], "12")
    parsed = discovery_pb2.DeltaDiscoveryResponse.FromString(payload)
    expected = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="sys", type_url=CLUSTER, nonce="12",
        removed_resources=["gone", "also-gone"],
        resources=[discovery_pb2.Resource(name=r.name, version=r.version, resource=_any_of(r))
                   for r in resources])
    assert parsed == expected
    assert payload == expected.SerializeToString(deterministic=True)


def test_large_resource_uses_multibyte_lengths() -> None:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="big")
    for i in range(2000):
        lb = cla.endpoints.add().lb_endpoints.add()
        lb.endpoint.address.socket_address.address = f"10.0.{i // 250}.{i % 250}"
        lb.endpoint.address.socket_address.port_value = 8000 + i
    res = XdsResource.from_message(ENDPOINT, "big", cla)
    assert len(res.payload) > 16384
    parsed = discovery_pb2.DiscoveryResponse.FromString(
        wire.sotw_response(ENDPOINT, "v", [res], "n"))
    assert endpoint_pb2.ClusterLoadAssignment.FromString(parsed.resources[0].value) == cla


@given(names=st.lists(st.text(min_size=1, max_size=40), max_size=5, unique=True),
       version=st.text(max_size=20), nonce=st.text(max_size=10),
       removed=st.lists(st.text(max_size=20), max_size=4))
def test_arbitrary_strings_round_trip(names: list[str], version: str, nonce: str,
                                      removed: list[str]) -> None:
    resources = [_cluster(n) for n in names]
    sotw = discovery_pb2.DiscoveryResponse.FromString(
        wire.sotw_response(CLUSTER, version, resources, nonce))
    assert sotw.version_info == version
    assert sotw.nonce == nonce
    assert [cluster_pb2.Cluster.FromString(a.value).name for a in sotw.resources] == names
    delta = discovery_pb2.DeltaDiscoveryResponse.FromString(
        wire.delta_response(CLUSTER, version, resources, removed, nonce))
    assert [r.name for r in delta.resources] == names
    assert list(delta.removed_resources) == removed


def test_framing_is_made_once_and_never_copies_the_payload() -> None:
    # Most resources are one proxy's own: a kept copy of each payload would cost
    # the control plane its size again, per proxy.
    res = XdsResource(CLUSTER, "framed", _cluster("framed").payload + b"\x00" * 4096, "v1")
    wire.sotw_response(CLUSTER, "v", [res], "1")
    wire.delta_response(CLUSTER, "v", [res], [], "1")
    assert res.sotw_frame is not None
    assert res.delta_frame is not None
    sotw, delta = res.sotw_frame, res.delta_frame
    wire.sotw_response(CLUSTER, "v2", [res], "2")
    wire.delta_response(CLUSTER, "v2", [res], [], "2")
    assert res.sotw_frame is sotw
    assert res.delta_frame is delta
    assert len(sotw) + len(delta[0]) + len(delta[1]) < 256


def test_resources_hold_no_per_instance_dict() -> None:
    # Slots: thousands of proxies' resources without a __dict__ each.
    assert not hasattr(_cluster("a"), "__dict__")


def test_body_cache_shares_and_bounds() -> None:
    cache = wire.BodyCache(max_bytes=4096)
    resources = [_cluster("a"), _cluster("b")]
    first, count = cache.get(CLUSTER, "v1", None, lambda: resources)
    assert count == 2
    assert cache.get(CLUSTER, "v1", None, lambda: []) == (first, 2)
    assert cache.hits == 1
    assert cache.misses == 1
    for i in range(200):
        cache.get(CLUSTER, f"v{i + 2}", None, lambda: resources)
    assert cache._bytes <= 4096
    assert discovery_pb2.DiscoveryResponse.FromString(
        first + wire.nonce_field("3")).nonce == "3"
