"""Egress inferred from AuthorizationPolicies on real Envoys: with no Sidecar, a caller
that no policy lets into a Service holds no cluster for it, and an ALLOW applied for
it brings the cluster, after which its request goes through.

The mini mesh runs without mTLS (tests/envoy/conftest.py), where no principal matches
at the callee: the new ALLOW admits by operation. Matching by identity is
tests/unit/translate/test_reach.py's."""

from __future__ import annotations

from typing import Any

from tests.envoy.harness import API, MiniMesh, Sidecar, explained, get, wait_for

ECHO = "outbound|80||echo.default"
OTHER = "outbound|80||other.default"


def allow(name: str, service: str, rule: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "AuthorizationPolicy", "metadata": {"name": name},
            "spec": {"targetRef": {"kind": "Service", "name": service}, "rules": [rule]}}


def allow_account(name: str, service: str, account: str) -> dict[str, Any]:
    return allow(name, service, {"from": [{"source": {
        "principals": [f"gossamer.local/ns/default/sa/{account}"]}}]})


async def _clusters(side: Sidecar) -> set[str]:
    text = await side.envoy.aadmin_get("/clusters")
    return {line.split("::", 1)[0] for line in text.splitlines()
            if line.startswith("outbound|")}


async def test_a_caller_holds_only_what_policies_let_it_reach(mini: MiniMesh,
                                                               make_backend: Any) -> None:
    await mini.apply({"apiVersion": API, "kind": "Mesh", "metadata": {"name": "default"},
                      "spec": {"reachability": "inferred"}})
    await mini.serve("echo", [make_backend("echo")])
    await mini.serve("other", [make_backend("other")])
    await mini.apply(allow_account("other-watcher", "other", "watcher"))  # echo: open
    client = await mini.client()  # identity ns/default/sa/client, no Sidecar
    watcher = await mini.client("watcher")
    await mini.wait_synced()

    assert await _clusters(client) == {ECHO}
    assert await _clusters(watcher) == {ECHO, OTHER}
    assert (await get(client, "http://echo/")).status_code == 200
    # Refused by the caller's sidecar (no route), where the callee's RBAC would have.
    assert (await get(client, "http://other/")).status_code == 404
    exp = await explained(mini, status=404)
    assert "outside the caller's egress scope inferred from AuthorizationPolicies" \
        in exp["cause"], exp

    await mini.apply(allow("other-reads", "other", {"to": [{"operation": {"methods": ["GET"]}}]}))
    await wait_for(lambda: _other_answers(client), "other reachable after the new ALLOW")
    assert await _clusters(client) == {ECHO, OTHER}


async def _other_answers(client: Sidecar) -> bool:
    return (await get(client, "http://other/")).status_code == 200
