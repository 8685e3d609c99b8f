"""`gossamer tap`: watch a Service's requests live."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from gossamer.cli.app import Server, app
from gossamer.cli.client import Api, CliError


def format_event(event: dict[str, Any]) -> str:
    latency = event.get("latency_ms")
    took = f"{latency:.1f}ms" if isinstance(latency, int | float) else "-"
    edge = "route" in event  # a gateway's: the host and the route that answered count
    host = event.get("authority", "") if edge else ""
    route = f"  route {event['route']}" if edge else ""
    return (f"{event.get('time', '')}  {event.get('source', '?')} -> "
            f"{event.get('destination', '?')}  {event.get('method', '')} "
            f"{host}{event.get('path', '')}  {event.get('status', 0)}  {took}{route}")


@app.command()
def tap(
    service: str,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    path: Annotated[str | None, typer.Option("--path", help="path prefix")] = None,
    method: Annotated[str | None, typer.Option("--method")] = None,
    headers: Annotated[bool, typer.Option("--headers", help="print request headers "
                                          "(credentials redacted)")] = False,
    bodies: Annotated[bool, typer.Option("--bodies", help="capture bodies too (up to 4 KiB; "
                                         "off by default)")] = False,
    limit: Annotated[int, typer.Option("--max", help="stop after this many requests")] = 100,
    seconds: Annotated[float, typer.Option("--seconds", help="stop after this long")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    server: Server = None,
) -> None:
    """Stream live requests to SERVICE as its sidecars see them: time, source, destination,
    method, host and path, status, latency. `gateway/NAME`: requests arriving at the
    ingress gateway NAME from outside (source: the client's address; and the route
    that answered)."""
    params: dict[str, Any] = {"limit": limit, "seconds": seconds, "bodies": bodies}
    kind, _, name = service.rpartition("/")
    if kind.lower() in ("gateway", "gateways", "gtw"):
        service, params["gateway"] = name, True
    elif kind:
        raise CliError(f"{service!r}: tap takes a Service name or gateway/NAME")
    if path:
        params["path"] = path
    if method:
        params["method"] = method
    for event in Api(server).stream(f"/api/v1/tap/{namespace}/{service}", params):
        if "error" in event:
            raise CliError(str(event["error"]))
        if as_json:
            print(json.dumps(event), flush=True)
            continue
        print(format_event(event), flush=True)
        if headers:
            for key, value in event.get("request_headers", {}).items():
                print(f"    {key}: {value}")
        for which in ("request_body", "response_body"):
            if event.get(which) is not None:
                print(f"    {which.replace('_', ' ')}: {event[which]}")
