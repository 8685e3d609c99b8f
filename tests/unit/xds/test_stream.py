"""The sans-I/O ADS stream machines, driven with real request messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import duration_pb2

from gossamer.xds.delta import DeltaStream
from gossamer.xds.events import Acked, Event, Nacked, Outgoing, Subscribed
from gossamer.xds.sotw import SotwStream
from gossamer.xds.stream import eds_service_name
from gossamer.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot, XdsResource

# ----------------------------------------------------------------------------- helpers


def cluster(name: str, timeout: int = 1, service_name: str = "") -> XdsResource:
    msg = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS,
                              connect_timeout=duration_pb2.Duration(seconds=timeout))
    msg.eds_cluster_config.eds_config.ads.SetInParent()
    if service_name:
        msg.eds_cluster_config.service_name = service_name
    return XdsResource.from_message(CLUSTER, name, msg)


def endpoints(name: str, port: int) -> XdsResource:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    sa = cla.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    sa.address, sa.port_value = "127.0.0.1", port
    return XdsResource.from_message(ENDPOINT, name, cla)


def listener(name: str, port: int) -> XdsResource:
    msg = listener_pb2.Listener(name=name)
    msg.address.socket_address.address = "127.0.0.1"
    msg.address.socket_address.port_value = port
    return XdsResource.from_message(LISTENER, name, msg)


def routes(name: str, cluster_name: str) -> XdsResource:
    msg = route_pb2.RouteConfiguration(name=name)
    vh = msg.virtual_hosts.add(name="all", domains=["*"])
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = cluster_name
    return XdsResource.from_message(ROUTE, name, msg)


def snapshot(*resources: XdsResource) -> Snapshot:
    by_type: dict[str, dict[str, XdsResource]] = {}
    for res in resources:
        by_type.setdefault(res.type_url, {})[res.name] = res
    return Snapshot.build(by_type)


BASE = (cluster("a"), cluster("b"), endpoints("a", 1), endpoints("b", 2),
        listener("http", 80), routes("r", "a"))


def base(**replace: XdsResource) -> Snapshot:
    items = {(r.type_url, r.name): r for r in BASE}
    for res in replace.values():
        items[(res.type_url, res.name)] = res
    return snapshot(*items.values())


def req(type_url: str, names: Iterable[str] = (), *, version: str = "", nonce: str = "",
        error: str | None = None) -> discovery_pb2.DiscoveryRequest:
    r = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names),
                                       version_info=version, response_nonce=nonce)
    r.node.id = "node-1"
    if error is not None:
        r.error_detail.code = 13
        r.error_detail.message = error
    return r


def dreq(type_url: str, subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = (), *,
         nonce: str = "", error: str | None = None,
         initial: Mapping[str, str] | None = None) -> discovery_pb2.DeltaDiscoveryRequest:
    r = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url, resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce)
    r.node.id = "node-1"
    for name, version in (initial or {}).items():
        r.initial_resource_versions[name] = version
    if error is not None:
        r.error_detail.code = 13
        r.error_detail.message = error
    return r


def sotw_names(out: Outgoing) -> list[str]:
    parsed = discovery_pb2.DiscoveryResponse.FromString(out.payload)
    assert parsed.type_url == out.type_url
    assert parsed.nonce == out.nonce
    assert parsed.version_info == out.version
    names = []
    for item in parsed.resources:
        assert item.type_url == out.type_url
        names.append(_name(out.type_url, item.value))
    return names


def delta_parts(out: Outgoing) -> tuple[dict[str, str], list[str]]:
    parsed = discovery_pb2.DeltaDiscoveryResponse.FromString(out.payload)
    assert parsed.type_url == out.type_url
    assert parsed.nonce == out.nonce
    assert parsed.system_version_info == out.version
    sent = {r.name: r.version for r in parsed.resources}
    for r in parsed.resources:
        assert _name(out.type_url, r.resource.value) == r.name
    return sent, list(parsed.removed_resources)


def _name(type_url: str, value: bytes) -> str:
    if type_url == ENDPOINT:
        return str(endpoint_pb2.ClusterLoadAssignment.FromString(value).cluster_name)
    cls = {CLUSTER: cluster_pb2.Cluster, LISTENER: listener_pb2.Listener,
           ROUTE: route_pb2.RouteConfiguration}[type_url]
    return str(cls.FromString(value).name)


def acks(events: list[Event]) -> list[Acked]:
    return [e for e in events if isinstance(e, Acked)]


def sotw_connected(snap: Snapshot) -> tuple[SotwStream, dict[str, Outgoing]]:
    """A SotW stream that subscribed CDS, EDS a+b, LDS, RDS r and ACKed everything."""
    m = SotwStream()
    m.on_snapshot(snap)
    sent: dict[str, Outgoing] = {}
    for out in m.on_request(req(CLUSTER)) + m.on_request(req(LISTENER)):
        sent[out.type_url] = out
    for out in m.on_request(req(ENDPOINT, ["a", "b"])) + m.on_request(req(ROUTE, ["r"])):
        sent[out.type_url] = out
    for out in list(sent.values()):
        assert m.on_request(req(out.type_url, _names(out.type_url), version=out.version,
                                nonce=out.nonce)) == []
    m.drain_events()
    return m, sent


def _names(type_url: str) -> list[str]:
    return {ENDPOINT: ["a", "b"], ROUTE: ["r"]}.get(type_url, [])


def ack(m: SotwStream, out: Outgoing, names: Iterable[str] | None = None) -> list[Outgoing]:
    names = _names(out.type_url) if names is None else names
    return m.on_request(req(out.type_url, names, version=out.version, nonce=out.nonce))


# -------------------------------------------------------------------------------- SotW


def test_sotw_initial_subscribe_waits_for_snapshot_then_sends_everything() -> None:
    m = SotwStream()
    assert m.on_request(req(CLUSTER)) == []
    events = m.drain_events()
    assert events == [Subscribed(CLUSTER, True, frozenset())]
    snap = base()
    [out] = m.on_snapshot(snap)
    assert out.type_url == CLUSTER
    assert out.version == snap.version(CLUSTER)
    assert sorted(sotw_names(out)) == ["a", "b"]
    assert out.resources == 2


def test_sotw_ack_is_recorded_and_nothing_is_resent() -> None:
    m = SotwStream()
    snap = base()
    m.on_snapshot(snap)
    [out] = m.on_request(req(CLUSTER))
    assert ack(m, out) == []
    assert acks(m.drain_events()) == [Acked(CLUSTER, out.version)]
    assert m.on_snapshot(base()) == []  # equal content, new object
    assert m.types[CLUSTER].acked_version == snap.version(CLUSTER)


def test_sotw_types_go_out_in_push_order() -> None:
    m = SotwStream()
    for type_url, names in ((ROUTE, ["r"]), (LISTENER, []), (ENDPOINT, ["a"]), (CLUSTER, [])):
        assert m.on_request(req(type_url, names)) == []
    out = m.on_snapshot(base())
    assert [o.type_url for o in out] == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    assert len({o.nonce for o in out}) == 4


def test_sotw_new_snapshot_sends_only_changed_types() -> None:
    m, _sent = sotw_connected(base())
    out = m.on_snapshot(base(l=listener("http", 81), r=routes("r", "b")))
    assert [o.type_url for o in out] == [LISTENER, ROUTE]


def test_sotw_eds_only_change_sends_only_eds() -> None:
    m, _ = sotw_connected(base())
    snap = base(e=endpoints("a", 9))
    [out] = m.on_snapshot(snap)
    assert out.type_url == ENDPOINT
    assert out.version == snap.version(ENDPOINT)
    assert sorted(sotw_names(out)) == ["a", "b"]
    assert ack(m, out) == []


def test_sotw_named_subscription_filters_and_new_names_are_sent() -> None:
    m = SotwStream()
    m.on_snapshot(base())
    [out] = m.on_request(req(ENDPOINT, ["a", "missing"]))
    assert sotw_names(out) == ["a"]
    # Same version, but "b" is newly requested: it must be sent.
    [again] = m.on_request(req(ENDPOINT, ["a", "b"], version=out.version, nonce=out.nonce))
    assert sorted(sotw_names(again)) == ["a", "b"]
    assert again.version == out.version
    assert again.nonce != out.nonce
    # Narrowing the subscription needs no response...
    assert m.on_request(req(ENDPOINT, ["a"], version=again.version, nonce=again.nonce)) == []
    # ...and asking for "b" again brings it back.
    [back] = m.on_request(req(ENDPOINT, ["a", "b"], version=again.version, nonce=again.nonce))
    assert sorted(sotw_names(back)) == ["a", "b"]


def test_sotw_empty_names_after_names_is_unsubscribe_not_wildcard() -> None:
    m = SotwStream()
    m.on_snapshot(base())
    [out] = m.on_request(req(ENDPOINT, ["a"]))
    assert m.on_request(req(ENDPOINT, [], version=out.version, nonce=out.nonce)) == []
    assert m.on_snapshot(base(e=endpoints("a", 7))) == []
    # CDS/LDS: empty names on the first request is the legacy wildcard.
    [cds] = m.on_request(req(CLUSTER))
    assert sorted(sotw_names(cds)) == ["a", "b"]


def test_sotw_nack_is_recorded_and_the_version_not_resent() -> None:
    m, sent = sotw_connected(base())
    bad = base(r=routes("r", "b"))
    [out] = m.on_snapshot(bad)
    assert out.type_url == ROUTE
    good_version = sent[ROUTE].version
    assert m.on_request(req(ROUTE, ["r"], version=good_version, nonce=out.nonce,
                            error="invalid regex")) == []
    [nack] = [e for e in m.drain_events() if isinstance(e, Nacked)]
    assert nack == Nacked(ROUTE, bad.version(ROUTE), "invalid regex", 13)
    assert m.types[ROUTE].client_version == good_version
    # The same snapshot again, or another type changing, never resends the bad routes.
    assert m.on_snapshot(bad) == []
    [eds] = m.on_snapshot(base(r=routes("r", "b"), e=endpoints("a", 5)))
    assert eds.type_url == ENDPOINT
    assert ack(m, eds) == []
    # A newer route version goes out.
    fixed = base(r=routes("r", "a2"), e=endpoints("a", 5))
    [rds] = m.on_snapshot(fixed)
    assert rds.type_url == ROUTE
    assert rds.version == fixed.version(ROUTE)
    assert ack(m, rds) == []
    assert acks(m.drain_events())[-1] == Acked(ROUTE, fixed.version(ROUTE))


def test_sotw_revert_after_nack_to_the_running_version_sends_nothing() -> None:
    m, sent = sotw_connected(base())
    [out] = m.on_snapshot(base(r=routes("r", "b")))
    m.on_request(req(ROUTE, ["r"], version=sent[ROUTE].version, nonce=out.nonce, error="no"))
    assert m.on_snapshot(base()) == []
    assert acks(m.drain_events()) == [Acked(ROUTE, sent[ROUTE].version, implicit=True)]


def test_sotw_one_response_in_flight_per_type() -> None:
    m, _ = sotw_connected(base())
    [first] = m.on_snapshot(base(e=endpoints("a", 10)))
    assert m.on_snapshot(base(e=endpoints("a", 11))) == []
    last = base(e=endpoints("a", 12))
    assert m.on_snapshot(last) == []
    [latest] = ack(m, first)
    assert latest.version == last.version(ENDPOINT)


def test_sotw_stale_nonce_is_no_ack_but_updates_subscription() -> None:
    m = SotwStream()
    m.on_snapshot(base())
    [first] = m.on_request(req(ENDPOINT, ["a"]))
    m.drain_events()
    [second] = m.on_request(req(ENDPOINT, ["a", "b"], version=first.version,
                                nonce=first.nonce))
    m.drain_events()
    # Sent before the client saw `second`: stale, no ACK, no response.
    assert m.on_request(req(ENDPOINT, ["a", "b"], version=first.version,
                            nonce=first.nonce)) == []
    assert acks(m.drain_events()) == []
    assert m.types[ENDPOINT].pending
    assert ack(m, second, ["a", "b"]) == []
    assert acks(m.drain_events()) == [Acked(ENDPOINT, second.version)]


def test_sotw_reconnect_with_current_version_skips_wildcard_resend() -> None:
    snap = base()
    m = SotwStream()
    m.on_snapshot(snap)
    assert m.on_request(req(CLUSTER, version=snap.version(CLUSTER))) == []
    assert m.on_request(req(LISTENER, version=snap.version(LISTENER))) == []
    assert acks(m.drain_events()) == [Acked(CLUSTER, snap.version(CLUSTER), implicit=True),
                                      Acked(LISTENER, snap.version(LISTENER), implicit=True)]
    # Named types: we cannot know which names the old stream delivered: resend.
    [eds] = m.on_request(req(ENDPOINT, ["a"], version=snap.version(ENDPOINT)))
    assert sotw_names(eds) == ["a"]
    # An outdated client gets the current version.
    m2 = SotwStream()
    m2.on_snapshot(snap)
    [cds] = m2.on_request(req(CLUSTER, version="older"))
    assert cds.version == snap.version(CLUSTER)


def test_sotw_modified_cluster_resends_its_endpoints() -> None:
    m, _ = sotw_connected(base())
    out = m.on_snapshot(base(c=cluster("a", timeout=5)))
    assert [o.type_url for o in out] == [CLUSTER, ENDPOINT]
    assert sotw_names(out[1]) == ["a"]  # only the re-warming cluster's endpoints
    assert ack(m, out[0]) == []
    assert ack(m, out[1]) == []
    # Adding a cluster needs no resend: Envoy asks for its new endpoints by name.
    assert [o.type_url for o in m.on_snapshot(base(c=cluster("a", timeout=5),
                                                   n=cluster("new")))] == [CLUSTER]


def test_eds_service_name() -> None:
    assert eds_service_name(cluster("a")) == "a"
    assert eds_service_name(cluster("a", service_name="svc")) == "svc"
    static = XdsResource.from_message(CLUSTER, "s", cluster_pb2.Cluster(name="s"))
    assert eds_service_name(static) is None


# ------------------------------------------------------------------------------- delta


def delta_connected(snap: Snapshot) -> tuple[DeltaStream, dict[str, Outgoing]]:
    m = DeltaStream()
    m.on_snapshot(snap)
    sent = {}
    for r in (dreq(CLUSTER), dreq(LISTENER), dreq(ENDPOINT, ["a", "b"]), dreq(ROUTE, ["r"])):
        for out in m.on_request(r):
            sent[out.type_url] = out
    for out in sent.values():
        assert m.on_request(dreq(out.type_url, nonce=out.nonce)) == []
    m.drain_events()
    return m, sent


def dack(m: DeltaStream, out: Outgoing) -> list[Outgoing]:
    return m.on_request(dreq(out.type_url, nonce=out.nonce))


def test_delta_initial_wildcard_then_only_changes_and_removals() -> None:
    m = DeltaStream()
    assert m.on_request(dreq(CLUSTER)) == []
    assert m.drain_events() == [Subscribed(CLUSTER, True, frozenset())]
    snap = base()
    [out] = m.on_snapshot(snap)
    sent, removed = delta_parts(out)
    assert sent == {"a": snap.of(CLUSTER)["a"].version, "b": snap.of(CLUSTER)["b"].version}
    assert removed == []
    assert dack(m, out) == []
    assert acks(m.drain_events()) == [Acked(CLUSTER, snap.version(CLUSTER))]
    # One cluster changes, one goes: only that one is sent, the other removed.
    changed = snapshot(cluster("a", timeout=9), endpoints("a", 1))
    [out2] = m.on_snapshot(changed)
    sent2, removed2 = delta_parts(out2)
    assert sent2 == {"a": changed.of(CLUSTER)["a"].version}
    assert removed2 == ["b"]


def test_delta_sends_only_changed_resources_of_named_types() -> None:
    m, _ = delta_connected(base())
    [out] = m.on_snapshot(base(e=endpoints("b", 22)))
    assert out.type_url == ENDPOINT
    assert list(delta_parts(out)[0]) == ["b"]
    assert out.resources == 1
    assert out.removed == 0


def test_delta_initial_resource_versions_suppress_resends() -> None:
    snap = base()
    have = {n: r.version for n, r in snap.of(CLUSTER).items()}
    m = DeltaStream()
    m.on_snapshot(snap)
    assert m.on_request(dreq(CLUSTER, initial=have)) == []
    assert acks(m.drain_events()) == [Acked(CLUSTER, snap.version(CLUSTER), implicit=True)]
    eds_have = {n: r.version for n, r in snap.of(ENDPOINT).items()}
    assert m.on_request(dreq(ENDPOINT, ["a", "b"], initial=eds_have)) == []
    # Partly stale, partly unknown to us: send the stale one, remove the unknown one.
    m2 = DeltaStream()
    m2.on_snapshot(snap)
    [out] = m2.on_request(dreq(CLUSTER, initial={"a": have["a"], "b": "old", "zombie": "x"}))
    sent, removed = delta_parts(out)
    assert sent == {"b": have["b"]}
    assert removed == ["zombie"]


def test_delta_subscribe_unsubscribe() -> None:
    snap = base()
    m = DeltaStream()
    m.on_snapshot(snap)
    [out] = m.on_request(dreq(ENDPOINT, ["a"]))
    assert list(delta_parts(out)[0]) == ["a"]
    assert dack(m, out) == []
    [out] = m.on_request(dreq(ENDPOINT, ["b"]))  # spontaneous, no nonce
    assert list(delta_parts(out)[0]) == ["b"]
    assert dack(m, out) == []
    # Unsubscribing needs no response, and a change to it is no longer sent.
    assert m.on_request(dreq(ENDPOINT, unsubscribe=["a"])) == []
    assert m.on_snapshot(base(e=endpoints("a", 99))) == []
    assert m.types[ENDPOINT].names == {"b"}
    # Subscribing again to something the client seemed to have: sent anyway.
    [again] = m.on_request(dreq(ENDPOINT, ["b"]))
    assert list(delta_parts(again)[0]) == ["b"]


def test_delta_missing_subscribed_resource_is_reported_removed_once() -> None:
    m = DeltaStream()
    m.on_snapshot(base())
    [out] = m.on_request(dreq(ENDPOINT, ["a", "ghost"]))
    sent, removed = delta_parts(out)
    assert list(sent) == ["a"]
    assert removed == ["ghost"]
    assert dack(m, out) == []
    assert m.on_snapshot(base(e=endpoints("a", 3))) != []  # "a" changed...
    assert m.types[ENDPOINT].told_absent == {"ghost"}  # ...ghost not re-announced
    # When it appears, it is sent.
    m2, _ = delta_connected(base())
    [o] = m2.on_request(dreq(ENDPOINT, ["ghost"]))
    assert delta_parts(o) == ({}, ["ghost"])
    dack(m2, o)
    [o2] = m2.on_snapshot(snapshot(*BASE, endpoints("ghost", 4)))
    assert list(delta_parts(o2)[0]) == ["ghost"]


def test_delta_nack_recorded_and_not_resent() -> None:
    m, _ = delta_connected(base())
    bad = base(r=routes("r", "zzz"))
    [out] = m.on_snapshot(bad)
    assert m.on_request(dreq(ROUTE, nonce=out.nonce, error="bad regex")) == []
    events = m.drain_events()
    assert Nacked(ROUTE, bad.version(ROUTE), "bad regex", 13) in events
    assert m.on_snapshot(bad) == []
    [eds] = m.on_snapshot(base(r=routes("r", "zzz"), e=endpoints("a", 4)))
    assert eds.type_url == ENDPOINT
    dack(m, eds)
    # Unchanged-but-rejected routes must not look in sync.
    assert not [e for e in m.drain_events() if isinstance(e, Acked) and e.type_url == ROUTE]
    fixed = base(r=routes("r", "ok"), e=endpoints("a", 4))
    [rds] = m.on_snapshot(fixed)
    assert rds.type_url == ROUTE
    assert list(delta_parts(rds)[0]) == ["r"]


def test_delta_stale_nonce_still_updates_subscriptions() -> None:
    m, sent = delta_connected(base())
    [out] = m.on_snapshot(base(e=endpoints("a", 5)))
    # A request carrying an old nonce: no ACK, but its subscription counts.
    assert m.on_request(dreq(ENDPOINT, unsubscribe=["b"], nonce=sent[ENDPOINT].nonce)) == []
    assert m.types[ENDPOINT].names == {"a"}
    assert not acks(m.drain_events())
    assert m.types[ENDPOINT].pending_nonce == out.nonce


def test_delta_modified_cluster_resends_its_endpoints() -> None:
    m, _ = delta_connected(base())
    out = m.on_snapshot(base(c=cluster("b", timeout=3)))
    assert [o.type_url for o in out] == [CLUSTER, ENDPOINT]
    assert list(delta_parts(out[0])[0]) == ["b"]
    assert list(delta_parts(out[1])[0]) == ["b"]


def test_delta_unsubscribe_under_wildcard_tells_the_client() -> None:
    m = DeltaStream()
    m.on_snapshot(base())
    [out] = m.on_request(dreq(CLUSTER, ["*", "a", "extra"]))
    sent, removed = delta_parts(out)
    assert sorted(sent) == ["a", "b"]
    assert removed == ["extra"]
    dack(m, out)
    # "a" is still covered by the wildcard: it is sent again; "extra" is not: removed.
    [out2] = m.on_request(dreq(CLUSTER, unsubscribe=["a", "extra"]))
    sent2, removed2 = delta_parts(out2)
    assert list(sent2) == ["a"]
    assert removed2 == ["extra"]


def test_nonces_are_unique_per_stream() -> None:
    m = DeltaStream()
    m.on_snapshot(base())
    nonces = []
    for type_url, names in ((CLUSTER, []), (ENDPOINT, ["a"]), (LISTENER, []), (ROUTE, ["r"])):
        nonces += [o.nonce for o in m.on_request(dreq(type_url, names))]
    assert len(nonces) == len(set(nonces)) == 4
