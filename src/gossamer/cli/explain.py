"""`gossamer explain`: why did a recent request fail, in plain words."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from gossamer.cli.app import Server, app
from gossamer.cli.client import Api, CliError
from gossamer.cli.metrics import render

HOP_GRACE = 1.0  # seconds: twice the sidecars' flush interval
_LABELS = (("failed_at", "Failed at"), ("cause", "Why"), ("policy", "Policy"),
           ("route", "Route"), ("cluster", "Cluster"))


def format_explanation(exp: dict[str, Any]) -> str:
    lines = [f"Request {exp['request_id'] or '(no x-request-id)'}", f"  {exp['summary']}", ""]
    for key, label in _LABELS:
        if exp.get(key):
            lines.append(f"{label + ':':<11}{exp[key]}")
    for flag in exp["flags"]:
        lines.append(f"{'Flag:':<11}{flag}")
    for hint in exp["hints"]:
        lines.append(f"{'Hint:':<11}{hint}")
    rows = [[h["direction"], h["reporter"]["workload"], str(h["status"] or "-"),
             ",".join(h["flags"]) or "-", h["details"] or "-", f"{h['duration_ms']:.0f}ms",
             h["upstream_host"] or "-"] for h in exp["hops"]]
    lines += ["", "Hops (as each sidecar logged them):",
              render(["DIRECTION", "PROXY", "STATUS", "FLAGS", "DETAILS", "TIME", "UPSTREAM"],
                     rows)]
    return "\n".join(lines)


def _failures(api: Api, params: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    items = api.call("GET", "/api/v1/failures?" + urlencode({**params, "limit": limit}))
    return items["items"]  # type: ignore[no-any-return]


@app.command()
def explain(
    service: Annotated[str | None, typer.Argument(
        help="a Service at either end of the request (default: any)")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    request_id: Annotated[str | None, typer.Option("--id", help="this x-request-id")] = None,
    status: Annotated[int | None, typer.Option("--status", help="only this status")] = None,
    path: Annotated[str | None, typer.Option("--path", help="only this path prefix")] = None,
    list_them: Annotated[bool, typer.Option("--list", help="list recent failed requests "
                                            "instead")] = False,
    wait: Annotated[float, typer.Option("--wait", help="seconds to wait for a failure to be "
                                        "reported")] = 3.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    server: Server = None,
) -> None:
    """Why did the most recent failed request (to or from SERVICE) fail: the route it
    matched, the cluster, and the policy or Envoy response flag that failed it."""
    api = Api(server)
    params = {k: v for k, v in (("service", service), ("namespace", namespace),
                                ("request_id", request_id), ("status", status),
                                ("path", path)) if v is not None}
    deadline = time.monotonic() + max(wait, 0.0)
    found = _failures(api, params, 20)
    while not found and time.monotonic() < deadline:  # sidecars flush every 0.5 s
        time.sleep(0.25)
        found = _failures(api, params, 20)
    if not found:
        raise CliError("no failed request matches: the sidecars report failures (status >= "
                       "400 or a response flag) and the control plane keeps the last few "
                       "thousand")
    if list_them:
        if as_json:
            print(json.dumps({"items": found}, indent=2))
            return
        print(render(["TIME", "REQUEST_ID", "PROXY", "METHOD", "PATH", "STATUS", "FLAGS"],
                     [[time.strftime("%H:%M:%S", time.localtime(f["start_time"])),
                       f["request_id"] or "-", f["reporter"]["workload"], f["method"],
                       f["path"], str(f["status"] or "-"), ",".join(f["flags"]) or "-"]
                      for f in found]))
        return
    newest = next((f for f in found if not 0 < f["status"] < 400), found[0])
    # The other end of the hop flushes on its own timer: give it a moment to arrive.
    time.sleep(min(HOP_GRACE, max(0.0, newest["received_at"] + HOP_GRACE - time.time())))
    exp = api.call("GET", "/api/v1/explain?" + urlencode(
        {"request_id": newest["request_id"]} if newest["request_id"] else params))
    print(json.dumps(exp, indent=2) if as_json else format_explanation(exp))
