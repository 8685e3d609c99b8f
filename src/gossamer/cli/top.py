"""`gossamer top`: the busiest paths now, from live tap of the Services' sidecars (like
`linkerd viz top`), or with `--edges` the busiest edges from the golden metrics.

Each tapped Service gets its own tap stream on a thread; the main thread folds the
events into `PathTop` and redraws. Only the last `window` seconds count, so the
table shows what is busy now, not since the command started.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from gossamer.cli.app import Server, app
from gossamer.cli.client import Api, CliError
from gossamer.cli.metrics import OptionalNamespace, fetch_stats, render, top_table

PathKey = tuple[str, str, str, str]  # source, destination service, method, path


def short_source(source: str) -> str:
    """`trust.domain/ns/NS/sa/SA` -> `SA.NS`; other callers as tap reported them."""
    parts = source.split("/")
    if len(parts) >= 5 and parts[-4] == "ns" and parts[-2] == "sa":
        return f"{parts[-1]}.{parts[-3]}"
    return source


@dataclass
class _Seen:
    at: float
    ok: bool
    latency_ms: float | None


@dataclass
class PathTop:
    """Requests per (source, destination, method, path) over the last `window` seconds."""

    window: float = 10.0
    rows: dict[PathKey, deque[_Seen]] = field(default_factory=dict)
    total: int = 0

    def add(self, service: str, event: dict[str, Any], now: float) -> None:
        path = str(event.get("path", "")).split("?", 1)[0]
        key = (short_source(str(event.get("source", "?"))), service,
               str(event.get("method", "")), path)
        status = int(event.get("status", 0))
        latency = event.get("latency_ms")
        self.rows.setdefault(key, deque()).append(
            _Seen(now, 0 < status < 500, float(latency) if latency is not None else None))
        self.total += 1

    def _prune(self, now: float) -> None:
        for key in list(self.rows):
            seen = self.rows[key]
            while seen and seen[0].at < now - self.window:
                seen.popleft()
            if not seen:
                del self.rows[key]

    def table(self, now: float, limit: int) -> str:
        self._prune(now)
        ordered = sorted(self.rows.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:limit]
        out = []
        for (source, dest, method, path), seen in ordered:
            lat = [s.latency_ms for s in seen if s.latency_ms is not None]
            ok = sum(1 for s in seen if s.ok)
            out.append([source, dest, method, path, str(len(seen)),
                        f"{len(seen) / self.window:.2f}", f"{100 * ok / len(seen):.2f}%",
                        _ms(min(lat) if lat else None), _ms(max(lat) if lat else None),
                        _ms(seen[-1].latency_ms)])
        return render(["SOURCE", "DESTINATION", "METHOD", "PATH", "COUNT", "RPS", "SUCCESS",
                       "BEST", "WORST", "LAST"], out)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def _tap_thread(api: Api, namespace: str, service: str, params: dict[str, Any],
                out: queue.Queue[tuple[str, dict[str, Any]] | None]) -> None:
    try:
        for event in api.stream(f"/api/v1/tap/{namespace}/{service}", params):
            out.put((service, event))
    except CliError as exc:
        out.put((service, {"error": str(exc)}))
    finally:
        out.put(None)


def _services(api: Api, namespace: str | None) -> list[tuple[str, str]]:
    """Every Service with traffic in the golden-metrics window."""
    rows = fetch_stats(api, "service", None, namespace)["items"]
    return sorted({(r["namespace"], r["name"]) for r in rows if r["requests"]})


def _start(api: Api, targets: Iterable[tuple[str, str]], seconds: float, limit: int,
           out: queue.Queue[tuple[str, dict[str, Any]] | None]) -> int:
    params = {"seconds": seconds, "limit": limit}
    started = 0
    for ns, svc in targets:
        threading.Thread(target=_tap_thread, args=(Api(api.base), ns, svc, params, out),
                         daemon=True, name=f"tap-{svc}").start()
        started += 1
    return started


@app.command()
def top(service: Annotated[str | None, typer.Argument(
            help="tap this Service (default: every Service with traffic)")] = None,
        namespace: OptionalNamespace = None,
        interval: Annotated[float, typer.Option("--interval", help="seconds between "
                                                 "refreshes")] = 2.0,
        window: Annotated[float, typer.Option("--window", help="count requests of the "
                                              "last this many seconds")] = 10.0,
        limit: Annotated[int, typer.Option("--limit", help="rows shown")] = 20,
        once: Annotated[bool, typer.Option("--once", help="watch for --seconds (or --max "
                                           "requests), print one table, exit")] = False,
        seconds: Annotated[float, typer.Option("--seconds", help="with --once: how long "
                                               "to watch")] = 5.0,
        max_requests: Annotated[int, typer.Option("--max", help="stop after this many "
                                                  "requests")] = 10_000,
        edges: Annotated[bool, typer.Option("--edges", help="the busiest edges from the "
                                            "golden metrics instead of live paths")] = False,
        iterations: Annotated[int, typer.Option("--iterations", help="refreshes before "
                                                "exiting; 0: until Ctrl-C")] = 0,
        server: Server = None) -> None:
    """The busiest paths now (source, destination, method, path: count, success, latency),
    from live tap; needs an admin token. `--edges`: busiest edges, any token."""
    if interval <= 0 or limit <= 0 or window <= 0:
        raise CliError("--interval, --window and --limit must be positive")
    api = Api(server)
    if edges:
        return _top_edges(api, namespace, interval, limit, once, iterations)
    targets = ([(namespace or "default", service)] if service
               else _services(api, namespace))
    if not targets:
        raise CliError("no Service has traffic in the golden-metrics window; name one")
    events: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
    per_stream = max_requests if once else 10_000
    live = _start(api, targets, seconds if once else 600.0, per_stream, events)
    agg = PathTop(window=max(window, seconds) if once else window)
    deadline = time.monotonic() + seconds
    shown, next_draw = 0, time.monotonic() + interval
    while True:
        timeout = (deadline if once else next_draw) - time.monotonic()
        try:
            item = events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            pass
        else:
            if item is None:
                live -= 1
                if not once and live == 0:  # streams end after 600 s: start them again
                    live = _start(api, targets, 600.0, per_stream, events)
            else:
                svc, event = item
                if "error" in event:
                    raise CliError(str(event["error"]))
                agg.add(svc, event, time.monotonic())
        done = once and (time.monotonic() >= deadline or live == 0
                         or agg.total >= max_requests)
        if done or (not once and time.monotonic() >= next_draw):
            screen = (f"busiest paths over the last {agg.window:.0f}s "
                      f"({time.strftime('%H:%M:%S')})\n" + agg.table(time.monotonic(), limit))
            if not once and sys.stdout.isatty():
                screen = "\x1b[H\x1b[2J" + screen
            print(screen, flush=True)
            shown += 1
            next_draw = time.monotonic() + interval
            if once or (iterations and shown >= iterations):
                return None


def _top_edges(api: Api, namespace: str | None, interval: float, limit: int, once: bool,
               iterations: int) -> None:
    shown = 0
    while True:
        body = fetch_stats(api, "edge", None, namespace)
        screen = (f"busiest edges over the last {body['window_seconds']:.0f}s "
                  f"({time.strftime('%H:%M:%S')})\n" + top_table(body["items"], limit))
        if not once and sys.stdout.isatty():
            screen = "\x1b[H\x1b[2J" + screen
        print(screen, flush=True)
        shown += 1
        if once or (iterations and shown >= iterations):
            return
        time.sleep(interval)
