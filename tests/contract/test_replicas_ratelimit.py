"""Global rate limits stay global with two replicas (issue 19): Envoy asks whichever
replica its xDS cluster picks, so both replicas must count in one place, Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
import httpx
import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from gossamer.contract.names import RATELIMIT_DOMAIN, RULE_KEY
from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions
from gossamer.ratelimit.service import METHOD
from gossamer.ratelimit.service import SERVICE as RLS
from gossamer.store.postgres import PostgresStore
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]
Response = rls_pb2.RateLimitResponse
LIMIT = 5
SERVICE = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "Service",
           "metadata": {"name": "catalog", "namespace": "shop"},
           "spec": {"selector": {"app": "catalog"}, "ports": [{"port": 80}]}}
POLICY = {"apiVersion": "mesh.gossamer.dev/v1alpha1", "kind": "RateLimitPolicy",
          "metadata": {"name": "p", "namespace": "shop"},
          "spec": {"targetRef": {"kind": "Service", "name": "catalog"},
                   # An hour's window, aligned to the epoch: the test cannot straddle two.
                   "global": {"rules": [{"requests": LIMIT, "per": "1h"}]}}}


@pytest.fixture
async def replicas(postgres_url: str, redis_server: RedisServer,
                   tmp_path: Path) -> AsyncIterator[list[ControlPlane]]:
    planes = []
    try:
        for _ in range(2):
            plane = ControlPlane(ControlPlaneOptions(
                state_dir=None, xds_port=0, api_port=0, secure=False,
                ratelimit_redis=redis_server.url), store=PostgresStore(postgres_url))
            await plane.start()
            planes.append(plane)
        yield planes
    finally:
        for plane in planes:
            await plane.stop()


async def ask(channel: grpc.aio.Channel) -> str:
    call = channel.unary_unary(f"/{RLS}/{METHOD}",
                               request_serializer=rls_pb2.RateLimitRequest.SerializeToString,
                               response_deserializer=Response.FromString)
    request = rls_pb2.RateLimitRequest(domain=RATELIMIT_DOMAIN, descriptors=[
        {"entries": [{"key": RULE_KEY, "value": "shop/p/0"}]}])
    answer = await call(request, timeout=10)
    return str(Response.Code.Name(answer.overall_code))


async def test_two_replicas_share_one_count(replicas: list[ControlPlane]) -> None:
    async with httpx.AsyncClient(base_url=replicas[0].api_url, trust_env=False) as api:
        assert (await api.post("/api/v1/apply", json=SERVICE)).status_code == 200
        assert (await api.post("/api/v1/apply", json=POLICY)).status_code == 200
    for plane in replicas:  # each replica's index has the limit
        for _ in range(600):
            if plane.reconciler.index.rate_limits:
                break
            await asyncio.sleep(0.05)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p.xds_port}") for p in replicas]
    try:
        answers = [await ask(channels[i % 2]) for i in range(2 * LIMIT)]
    finally:
        for channel in channels:
            await channel.close()
    # Alternating replicas: LIMIT allowed in all, not LIMIT on each.
    assert answers == ["OK"] * LIMIT + ["OVER_LIMIT"] * LIMIT
