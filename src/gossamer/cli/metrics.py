"""`gossamer stat` and `edges`: golden metrics from the control plane's window (and the
edge table `top --edges` prints)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from gossamer.cli.app import Server, app
from gossamer.cli.client import Api, CliError

KIND_ALIASES = {"service": "service", "services": "service", "svc": "service",
                "workload": "workload", "workloads": "workload", "wl": "workload",
                "edge": "edge", "edges": "edge"}
Output = Annotated[str, typer.Option("--output", "-o", help="table or json")]
OptionalNamespace = Annotated[str | None, typer.Option(
    "--namespace", "-n", help="only this namespace (default: all)")]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def _golden_cells(row: dict[str, Any]) -> list[str]:
    lat = row["latency_ms"]
    return [_pct(row["success_rate"]), f"{row['rps']:.2f}", _ms(lat["p50"]), _ms(lat["p95"]),
            _ms(lat["p99"]), str(row["requests"])]


GOLDEN = ["SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "REQUESTS"]


def render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, like `kubectl get`."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = ["   ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in (header, *rows)]
    return "\n".join(lines)


def _edge_from(row: dict[str, Any]) -> str:
    src = row["source"]
    who = src.get("workload") or src["service"]
    return f"{who}.{src['namespace']}"


def _codes(row: dict[str, Any]) -> str:
    return " ".join(f"{c}={n}" for c, n in row["responses"].items() if n) or "-"


def edge_rows(items: list[dict[str, Any]], *, service: bool,
              codes: bool) -> list[list[str]]:
    """One row per edge; under an edge to a Service whose routes sent the requests
    on (`routed`), one row per backend, `-> BACKEND`, with what went there."""
    rows = []
    for r in items:
        who = [_edge_from(r), *([r["source"]["service"]] if service else [])]
        rows.append([*who, r["destination"], *_golden_cells(r), *([_codes(r)] if codes else [])])
        for b in r.get("backends", ()):
            rows.append([*([""] * len(who)), f"  -> {b['destination']}", *_golden_cells(b),
                         *([_codes(b)] if codes else [])])
    return rows


def stat_table(kind: str, items: list[dict[str, Any]]) -> str:
    if kind == "edge":
        return render(["FROM", "TO", *GOLDEN], edge_rows(items, service=False, codes=False))
    return render(["NAMESPACE", "NAME", *GOLDEN],
                  [[r["namespace"], r["name"], *_golden_cells(r)] for r in items])


def fetch_stats(api: Api, kind: str, name: str | None, namespace: str | None) -> dict[str, Any]:
    query = f"/api/v1/stats?kind={kind}"
    if name:
        query += f"&name={name}"
    if namespace:
        query += f"&namespace={namespace}"
    body: dict[str, Any] = api.call("GET", query)
    return body


@app.command()
def stat(target: Annotated[str, typer.Argument(
            help="service, workload or edge, optionally /NAME (svc/catalog)")] = "service",
         namespace: OptionalNamespace = None, output: Output = "table",
         server: Server = None) -> None:
    """Golden metrics (success rate, requests per second, latency percentiles) over the
    control plane's sliding window, per service, workload or edge."""
    kind_text, _, name = target.partition("/")
    kind = KIND_ALIASES.get(kind_text.lower())
    if kind is None:
        raise CliError(f"unknown kind {kind_text!r}; use service, workload or edge")
    body = fetch_stats(Api(server), kind, name or None, namespace)
    if output == "json":
        print(json.dumps(body, indent=2))
        return
    if output != "table":
        raise CliError(f"unknown output format {output!r}; use table or json")
    if name and not body["items"]:
        raise CliError(f"no traffic seen for {kind} {name!r} in the last "
                       f"{body['window_seconds']:.0f}s")
    print(stat_table(kind, body["items"]))


@app.command()
def edges(service: Annotated[str, typer.Argument(help="the called Service (NAME or NAME.NS)")],
          output: Output = "table", server: Server = None) -> None:
    """Who calls SERVICE, and how: per calling workload, its requests' outcomes and latency.
    When SERVICE's routes send its traffic to other Services, each caller's row is
    followed by the split by backend."""
    body = fetch_stats(Api(server), "edge", service, None)
    if output == "json":
        print(json.dumps(body, indent=2))
        return
    if not body["items"]:
        raise CliError(f"nobody called {service!r} in the last {body['window_seconds']:.0f}s")
    print(render(["FROM", "SERVICE", "TO", *GOLDEN, "CODES"],
                 edge_rows(body["items"], service=True, codes=True)))


def top_table(items: list[dict[str, Any]], limit: int) -> str:
    """Where requests went: an edge to a Service that routed them on counts them again
    under its backends, so it is left out."""
    went = [r for r in items if not r.get("routed")]
    busiest = sorted(went, key=lambda r: (-r["rps"], _edge_from(r), r["destination"]))[:limit]
    return render(["FROM", "TO", *GOLDEN, "CODES"],
                  [[_edge_from(r), r["destination"], *_golden_cells(r), _codes(r)]
                   for r in busiest])


@app.command("prometheus-config")
def prometheus_config(
        file_sd: Annotated[str | None, typer.Option(
            "--file-sd", help="write the sidecar targets to this JSON file (file_sd) and "
            "point the config at it; run again to refresh it")] = None,
        interval: Annotated[str, typer.Option("--scrape-interval")] = "15s",
        server: Server = None) -> None:
    """Print a Prometheus configuration scraping the control plane and every sidecar."""
    import yaml

    from gossamer.cli.client import ca_file, server_url
    from gossamer.telemetry.promconfig import BadServer, scrape_config, sidecar_targets

    proxies = Api(server).call("GET", "/api/v1/proxies")
    bundle = ca_file()
    try:
        config = scrape_config(server_url(server), proxies, interval=interval, file_sd=file_sd,
                               ca_file=str(bundle.absolute()) if bundle else None)
    except BadServer as exc:
        raise CliError(str(exc)) from exc
    if file_sd is not None:
        from pathlib import Path

        path = Path(file_sd)
        tmp = path.with_name(path.name + ".tmp")
        try:  # whole or not at all: Prometheus may read it any time
            tmp.write_text(json.dumps(sidecar_targets(proxies), indent=2))
            tmp.replace(path)
        except OSError as exc:
            raise CliError(f"cannot write {file_sd}: {exc.strerror}") from exc
    print(yaml.safe_dump(config, sort_keys=False), end="")
