"""What the API shows of Secrets and Gateways: a Secret never with its key material
(only the gateways serving it get that, over their own ADS streams), and a Gateway
Programmed once a connected replica has ACKed its config."""

from __future__ import annotations

from typing import Any

import pytest

from gossamer.api.gateways import with_programmed
from gossamer.model import ResourceKey
from tests.gateway_docs import gateway, self_signed, tls_secret
from tests.unit.api import test_input
from tests.unit.api.test_input import Api

api = test_input.api  # the fixture: the API in process on a SQLite store, tokens on

CERT, KEY = self_signed("a.example.com")


async def test_no_read_shows_a_secrets_data(api: Api) -> None:
    applied = await api.apply(tls_secret("cert", CERT, KEY), api.admin)
    assert applied.status_code == 200, applied.text
    assert "data" not in applied.json()["resource"]
    one = await api.http.get("/api/v1/resources/Secret/default/cert", headers=api.admin)
    assert one.status_code == 200
    assert "data" not in one.json()
    assert one.json()["type"] == "kubernetes.io/tls"
    listing = await api.http.get("/api/v1/resources/Secret", headers=api.admin)
    assert [d.get("data") for d in listing.json()] == [None]
    # The store holds it (the index, and so the gateways' Envoys, need it).
    stored = await api.store.get("Secret", "default", "cert")
    assert stored is not None
    assert set(stored.body["data"]) == {"tls.crt", "tls.key"}
    gone = await api.http.delete("/api/v1/resources/Secret/default/cert", headers=api.admin)
    assert "data" not in gone.json()["deleted"]


async def test_a_gateway_shows_the_index_conditions(api: Api) -> None:
    assert (await api.apply(gateway(listeners=[
        {"name": "http", "port": 80, "protocol": "HTTP"}]), api.admin)).status_code == 200
    await api.indexed(lambda r: ResourceKey("Gateway", "default", "edge") in
                      r.index.gateway_status)
    doc = (await api.http.get("/api/v1/resources/Gateway/default/edge",
                              headers=api.admin)).json()
    assert [(c["type"], c["status"]) for c in doc["status"]["conditions"]] == [
        ("Accepted", "True"), ("Programmed", "False")]


def _proxy(gateway_name: str, connected: bool, synced: bool) -> dict[str, Any]:
    return {"connected": connected, "synced": synced,
            "metadata": {"gateway": gateway_name, "namespace": "default"}}


@pytest.mark.parametrize(("proxies", "programmed"), [
    ([], "False"),
    ([_proxy("edge", True, False)], "False"),
    ([_proxy("edge", False, True)], "False"),
    ([_proxy("other", True, True)], "False"),
    ([_proxy("edge", True, True), _proxy("edge", True, False)], "True"),
])
def test_programmed_needs_a_connected_replica_in_sync(proxies: list[dict[str, Any]],
                                                      programmed: str) -> None:
    status = {"conditions": [{"type": "Accepted", "status": "True"},
                             {"type": "Programmed", "status": "False"}]}
    out = with_programmed("Gateway", "default", "edge", status, proxies)
    assert out["conditions"][1]["status"] == programmed
