"""`gossamer dashboard`: the URL of the control plane's web UI, signed in with your token.

The token travels in the URL's fragment (`#token=...`), which browsers never send to
a server nor put in a Referer; the page moves it into the tab's sessionStorage and
clears it from the address bar at once.
"""

from __future__ import annotations

import os
import sys
import webbrowser
from typing import Annotated
from urllib.parse import quote

import typer

from gossamer.cli.app import Server, app
from gossamer.cli.client import Api, CliError, server_url


def dashboard_url(server: str, token: str | None) -> str:
    base = f"{server.rstrip('/')}/dashboard/"
    return f"{base}#token={quote(token, safe='')}" if token else base


@app.command()
def dashboard(
    open_browser: Annotated[bool, typer.Option("--open", help="open it in a web browser")] = False,
    server: Server = None,
) -> None:
    """Print the dashboard's URL, carrying the token from GOSSAMER_TOKEN (--open opens it)."""
    token = (os.environ.get("GOSSAMER_TOKEN") or "").strip() or None
    if token:
        Api(server).call("GET", "/api/v1/mesh")  # a bad token or server fails here, not later
    else:
        print("note: GOSSAMER_TOKEN is not set; the page will ask for a token", file=sys.stderr)
    url = dashboard_url(server_url(server), token)
    print(url)
    if open_browser and not webbrowser.open(url):
        raise CliError("found no web browser to open; open the URL above yourself")
