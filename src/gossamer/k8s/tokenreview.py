"""Kubernetes ServiceAccount tokens as join credentials, checked by TokenReview.

An injected sidecar joins with its pod's projected token (audience `gossamer`), so no
join token is handed out on Kubernetes. A bearer that is not one of the store's
tokens is sent to the API server in a `TokenReview` (authentication.k8s.io/v1); an
authenticated `system:serviceaccount:NS:SA` whose audiences include `gossamer`
grants what a join token for NS/SA grants. Verdicts are kept for `cache_seconds`
(by the token's SHA-256), so a reconnect storm is not one review per proxy; a
token the API server can no longer vouch for stops working within that time.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from gossamer.ca.tokens import Scope, TokenRecord
from gossamer.k8s.client import KubeApi, KubeError
from gossamer.k8s.inject import AUDIENCE

log = logging.getLogger(__name__)
PREFIX = "system:serviceaccount:"


def grant(status: dict[str, object], digest: str) -> TokenRecord | None:
    """The grant of a TokenReview's status, or None (pure)."""
    user = status.get("user")
    name = user.get("username") if isinstance(user, dict) else None
    audiences = status.get("audiences")
    if status.get("authenticated") is not True or not isinstance(name, str) \
            or not name.startswith(PREFIX):
        return None
    if isinstance(audiences, list) and AUDIENCE not in audiences:
        return None
    namespace, _, account = name[len(PREFIX):].partition(":")
    if not namespace or not account:
        return None
    return TokenRecord(f"sa-{digest[:12]}", Scope.JOIN, namespace, account,
                       datetime.now(UTC).replace(microsecond=0),
                       "Kubernetes ServiceAccount token", kubernetes=True)


class TokenReviewer:
    def __init__(self, api: KubeApi, cache_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}

    async def verify(self, token: str) -> TokenRecord | None:
        if len(token) > 16384 or token.count(".") != 2:
            return None  # not a JWT: not worth a review
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            status = await self.api.review_token(token, AUDIENCE)
        except KubeError as exc:
            log.warning("kubernetes: cannot review a token: %s", exc)
            return None  # not cached: the next attempt asks again
        record = grant(status, digest)
        if len(self._cache) > 10000:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[digest] = (now + self.cache_seconds, record)
        return record
