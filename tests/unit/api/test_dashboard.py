"""The dashboard's assets on the control plane's app: served open (the data needs a
token, the page does not), with explicit content types; `/` leads to it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from gossamer.api.app import create_app
from gossamer.api.auth import Authenticator
from gossamer.api.context import ApiContext
from gossamer.ca.tokens import Tokens
from gossamer.controlplane.leases import Leases
from gossamer.controlplane.reconcile import Reconciler
from gossamer.dashboard import CONTENT_TYPES, load_assets
from gossamer.store import open_store


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The real app, with authentication on."""
    store = open_store("memory://")
    ctx = ApiContext(store, Reconciler(store, lambda node, snap: None), Leases(store),
                     lambda: [], auth=Authenticator(Tokens(store)))
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as http:
        yield http


async def test_root_and_bare_path_redirect_to_the_dashboard(client: httpx.AsyncClient) -> None:
    for path in ("/", "/dashboard"):
        resp = await client.get(path)
        assert resp.status_code == 307
        assert resp.headers["location"] == "/dashboard/"


@pytest.mark.parametrize(("path", "media"), [
    ("/dashboard/", "text/html"), ("/dashboard/index.html", "text/html"),
    ("/dashboard/app.js", "text/javascript"), ("/dashboard/style.css", "text/css")])
async def test_assets_are_served_without_a_token(client: httpx.AsyncClient, path: str,
                                                 media: str) -> None:
    resp = await client.get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == f"{media}; charset=utf-8"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert resp.content == load_assets()[path.removeprefix("/dashboard/") or "index.html"]


async def test_data_still_needs_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/kinds")).status_code == 401


async def test_unknown_assets_and_traversal_are_404(client: httpx.AsyncClient) -> None:
    for path in ("/dashboard/nope.js", "/dashboard/..%2fapp.py", "/dashboard/__init__.py"):
        assert (await client.get(path)).status_code == 404, path


def test_the_page_loads_only_packaged_same_origin_assets() -> None:
    """No CDN: every script and stylesheet the page names is one we ship."""
    html = load_assets()["index.html"].decode()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    local = [r for r in refs if not r.startswith(("#", "data:"))]
    assert sorted(local) == sorted(n for n in CONTENT_TYPES if n != "index.html")
    urls = set(re.findall(r"https?://[^\s\"']+", load_assets()["app.js"].decode()))
    assert urls == {"http://www.w3.org/2000/svg"}  # a namespace name, never fetched


def test_the_cli_puts_the_token_in_the_fragment() -> None:
    from gossamer.cli.dashboard import dashboard_url

    assert dashboard_url("http://127.0.0.1:15080/", "gst_a/b+c") == \
        "http://127.0.0.1:15080/dashboard/#token=gst_a%2Fb%2Bc"
    assert dashboard_url("http://cp:15080", None) == "http://cp:15080/dashboard/"
