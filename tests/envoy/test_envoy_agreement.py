"""Routes that passed `apply` and then were NACKed by every sidecar of the namespace
(or did something else than they said), now in effect in real sidecars: a regex
over Envoy's default RE2 program size limit, a `%` in a header value, a backslash in
a rewritten path. tests/unit/model/test_envoy_agreement.py checks the same config with
`envoy --mode validate`; tests/envoy/test_apply_validation.py, what is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.envoy.harness import Backend, MiniMesh, Sidecar, get, wait_for

pytestmark = pytest.mark.slow

GW = "gateway.networking.k8s.io/v1"
# Program size 3011: over Envoy's default limit (100), within the sidecars' runtime.
HOSTS = r"^(?:[a-z0-9]{1,100}\.){1,10}$"


def _route(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": "edge-cases"},
            "spec": {"parentRefs": [{"name": "echo"}], "rules": rules}}


async def _mesh(mini: MiniMesh, make_backend: Callable[[str], Backend]
                ) -> tuple[Backend, Backend, Sidecar]:
    echo, other = make_backend("echo"), make_backend("other")
    await mini.serve("echo", [echo])
    await mini.serve("other", [other])
    client = await mini.client()
    await mini.wait_synced()
    return echo, other, client


async def test_a_regex_over_envoys_default_program_size_routes(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    _, _, client = await _mesh(mini, make_backend)
    await mini.apply(_route([
        {"matches": [{"headers": [{"type": "RegularExpression", "name": "x-host",
                                   "value": HOSTS}]}],
         "backendRefs": [{"name": "other"}]},
        {"backendRefs": [{"name": "echo"}]},
    ]))

    async def in_effect() -> bool:
        resp = await get(client, headers={"x-host": "api.example."})
        return resp.headers.get("x-backend") == "other"

    # Before the sidecars' runtime allowed it, Envoy NACKed the route config (program
    # size 3011 > 100) and kept the old routes: this never happened.
    await wait_for(in_effect, "the regex route in effect")
    await mini.wait_synced()
    miss = await get(client, headers={"x-host": "not a host"})
    assert miss.headers.get("x-backend") == "echo"
    rejected = sum(v for k, v in (await client.stats()).items() if k.endswith("update_rejected"))
    assert rejected == 0


async def test_header_values_and_rewritten_paths_are_literal(
        mini: MiniMesh, make_backend: Callable[[str], Backend]) -> None:
    echo, _, client = await _mesh(mini, make_backend)
    literal = {"100%": "x-share", "%START_TIME%": "x-not-a-command", "%%": "x-two"}
    await mini.apply(_route([{
        "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
        "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": name, "value": value} for value, name in literal.items()]}},
            {"type": "URLRewrite", "urlRewrite": {"path": {
                "type": "ReplacePrefixMatch", "replacePrefixMatch": "/new\\1"}}},
        ],
        "backendRefs": [{"name": "echo"}],
    }]))

    async def in_effect() -> bool:
        echo.seen.clear()
        await get(client, "http://echo/old/x")
        return bool(echo.seen) and echo.seen[-1][1] != "/old/x"

    # Before: `100%` was a NACK of the whole route config (so the rewrite never came),
    # and `\1` in a rewrite meant RE2's first capture group (here `/x`: /new/x/x).
    await wait_for(in_effect, "the rewrite route in effect")
    _, path, headers = echo.seen[-1]
    assert path == "/new/1/x"  # the text `\1`; Envoy sends a path's `\` as `/`
    assert {name: headers.get(name) for name in literal.values()} == {
        name: value for value, name in literal.items()}
