"""Tracing in the secure demo mesh (mTLS, real agents): one request through
frontend -> catalog -> inventory is one trace at the test's OTLP receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.e2e.conftest import Mesh, running_mesh
from tests.otlp import OtlpReceiver, Recorded, open_receiver

pytestmark = pytest.mark.slow

CLIENT, SERVER = Span.SpanKind.SPAN_KIND_CLIENT, Span.SpanKind.SPAN_KIND_SERVER
TELEMETRY = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: Telemetry
metadata: {{name: mesh, namespace: gossamer-system}}
spec:
  tracing:
    samplingPercent: 100
    collector: {{address: "127.0.0.1:{port}"}}
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    yield from open_receiver()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from running_mesh(tmp_path_factory, "tracing")


def _path(spans: list[Recorded]) -> list[Recorded] | None:
    """The spans as one chain from the root, each the only child of the one before."""
    roots = [s for s in spans if not s.parent]
    if len(roots) != 1:
        return None
    chain = roots
    while children := [s for s in spans if s.parent == chain[-1].id]:
        if len(children) != 1:
            return None
        chain.append(children[0])
    return chain if len(chain) == len(spans) else None


def test_a_request_is_one_trace_through_the_secure_demo(mesh: Mesh,
                                                        receiver: OtlpReceiver) -> None:
    mesh.apply(TELEMETRY.format(port=receiver.port))
    mesh.wait_synced()
    deadline = time.monotonic() + 60
    chain: list[Recorded] | None = None
    i = 0
    # Connections opened before the change keep the old listener config until they
    # drain, so a request may be traced only in part; each try uses a new marker.
    while chain is None and time.monotonic() < deadline:
        i += 1
        with mesh.client_via("frontend") as client:
            resp = client.get(f"http://frontend/traced-{i}")
        assert resp.status_code == 200, resp.text
        until = time.monotonic() + 12
        while time.monotonic() < until:
            spans = receiver.trace_of(f"/traced-{i}")
            if len(spans) >= 6 and (chain := _path(spans)) is not None:
                break
            time.sleep(0.2)
    assert chain is not None, receiver.spans
    assert len({s.trace for s in chain}) == 1
    assert [s.kind for s in chain] == [CLIENT, SERVER] * 3
    services = [s.service for s in chain]
    assert services[:3] == ["frontend"] * 3, chain
    assert services[3].startswith("catalog"), chain
    assert services[4] == services[3], chain
    assert services[5] == "inventory", chain
