"""A tap session: stream a Service's requests from its sidecars' admin /tap.

Theory of operation: one task per sidecar of the Service POSTs the tap config to
that sidecar's admin (on another host: its `gossamer_admin` mTLS listener,
proxyadmin/) and reads the traces Envoy streams back for as long as
the connection stays open; each trace becomes a TapEvent on one shared queue. The
session ends after `limit` events or `seconds`, whichever comes first, or when
every sidecar's stream has ended; closing it closes every admin connection, which
makes Envoy drop the tap config (the sidecars stop tapping).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gossamer.envoy.admin import request
from gossamer.envoy.errors import AdminError
from gossamer.proxyadmin.target import AdminTarget
from gossamer.tap.events import TapEvent, events_from, split_stream, tap_config

log = logging.getLogger(__name__)
MAX_EVENTS = 10_000
MAX_SECONDS = 600.0


class TapError(RuntimeError):
    """No sidecar of the Service can be tapped."""


@dataclass(frozen=True)
class TapTarget:
    workload: str
    namespace: str
    admin: AdminTarget  # the sidecar's admin, as the control plane reaches it
    node_id: str = ""
    edge: bool = False  # a replica of an ingress gateway, not a sidecar


Resolve = Callable[[Mapping[str, Any]], AdminTarget | None]


def targets(proxies: Sequence[Mapping[str, Any]], namespace: str,
            service: str, resolve: Resolve, gateway: bool = False) -> list[TapTarget]:
    """Connected sidecars that serve `service` (those with an inbound listener), or
    with `gateway` the connected replicas of the ingress gateway `service` (no inbound
    listener: their Gateway's listeners), whose admin `resolve` finds from their node
    metadata."""
    out = []
    for p in proxies:
        meta = p.get("metadata") or {}
        if not p.get("connected") or meta.get("namespace", "default") != namespace:
            continue
        if gateway:
            if meta.get("gateway") != service or meta.get("inbound_port"):
                continue
        elif meta.get("service") != service or not meta.get("inbound_port"):
            continue
        admin = resolve(meta)
        if admin is not None:
            out.append(TapTarget(str(meta.get("workload", p.get("node_id"))), namespace, admin,
                                 str(p.get("node_id", "")), gateway))
    return out


async def _one(target: TapTarget, config: dict[str, Any],
               queue: asyncio.Queue[TapEvent | None]) -> None:
    destination = f"{target.workload}.{target.namespace}"
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        admin = target.admin
        async with request(admin.host, admin.port, "POST", "/tap", body=config,
                           tls=admin.tls) as resp:
            if resp.status != 200:
                log.warning("tap on %s refused: HTTP %s", destination, resp.status)
                return
            buffer = ""
            async for chunk in resp.chunks():
                docs, buffer = split_stream(buffer + text.decode(chunk))
                for event in events_from(docs, destination, target.edge):
                    await queue.put(event)
    except AdminError as exc:
        log.warning("tap on %s ended: %s", destination, exc)
    finally:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(None)  # this sidecar's stream is over


async def stream(tapped: Sequence[TapTarget], *, path: str | None = None,
                 method: str | None = None, bodies: bool = False, limit: int = 100,
                 seconds: float = 30.0) -> AsyncIterator[TapEvent]:
    if not tapped:
        raise TapError("no connected sidecar serves this service")
    limit, seconds = min(max(limit, 1), MAX_EVENTS), min(max(seconds, 0.1), MAX_SECONDS)
    config = tap_config(path, method, bodies)
    queue: asyncio.Queue[TapEvent | None] = asyncio.Queue(maxsize=1000)
    tasks = [asyncio.create_task(_one(t, config, queue)) for t in tapped]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    live, sent = len(tasks), 0
    try:
        while live and sent < limit:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                item = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                return
            if item is None:
                live -= 1
                continue
            sent += 1
            yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
