"""A bounded load generator for the demo: it stops by itself.

It calls the frontend through its own sidecar at a fixed rate and prints,
every few seconds, how many requests succeeded and which catalog version
answered them, so a traffic shift is visible as it happens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any


def _versions(body: Any) -> list[str]:
    """What catalog said in one answer: `v1`/`v2`, or `HTTP 429` and the like when a
    call to catalog failed (the frontend still answers 200 for a 4xx from it)."""
    out = []
    if isinstance(body, dict):
        if body.get("service") == "catalog" or str(body.get("service", "")).startswith("catalog"):
            out.append(str(body.get("version")))
        for url, up in (body.get("upstreams") or {}).items():
            status = up.get("status") if isinstance(up, dict) else None
            if "catalog" in str(url) and isinstance(status, int) and status >= 400:
                out.append(f"HTTP {status}")  # shown as "catalog HTTP 429"
            else:
                out += _versions(up.get("body") if isinstance(up, dict) else None)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="http://frontend/")
    p.add_argument("--rate", type=float, default=5.0, help="requests per second (max 200)")
    p.add_argument("--duration", type=float, default=1800.0, help="seconds (max 3600)")
    p.add_argument("--every", type=float, default=5.0, help="report interval, seconds")
    p.add_argument("--header", action="append", default=[], help="k:v added to requests")
    args = p.parse_args(argv)
    rate, duration = min(max(args.rate, 0.1), 200.0), min(args.duration, 3600.0)
    headers = dict(h.split(":", 1) for h in args.header)
    start = time.monotonic()
    sent, window = 0, Counter[str]()
    next_report = start + args.every
    while (now := time.monotonic()) - start < duration:
        due = start + sent / rate
        if due > now:
            time.sleep(due - now)
        sent += 1
        try:
            req = urllib.request.Request(args.url, headers=headers)
            with urllib.request.urlopen(req, timeout=10) as resp:
                window["ok"] += 1
                for v in _versions(json.loads(resp.read())):
                    window[f"catalog {v}"] += 1
        except urllib.error.HTTPError as exc:
            window[f"HTTP {exc.code}"] += 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            window[f"error {type(exc).__name__}"] += 1
        if time.monotonic() >= next_report:
            parts = ", ".join(f"{k}: {v}" for k, v in sorted(window.items()))
            print(f"[load] last {args.every:.0f}s: {parts}",
                  flush=True)
            window.clear()
            next_report += args.every
    print(f"[load] done: {sent} requests in {duration:.0f}s", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
