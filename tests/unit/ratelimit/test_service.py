"""The control plane's rate-limit service without Envoy: fixed windows aligned to the
epoch, one counter per rule and key value, limits read from the current index,
unknown descriptors allowed, and a failing backend failing open (and counted)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from gossamer.contract.names import RATELIMIT_DOMAIN, RULE_KEY
from gossamer.index import MeshIndex, build_index
from gossamer.model import parse_documents
from gossamer.ratelimit.counters import CounterError, MemoryCounters
from gossamer.ratelimit.service import RateLimitService, window

Response = rls_pb2.RateLimitResponse
POLICY = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: p, namespace: shop}
spec:
  targetRef: {kind: Service, name: catalog}
  global:
    rules:
    - {requests: REQUESTS, per: 10s}
    - {key: {type: header, header: x-user}, requests: 2, per: 1m}
"""


def index(requests: int = 3) -> MeshIndex:
    return build_index(parse_documents(POLICY.replace("REQUESTS", str(requests))))


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def request(rule: int, *extra: tuple[str, str], domain: str = RATELIMIT_DOMAIN,
            hits: int = 0) -> rls_pb2.RateLimitRequest:
    entries = [(RULE_KEY, f"shop/p/{rule}"), *extra]
    return rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits, descriptors=[
        {"entries": [{"key": k, "value": v} for k, v in entries]}])


def service(clock: Clock, idx: list[MeshIndex] | None = None,
            counters: Any = None) -> RateLimitService:
    current = idx or [index()]
    return RateLimitService(lambda: current[0], counters or MemoryCounters(clock=clock),
                            clock=clock)


async def codes(svc: RateLimitService, req: rls_pb2.RateLimitRequest, n: int) -> list[str]:
    return [Response.Code.Name((await svc.decide(req)).overall_code) for _ in range(n)]


def test_windows_are_aligned_to_multiples_of_per_since_the_epoch() -> None:
    assert window(10_000, 1_700_000_003_250) == window(10_000, 1_700_000_009_999)
    w = window(10_000, 1_700_000_003_250)
    assert (w.start_ms, w.end_ms) == (1_700_000_000_000, 1_700_000_010_000)


async def test_exactly_n_per_window_and_the_next_window_starts_afresh() -> None:
    clock = Clock(1_700_000_000_000)
    svc = service(clock)
    assert await codes(svc, request(0), 5) == ["OK"] * 3 + ["OVER_LIMIT"] * 2
    clock.now += 9_999
    assert await codes(svc, request(0), 1) == ["OVER_LIMIT"]
    clock.now += 1
    assert await codes(svc, request(0), 4) == ["OK"] * 3 + ["OVER_LIMIT"]


async def test_the_status_carries_what_envoy_turns_into_x_ratelimit_headers() -> None:
    clock = Clock(1_700_000_004_000)
    svc = service(clock)
    status = (await svc.decide(request(1, ("header", "alice")))).statuses[0]
    assert status.code == Response.OK
    assert status.current_limit.requests_per_unit == 2
    assert status.current_limit.unit == Response.RateLimit.MINUTE
    assert status.limit_remaining == 1
    # 1_700_000_004_000 is 24s into its minute.
    assert status.duration_until_reset.ToMilliseconds() == 36_000
    ten = (await svc.decide(request(0))).statuses[0]
    assert ten.current_limit.unit == Response.RateLimit.UNKNOWN
    assert ten.duration_until_reset.ToMilliseconds() == 6_000


async def test_key_values_count_apart() -> None:
    svc = service(Clock(1_700_000_000_000))
    alice, bob = request(1, ("header", "alice")), request(1, ("header", "bob"))
    assert await codes(svc, alice, 3) == ["OK", "OK", "OVER_LIMIT"]
    assert await codes(svc, bob, 2) == ["OK", "OK"]
    long = request(1, ("header", "x" * 10_000))
    assert await codes(svc, long, 3) == ["OK", "OK", "OVER_LIMIT"]


async def test_a_changed_limit_applies_to_the_running_window() -> None:
    current = [index(2)]
    svc = service(Clock(1_700_000_000_000), current)
    assert await codes(svc, request(0), 3) == ["OK", "OK", "OVER_LIMIT"]
    current[0] = index(5)
    assert await codes(svc, request(0), 3) == ["OK", "OK", "OVER_LIMIT"]


@pytest.mark.parametrize("req", [
    request(7), request(0, domain="other"),
    rls_pb2.RateLimitRequest(domain=RATELIMIT_DOMAIN, descriptors=[{"entries": [
        {"key": "generic_key", "value": "x"}]}]),
])
async def test_descriptors_naming_no_rule_are_allowed(req: rls_pb2.RateLimitRequest) -> None:
    svc = service(Clock(1_700_000_000_000))
    for _ in range(10):
        response = await svc.decide(req)
        assert response.overall_code == Response.OK
        assert not response.statuses[0].HasField("current_limit")


async def test_hits_addend_counts_several_at_once() -> None:
    svc = service(Clock(1_700_000_000_000))
    assert await codes(svc, request(0, hits=3), 1) == ["OK"]
    assert await codes(svc, request(0), 1) == ["OVER_LIMIT"]


class Broken:
    async def hit(self, key: str, hits: int, expires_ms: int) -> int:
        raise CounterError("down")

    async def close(self) -> None:
        return None


async def test_a_failing_backend_fails_open_and_is_counted() -> None:
    svc = service(Clock(1_700_000_000_000), counters=Broken())
    assert await codes(svc, request(0), 5) == ["OK"] * 5
    assert svc.metrics.backend_errors._value.get() == 5
