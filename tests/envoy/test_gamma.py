"""The Gateway API's mesh (GAMMA) conformance scenarios, profile MESH-HTTP, on real
sidecars: HTTPRoutes whose parentRefs name Services, applied as `gossamer apply`
(or the controller, which writes the same documents) does. The routes are ours,
written to check what each conformance test checks (docs/kubernetes.md maps
conformance test -> test here); the conformance manifests need a real cluster.

`echo` selects two pods, `echo-v1` and `echo-v2` one each, as in the conformance
suite's mesh namespace."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from tests.envoy import test_routing
from tests.envoy.harness import Backend, MiniMesh, Sidecar, get, proxy_client, wait_for

GrpcVersion = test_routing.GrpcVersion
grpc_versions = test_routing.grpc_versions  # the fixture

pytestmark = pytest.mark.slow

GATEWAY = "gateway.networking.k8s.io/v1"
API = "mesh.gossamer.dev/v1alpha1"


def route(parent: str, rules: list[dict[str, Any]], port: int | None = None,
          name: str = "gamma") -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": parent}
    if port is not None:
        ref["port"] = port
    return {"apiVersion": GATEWAY, "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [ref], "rules": rules}}


def prefix(path: str) -> list[dict[str, Any]]:
    return [{"path": {"type": "PathPrefix", "value": path}}]


def exact(path: str) -> list[dict[str, Any]]:
    return [{"path": {"type": "Exact", "value": path}}]


def to(service: str) -> list[dict[str, Any]]:
    return [{"name": service, "port": 80}]


def redirect(match: str, **spec: Any) -> dict[str, Any]:
    prefixed = (spec.get("path") or {}).get("type") == "ReplacePrefixMatch"
    return {"matches": prefix(match) if prefixed else exact(match),
            "filters": [{"type": "RequestRedirect", "requestRedirect": spec}]}


def rewrite(match: str, **spec: Any) -> dict[str, Any]:
    return {"matches": prefix(match), "backendRefs": to("echo-v1"),
            "filters": [{"type": "URLRewrite", "urlRewrite": {"path": spec}}]}


def modify(path: str, **spec: Any) -> dict[str, Any]:
    return {"matches": prefix(path), "backendRefs": to("echo-v1"),
            "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": spec}]}


async def mesh(mini: MiniMesh, make_backend: Callable[[str], Backend]
               ) -> tuple[Sidecar, dict[str, Backend]]:
    v1, v2 = make_backend("echo-v1"), make_backend("echo-v2")
    await mini.serve("echo", [v1, v2])
    await mini.serve("echo-v1", [v1])
    await mini.serve("echo-v2", [v2])
    client = await mini.client()
    await mini.wait_synced()
    return client, {"echo-v1": v1, "echo-v2": v2}


async def in_effect(mini: MiniMesh, client: Sidecar, url: str,
                    ok: Callable[[Any], bool], doc: dict[str, Any]) -> None:
    await mini.apply(doc)
    await mini.wait_synced()

    async def applied() -> bool:
        return ok(await get(client, url))
    await wait_for(applied, f"{doc['metadata']['name']} in effect")


def last(backend: Backend) -> tuple[str, dict[str, str]]:
    _, path, headers = backend.seen[-1]
    return path, {k.lower(): v for k, v in headers.items()}


REDIRECT_ROUTE = route("echo", [
    redirect("/redirect", statusCode=303),
    redirect("/temporary", statusCode=307),
    redirect("/permanent", statusCode=308),
    redirect("/hostname-redirect", hostname="example.org"),
    redirect("/host-and-status", hostname="example.org", statusCode=301),
    redirect("/original-prefix",
             path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/replacement-prefix"}),
    redirect("/full/path/original",
             path={"type": "ReplaceFullPath", "replaceFullPath": "/full-path-replacement"}),
    redirect("/path-and-host", hostname="example.org",
             path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/replacement-prefix"}),
    redirect("/path-and-status", statusCode=301,
             path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/replacement-prefix"}),
    redirect("/port", port=8083),
    redirect("/port-and-host", port=8083, hostname="example.org"),
    redirect("/scheme", scheme="https"),
    redirect("/scheme-and-host", scheme="https", hostname="example.org"),
    redirect("/scheme-and-status", scheme="https", statusCode=301),
], name="gamma-redirects")
# A route has at most 16 rules: the other filters in a second route on echo.
FILTERS = route("echo", [
    rewrite("/prefix/one", type="ReplacePrefixMatch", replacePrefixMatch="/one"),
    rewrite("/strip-prefix", type="ReplacePrefixMatch", replacePrefixMatch="/"),
    rewrite("/full/one", type="ReplaceFullPath", replaceFullPath="/one"),
    modify("/set", set=[{"name": "X-Header-Set", "value": "set-overwrites-values"}]),
    modify("/add", add=[{"name": "X-Header-Add", "value": "add-appends-values"}]),
    modify("/remove", remove=["X-Header-Remove"]),
    modify("/multiple", set=[{"name": "X-Header-Set-1", "value": "header-set-1"},
                             {"name": "X-Header-Set-2", "value": "header-set-2"}],
           add=[{"name": "X-Header-Add-1", "value": "header-add-1"}],
           remove=["X-Header-Remove-1", "X-Header-Remove-2"]),
    modify("/case-insensitivity", set=[{"name": "X-Header-Set", "value": "header-set"}],
           remove=["X-HEADER-REMOVE"]),
    {"name": "named-rule", "matches": prefix("/named"), "backendRefs": to("echo-v1")},
    {"matches": prefix("/unnamed"), "backendRefs": to("echo-v2")},
], name="gamma-filters")



def on_backend(match: str, backends: list[dict[str, Any]]) -> dict[str, Any]:
    return {"matches": prefix(match), "backendRefs": backends}


def modified(service: str, weight: int = 1, **spec: Any) -> dict[str, Any]:
    return {"name": service, "port": 80, "weight": weight, "filters": [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": spec}]}


# MeshHTTPRouteBackendRequestHeaderModifier: the same modifiers on the backendRef;
# and with two backends, each backend's own.
BACKEND_FILTERS = route("echo", [
    on_backend("/b/set", [modified("echo-v1", set=[
        {"name": "X-Header-Set", "value": "set-overwrites-values"}])]),
    on_backend("/b/add", [modified("echo-v1", add=[
        {"name": "X-Header-Add", "value": "add-appends-values"}])]),
    on_backend("/b/remove", [modified("echo-v1", remove=["X-Header-Remove"])]),
    on_backend("/b/each", [modified("echo-v1", set=[{"name": "X-Which", "value": "one"}]),
                           modified("echo-v2", set=[{"name": "X-Which", "value": "two"}])]),
], name="gamma-backend-filters")

# path -> (status, Location as scheme://host[:port]/path)
REDIRECTS = {
    "/redirect": (303, "http://echo/redirect"),
    "/temporary": (307, "http://echo/temporary"),
    "/permanent": (308, "http://echo/permanent"),
    "/hostname-redirect": (302, "http://example.org/hostname-redirect"),
    "/host-and-status": (301, "http://example.org/host-and-status"),
    "/original-prefix/lemon": (302, "http://echo/replacement-prefix/lemon"),
    "/full/path/original": (302, "http://echo/full-path-replacement"),
    "/path-and-host": (302, "http://example.org/replacement-prefix"),
    "/path-and-status": (301, "http://echo/replacement-prefix"),
    "/port": (302, "http://echo:8083/port"),
    "/port-and-host": (302, "http://example.org:8083/port-and-host"),
    "/scheme": (302, "https://echo/scheme"),
    "/scheme-and-host": (302, "https://example.org/scheme-and-host"),
    "/scheme-and-status": (301, "https://echo/scheme-and-status"),
}
REWRITES = {"/prefix/one/two": "/one/two", "/strip-prefix/three": "/three",
            "/strip-prefix": "/", "/full/one/two": "/one"}


def _location(value: str) -> str:
    url = urlsplit(value)
    return f"{url.scheme}://{url.netloc}{url.path}"


async def test_redirects_rewrites_header_modifiers_and_named_rules(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    client, backends = await mesh(mini, make_backend)
    v1, v2 = backends["echo-v1"], backends["echo-v2"]
    await in_effect(mini, client, "http://echo/redirect", lambda r: r.status_code == 303,
                    REDIRECT_ROUTE)
    await in_effect(mini, client, "http://echo/unnamed", lambda r: r.text == "echo-v2",
                    FILTERS)
    async with proxy_client(client) as http:
        for path, (status, location) in REDIRECTS.items():
            resp = await get(client, f"http://echo{path}", http=http)
            assert (resp.status_code, _location(resp.headers["location"])) == \
                (status, location), path
        for path, upstream in REWRITES.items():
            resp = await get(client, f"http://echo{path}", http=http)
            assert resp.text == "echo-v1", path
            assert last(v1)[0] == upstream, path
        await get(client, "http://echo/set", http=http,
                  headers={"X-Header-Set": "some-other-value"})
        assert last(v1)[1]["x-header-set"] == "set-overwrites-values"
        await get(client, "http://echo/add", http=http,
                  headers={"X-Header-Add": "some-other-value"})
        assert last(v1)[1]["x-header-add"] == "some-other-value,add-appends-values"
        await get(client, "http://echo/remove", http=http,
                  headers={"X-Header-Remove": "val"})
        assert "x-header-remove" not in last(v1)[1]
        await get(client, "http://echo/multiple", http=http, headers={
            "X-Header-Set-2": "set-val-2", "X-Header-Add-1": "add-val-1",
            "X-Header-Remove-1": "r1", "X-Header-Remove-2": "r2"})
        seen = last(v1)[1]
        assert (seen["x-header-set-1"], seen["x-header-set-2"], seen["x-header-add-1"]) == \
            ("header-set-1", "header-set-2", "add-val-1,header-add-1")
        assert "x-header-remove-1" not in seen
        assert "x-header-remove-2" not in seen
        await get(client, "http://echo/case-insensitivity", http=http, headers={
            "x-header-set": "original", "x-header-remove": "gone"})
        seen = last(v1)[1]
        assert seen["x-header-set"] == "header-set"
        assert "x-header-remove" not in seen
        await _backend_filters(mini, client, http, v1, v2)
        assert (await get(client, "http://echo/named", http=http)).text == "echo-v1"
        assert (await get(client, "http://echo/unnamed", http=http)).text == "echo-v2"
        assert last(v2)[0] == "/unnamed"


async def _backend_filters(mini: MiniMesh, client: Sidecar, http: Any, v1: Backend,
                           v2: Backend) -> None:
    await in_effect(mini, client, "http://echo/b/set", lambda r: r.text == "echo-v1",
                    BACKEND_FILTERS)
    await get(client, "http://echo/b/set", http=http,
              headers={"X-Header-Set": "some-other-value"})
    assert last(v1)[1]["x-header-set"] == "set-overwrites-values"
    await get(client, "http://echo/b/add", http=http,
              headers={"X-Header-Add": "some-other-value"})
    assert last(v1)[1]["x-header-add"] == "some-other-value,add-appends-values"
    await get(client, "http://echo/b/remove", http=http, headers={"X-Header-Remove": "v"})
    assert "x-header-remove" not in last(v1)[1]
    for _ in range(20):
        resp = await get(client, "http://echo/b/each", http=http)
        which = last(v1 if resp.text == "echo-v1" else v2)[1]["x-which"]
        assert which == {"echo-v1": "one", "echo-v2": "two"}[resp.text]


MATCHING = route("echo", [
    {"matches": prefix("/"), "backendRefs": to("echo-v1")},
    {"matches": [{"headers": [{"name": "version", "value": "one"}]}],
     "backendRefs": to("echo-v1")},
    {"matches": prefix("/v2"), "backendRefs": to("echo-v2")},
    {"matches": [{"headers": [{"name": "version", "value": "two"}]}],
     "backendRefs": to("echo-v2")},
])
QUERY = route("echo", [
    {"matches": [{"queryParams": [{"name": "animal", "value": "whale"}]}],
     "backendRefs": to("echo-v1")},
    {"matches": [{"queryParams": [{"name": "animal", "value": "dolphin"}]}],
     "backendRefs": to("echo-v2")},
    {"matches": [{"path": {"type": "PathPrefix", "value": "/path1"},
                  "queryParams": [{"name": "animal", "value": "whale"}]}],
     "backendRefs": to("echo-v1")},
    {"matches": [{"headers": [{"name": "version", "value": "one"}],
                  "queryParams": [{"name": "animal", "value": "whale"}]}],
     "backendRefs": to("echo-v2")},
])


async def _lands(client: Sidecar, cases: Mapping[tuple[str, str], str | int]) -> None:
    async with proxy_client(client) as http:
        for (path, version), want in cases.items():
            headers = {"version": version} if version else {}
            resp = await get(client, f"http://echo{path}", http=http, headers=headers)
            got: str | int = resp.text if resp.status_code == 200 else resp.status_code
            assert got == want, (path, version, got)


async def test_path_header_and_query_matching(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    client, _ = await mesh(mini, make_backend)
    await in_effect(mini, client, "http://echo/v2/x", lambda r: r.text == "echo-v2", MATCHING)
    await _lands(client, {
        ("/", ""): "echo-v1", ("/example", ""): "echo-v1", ("/", "one"): "echo-v1",
        ("/v2", ""): "echo-v2", ("/v2/example", ""): "echo-v2", ("/", "two"): "echo-v2",
        ("/v2/", ""): "echo-v2", ("/v2example", ""): "echo-v1",
        ("/foo/v2/example", ""): "echo-v1"})
    await in_effect(mini, client, "http://echo/", lambda r: r.status_code == 404, QUERY)
    await _lands(client, {
        ("/?animal=whale", ""): "echo-v1", ("/?animal=dolphin", ""): "echo-v2",
        ("/?animal=whale&otherparam=irrelevant", ""): "echo-v1",
        ("/?animal=dolphin&color=yellow", ""): "echo-v2",
        ("/?color=blue", ""): 404, ("/?animal=dog", ""): 404,
        ("/?animal=whaledolphin", ""): 404, ("/", ""): 404,
        ("/path1?animal=whale", ""): "echo-v1",
        # The longer match (query and header) wins over the query alone.
        ("/?animal=whale", "one"): "echo-v2"})


async def _versions(client: Sidecar, url: str, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    async with proxy_client(client) as http:
        for _ in range(n):
            resp = await get(client, url, http=http)
            assert resp.status_code == 200, resp.text
            seen[resp.text] += 1
    return seen


def _response_header(parent: str, port: int | None = None) -> dict[str, Any]:
    return route(parent, [{"backendRefs": to(parent), "filters": [{
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": {"set": [{"name": "X-Header-Set", "value": "set"}]}}]}],
        port=port, name=f"frontend-{parent}")


async def test_basic_split_weight_and_frontend(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    client, _ = await mesh(mini, make_backend)
    # MeshBasic: no route at all, the Service's own pods answer.
    assert set(await _versions(client, "http://echo/", 40)) == {"echo-v1", "echo-v2"}
    # MeshTrafficSplit: paths to versions.
    split = route("echo", [{"matches": prefix("/v1"), "backendRefs": to("echo-v1")},
                           {"matches": prefix("/v2"), "backendRefs": to("echo-v2")}])
    await in_effect(mini, client, "http://echo/v2", lambda r: r.text == "echo-v2", split)
    assert await _versions(client, "http://echo/v1", 20) == Counter({"echo-v1": 20})
    assert await _versions(client, "http://echo/v2", 20) == Counter({"echo-v2": 20})
    # MeshHTTPRouteWeight: 70/30 and a 0-weight backend never chosen. Of 300
    # requests, echo-v2 expects 90 (sd 7.9); 45..135 is more than 5 sd either way.
    weighted = route("echo", [{"backendRefs": [
        {"name": "echo-v1", "port": 80, "weight": 70},
        {"name": "echo-v2", "port": 80, "weight": 30},
        {"name": "echo", "port": 80, "weight": 0}]}])
    await in_effect(mini, client, "http://echo/v1", lambda r: True, weighted)
    seen = await _versions(client, "http://echo/", 300)
    assert 45 <= seen["echo-v2"] <= 135, seen
    assert seen["echo-v1"] + seen["echo-v2"] == 300
    # MeshFrontend / MeshPorts: a route on echo-v2 (no port) changes what callers of
    # echo-v2 get, and nothing for callers of echo-v1.
    await in_effect(mini, client, "http://echo-v2/",
                    lambda r: r.headers.get("x-header-set") == "set", _response_header("echo-v2"))
    assert (await get(client, "http://echo-v1/")).headers.get("x-header-set") is None
    # With the parentRef's port, only that port of the Service (echo-v1 has one).
    await in_effect(mini, client, "http://echo-v1/",
                    lambda r: r.headers.get("x-header-set") == "set",
                    _response_header("echo-v1", port=80))


async def test_parent_port_scopes_a_route_to_that_port(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    """MeshPorts: echo-v1 serves on 80 and 8080; a route whose parentRef names port
    80 changes answers on 80 only, and one with no port changes both."""
    v1 = make_backend("echo-v1")
    await mini.serve("echo-v1", [v1])
    await mini.apply({"apiVersion": API, "kind": "Service", "metadata": {"name": "echo-v1"},
                      "spec": {"ports": [{"port": 80, "protocol": "http"},
                                         {"port": 8080, "protocol": "http"}]}})
    client = await mini.client()
    await mini.wait_synced()

    def marked(r: Any) -> bool:
        return r.status_code == 200 and r.headers.get("x-header-set") == "set"
    await in_effect(mini, client, "http://echo-v1/", marked, _response_header("echo-v1", 80))
    resp = await get(client, "http://echo-v1:8080/")
    assert resp.status_code == 200
    assert resp.text == "echo-v1"
    assert "x-header-set" not in resp.headers
    await in_effect(mini, client, "http://echo-v1:8080/", marked, _response_header("echo-v1"))
    assert marked(await get(client, "http://echo-v1/"))


async def test_grpcroute_weights(mini: MiniMesh,
                                 grpc_versions: tuple[GrpcVersion, GrpcVersion]) -> None:
    """MeshGRPCRouteWeight: 70/30 between two versions, a 0-weight third never
    chosen. Of 300 calls v2 expects 90 (sd 7.9); 45..135 is over 5 sd either way."""
    v1, v2 = grpc_versions
    v0 = GrpcVersion("v0")  # the parent's own pod: weight 0, never chosen
    try:
        await _grpc_weights(mini, v0, v1, v2)
    finally:
        v0.close()


async def _grpc_weights(mini: MiniMesh, v0: GrpcVersion, v1: GrpcVersion,
                        v2: GrpcVersion) -> None:
    await mini.serve("rpc", [v0], protocol="grpc")  # type: ignore[list-item]
    await mini.serve("rpc-v1", [v1], protocol="grpc")  # type: ignore[list-item]
    await mini.serve("rpc-v2", [v2], protocol="grpc")  # type: ignore[list-item]
    client = await mini.client()
    await mini.apply({
        "apiVersion": GATEWAY, "kind": "GRPCRoute", "metadata": {"name": "rpc"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "rpc"}], "rules": [
            {"backendRefs": [{"name": "rpc-v1", "port": 80, "weight": 70},
                             {"name": "rpc-v2", "port": 80, "weight": 30},
                             {"name": "rpc", "port": 80, "weight": 0}]}]}})
    await mini.wait_synced()

    def calls(n: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        with grpc.insecure_channel(f"127.0.0.1:{client.outbound}",
                                   options=[("grpc.default_authority", "rpc")]) as channel:
            say = channel.unary_unary("/test.Echo/Say")
            for _ in range(n):
                seen[bytes(say(b"hi", timeout=5)).split(b":")[0].decode()] += 1
        return seen

    async def routed() -> bool:
        try:
            return "v2" in await asyncio.to_thread(calls, 20)
        except grpc.RpcError:
            return False
    await wait_for(routed, "the GRPCRoute in effect")
    seen = await asyncio.to_thread(calls, 300)
    assert 45 <= seen["v2"] <= 135, seen
    assert seen["v1"] + seen["v2"] == 300
