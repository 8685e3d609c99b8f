"""Reads every connected sidecar's Envoy stats on a timer and keeps a sliding window.

Each round asks the proxies the xDS registry lists as connected for
`/stats?format=json&histogram_buckets=cumulative&usedonly` (filtered to the stats
golden metrics use; only those written at least once), at most `concurrency` at a
time, each bounded by `timeout`. A proxy that does not answer simply has no new
sample this round; its window ages out. Samples older than `window` seconds (plus
one, to span the whole window) are dropped, and a proxy gone from the registry is
forgotten, so memory follows the mesh. Where each sidecar's admin is reached comes
from its node metadata through `resolve` (proxyadmin/: its `gossamer_admin` mTLS
listener on its host, or its loopback admin in local mode).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from gossamer.envoy.admin import get_json
from gossamer.envoy.errors import AdminError
from gossamer.proxyadmin.access import SidecarAdmin
from gossamer.proxyadmin.target import AdminTarget
from gossamer.telemetry.golden import BadStats, Observed, Sample, Source, delta, parse_stats
from gossamer.xds.status import ProxyRegistry, ProxyStatus

log = logging.getLogger(__name__)

# Only what golden metrics read: the JSON of a full sidecar is ~100 KB.
STATS_FILTER = (r"^(http\.inbound\.downstream_rq_|"
                r"cluster\.outbound\|[^.]*\.[^.]*\.upstream_rq_|"
                r"cluster\.external\|\d+\|[^|]*\|[^.|]*\.[^.|]*\.upstream_rq_|"
                r"vhost\.[^.]*\.[^.]*\.route\.called\.upstream_rq_)")


@dataclass(frozen=True)
class ScrapeOptions:
    interval: float = 5.0
    window: float = 60.0
    timeout: float = 2.0
    concurrency: int = 8


# `usedonly`: only stats written at least once. A stat never written is a zero (a
# counter) or empty (a histogram), which is what `golden.delta` takes a missing one
# for, so the numbers are the same; the sidecar skips the regex, the sorting and the
# JSON of every unused stat: a third to 45 % of what a scrape cost it (~2M
# instructions a scrape, every 5 s; bench/dataplane/INSTRUCTIONS.md).
STATS_TARGET = "/stats?" + urlencode({"format": "json", "histogram_buckets": "cumulative",
                                        "filter": STATS_FILTER}) + "&usedonly"


Resolve = Callable[[Mapping[str, Any]], AdminTarget | None]


def source_of(proxy: ProxyStatus) -> Source:
    meta = proxy.node.metadata
    return Source(proxy.node.id, str(meta.get("namespace", "default")),
                  str(meta.get("service", "")), str(meta.get("workload", proxy.node.id)),
                  str(meta.get("gateway") or "") if not meta.get("inbound_port") else "")


class Scraper:
    def __init__(self, registry: ProxyRegistry, options: ScrapeOptions | None = None, *,
                 resolve: Resolve | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`resolve`: a proxy's node metadata -> its admin target (None: unreachable);
        by default, sidecars on loopback only (a control plane without the mesh CA)."""
        self.registry = registry
        self.options = options or ScrapeOptions()
        self.resolve = resolve or SidecarAdmin().target
        self._clock = clock
        self._samples: dict[str, deque[Sample]] = {}
        self._sources: dict[str, Source] = {}
        self.rounds = 0
        self.failures = 0

    def add(self, source: Source, sample: Sample) -> None:
        """Record one scrape (the scraper's own rounds call this; tests may too)."""
        samples = self._samples.setdefault(source.node_id, deque())
        samples.append(sample)
        self._sources[source.node_id] = source
        cutoff = sample.at - self.options.window
        while len(samples) > 2 and samples[1].at <= cutoff:
            samples.popleft()

    def observed(self) -> list[Observed]:
        """Each proxy's traffic over (about) the last `window` seconds."""
        out = []
        for node_id, samples in self._samples.items():
            if len(samples) < 2:
                continue
            newest = samples[-1]
            start = next(s for s in samples if s.at >= newest.at - self.options.window)
            if start is newest:
                start = samples[-2]
            out.append(Observed(self._sources[node_id], delta(start, newest)))
        return out

    async def scrape_once(self) -> None:
        proxies = [(p, a) for p in self.registry.proxies()
                   if p.connected and (a := self.resolve(p.node.metadata)) is not None]
        live = {p.node.id for p, _ in proxies}
        for gone in set(self._samples) - live:
            del self._samples[gone]
            self._sources.pop(gone, None)
        slots = asyncio.Semaphore(self.options.concurrency)
        await asyncio.gather(*(self._scrape(slots, p, a) for p, a in proxies))
        self.rounds += 1

    async def _scrape(self, slots: asyncio.Semaphore, proxy: ProxyStatus,
                      admin: AdminTarget) -> None:
        async with slots:
            try:
                doc = await get_json(admin.host, admin.port, STATS_TARGET,
                                     timeout=self.options.timeout, tls=admin.tls)
                sample = parse_stats(doc, self._clock())
            except (AdminError, BadStats) as exc:
                self.failures += 1
                log.debug("stats of %s: %s", proxy.node.id, exc)
                return
        self.add(source_of(proxy), sample)

    async def run(self) -> None:
        while True:
            started = self._clock()
            await self.scrape_once()
            await asyncio.sleep(max(0.1, self.options.interval - (self._clock() - started)))
