"""The sidecar injection webhook: `POST /api/v1/kubernetes/inject`, an
`AdmissionReview` (admission.k8s.io/v1) in, the same with its response out
(k8s/inject.py decides). Served on the API's port, over TLS (the API is TLS beyond
loopback), and open: kube-apiserver sends no bearer token, and the answer is a pure
function of the pod it was sent, which changes nothing here."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from gossamer.api.context import ApiContext, ApiError


def kubernetes_routes(app: FastAPI, ctx: ApiContext) -> None:
    @app.post("/api/v1/kubernetes/inject")
    async def inject(request: Request) -> dict[str, Any]:
        if ctx.injection is None:
            raise ApiError(404, "this control plane does not run with --kubernetes")
        try:
            review = await request.json()
        except ValueError as exc:
            raise ApiError(400, "the body is not JSON (an AdmissionReview)") from exc
        if not isinstance(review, dict) or review.get("kind") != "AdmissionReview" \
                or not isinstance(review.get("request"), dict):
            raise ApiError(400, "expected an AdmissionReview (admission.k8s.io/v1) with a "
                                "request", [{"path": "request", "reason": "required"}])
        return ctx.injection(review)
