"""The injection webhook's endpoint on the API: open (kube-apiserver sends no token),
only with --kubernetes, and only for AdmissionReviews."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gossamer.api.app import create_app
from gossamer.api.auth import Authenticator
from gossamer.api.context import ApiContext
from gossamer.ca.tokens import Tokens
from gossamer.controlplane.leases import Leases
from gossamer.controlplane.reconcile import Reconciler
from gossamer.k8s.inject import InjectConfig, review
from gossamer.store.memory import MemoryStore

Injection = Callable[[dict[str, Any]], dict[str, Any]] | None


@pytest.fixture
def make_api() -> Callable[[Injection], Any]:
    async def make(injection: Injection) -> httpx.AsyncClient:
        store = MemoryStore()
        reconciler = Reconciler(store, lambda node, snap: None, debounce=0.005)
        ctx = ApiContext(store, reconciler, Leases(store), lambda: [],
                         auth=Authenticator(Tokens(store)), injection=injection)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx)),
                                 base_url="http://cp")

    return make


POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "web", "image": "web",
                                "ports": [{"containerPort": 8080}]}]}}
REVIEW = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
          "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                      "namespace": "shop", "operation": "CREATE", "object": POD}}


async def test_answers_an_admission_review_without_a_token(make_api: Any) -> None:
    labels = {"gossamer.dev/inject": "enabled"}
    http = await make_api(lambda r: review(r, labels, InjectConfig()))
    async with http:
        resp = await http.post("/api/v1/kubernetes/inject", json=REVIEW)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == "u-1"
        patch = json.loads(base64.b64decode(answer["response"]["patch"]))
        assert any(op["path"] == "/spec/initContainers" for op in patch)
        # Everything else on the API still wants a token.
        assert (await http.get("/api/v1/resources/Service")).status_code == 401


@pytest.mark.parametrize("body", [{"kind": "Pod"}, {"kind": "AdmissionReview"}, [1]])
async def test_refuses_what_is_not_an_admission_review(make_api: Any, body: Any) -> None:
    http = await make_api(lambda r: review(r, {}, InjectConfig()))
    async with http:
        resp = await http.post("/api/v1/kubernetes/inject", json=body)
        assert resp.status_code == 400
        assert "AdmissionReview" in resp.json()["error"]


async def test_not_served_without_kubernetes(make_api: Any) -> None:
    http = await make_api(None)
    async with http:
        resp = await http.post("/api/v1/kubernetes/inject", json=REVIEW)
        assert resp.status_code == 404
        assert "--kubernetes" in resp.json()["error"]
