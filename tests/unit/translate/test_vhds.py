"""The `outbound` routes in VHDS form (translate/vhds.py): the same virtual hosts as
the RDS form, one resource each; a route change elsewhere changes one of them and
is applied to a proxy's last config without translating it again."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from envoy.config.route.v3.route_components_pb2 import VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from gossamer.index import build_index
from gossamer.model import Resource, parse_document
from gossamer.translate import translate_mesh, translate_proxy
from gossamer.translate.mesh import MeshConfig
from gossamer.translate.proxy import proxy_inputs, with_endpoints
from gossamer.xds.types import ROUTE, VHOST
from tests.unit.translate.test_scope import BASE, proxy, sidecar, split_route


def _mesh(docs: list[dict[str, Any]], previous: MeshConfig | None = None) -> MeshConfig:
    resources: list[Resource] = [parse_document(d).with_revision(i + 1)
                                 for i, d in enumerate(docs)]
    return translate_mesh(build_index(resources, len(resources)), previous=previous)


def _vhds(svc: str = "web", **labels: str) -> Any:
    return replace(proxy(svc, **labels), vhds=True)


def test_the_virtual_hosts_are_the_rds_forms_one_resource_each() -> None:
    mesh = _mesh(BASE)
    rds = RouteConfiguration.FromString(
        translate_proxy(mesh, proxy("web")).snapshot.of(ROUTE)["outbound"].payload)
    snap = translate_proxy(mesh, _vhds()).snapshot
    config = RouteConfiguration.FromString(snap.of(ROUTE)["outbound"].payload)
    assert not config.virtual_hosts
    assert config.vhds.config_source.HasField("ads")
    vhosts = {n: VirtualHost.FromString(r.payload) for n, r in snap.of(VHOST).items()}
    assert sorted(vhosts) == sorted(f"outbound/{v.name}" for v in rds.virtual_hosts)
    for v in rds.virtual_hosts:
        got = vhosts[f"outbound/{v.name}"]
        assert got.name == f"outbound/{v.name}"
        got.name = v.name
        assert got == v


def test_a_route_change_changes_one_virtual_host_without_a_translation() -> None:
    before = _mesh(BASE)
    node = _vhds()
    last = translate_proxy(before, node)
    after = _mesh([*BASE, split_route("catalog", ["catalog-v2"], "shadow")], previous=before)
    assert proxy_inputs(after, node) == last.inputs  # the reconciler keeps `last`...
    kept = with_endpoints(after, node, last).snapshot
    fresh = translate_proxy(after, node).snapshot
    assert dict(kept.versions) == dict(fresh.versions)  # ...and that is exact
    changed = {n for n, r in fresh.of(VHOST).items()
               if last.snapshot.of(VHOST)[n].version != r.version}
    assert changed == {"outbound/catalog.default:80"}
    assert kept.version(ROUTE) == last.snapshot.version(ROUTE)


def test_a_scoped_proxy_takes_its_scopes_routes_whole_by_rds() -> None:
    """A Sidecar narrows the routes to a few virtual hosts: one RDS response is
    cheaper there than VHDS's extra exchange per proxy (translate/vhds.py by_vhds)."""
    mesh = _mesh([*BASE, sidecar("web", ["./catalog"], selector={"app": "web"})])
    snap = translate_proxy(mesh, _vhds(app="web")).snapshot
    assert not snap.of(VHOST)
    config = RouteConfiguration.FromString(snap.of(ROUTE)["outbound"].payload)
    assert not config.HasField("vhds")
    assert sorted(v.name for v in config.virtual_hosts) == ["catalog.default:80",
                                                           "no-such-service"]
