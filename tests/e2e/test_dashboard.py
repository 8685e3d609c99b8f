"""The dashboard in headless Chromium (Debian's, driven by Selenium through Debian's
chromedriver) against the running demo under a known load: every number checked on
screen is the API's, and the API's is the load's."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import resources as pkg
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest

from gossamer.testing.envoy import free_port
from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
OK, FAILED = 24, 6  # frontend's sidecar -> catalog: answered 200, and ?status=500
TOTAL = OK + FAILED
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")
POLICY = """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: catalog-timeouts, namespace: default}
spec:
  targetRef: {kind: Service, name: catalog}
  timeouts: {request: 10s}
"""
NAMESPACE = """
---
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {team: demo}}
"""
# A pure client, as `gossamer demo`'s load generator: a sidecar the golden metrics
# see, under a service name no Service resource has.
IDLE_CLIENT = """
---
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {name: idle}
spec:
  service: idle
  inbound: false
  command: ["{python}", "-c", "import time; time.sleep(3600)"]
"""
T = TypeVar("T")


@pytest.fixture(scope="module")
def ingress_port() -> int:
    """Picked when the module starts: a port picked at collection can be taken by then."""
    return free_port()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, ingress_port: int) -> Iterator[Mesh]:
    """The demo with its ingress gateway (test_the_gateway_* sends through it last: the
    other tests' numbers leave it out)."""
    files = pkg.files("gossamer.demo")
    demo = files.joinpath("demo.yaml").read_text()
    ingress = files.joinpath("ingress.yaml").read_text().replace(
        "port: 18080", f"port: {ingress_port}")
    yield from running_mesh(tmp_path_factory, "dashboard",
                            text=demo + IDLE_CLIENT + "\n---\n" + ingress)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium; skipped (a failure under GOSSAMER_REQUIRE_ALL=1) without it."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            pytest.skip(f"{binary} is missing: install Debian's chromium and chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (test extras)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(browser: Any, mesh: Mesh) -> Any:
    """The browser, signed in with the link `gossamer dashboard` prints."""
    env = dict(os.environ, GOSSAMER_SERVER=mesh.run.server, GOSSAMER_TOKEN=token(mesh))
    out = subprocess.run([sys.executable, "-m", "gossamer", "dashboard"], capture_output=True,
                         text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert url == f"{mesh.run.server}/dashboard/#token={quote(token(mesh), safe='')}"
    browser.get(url)
    return browser


def token(mesh: Mesh) -> str:
    return mesh.run.admin_token_file.read_text().strip()


def sign_in(driver: Any, mesh: Mesh, value: str) -> None:
    driver.get(f"{mesh.run.server}/dashboard/#token={quote(value, safe='')}")


def go(driver: Any, mesh: Mesh, fragment: str) -> None:
    driver.get(f"{mesh.run.server}/dashboard/#/{fragment}")


def until(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Polls `probe` until it returns something truthy; fails with the last value seen."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


ROWS_JS = """
return [...document.querySelectorAll(arguments[0])].map((row) => [
  row.getAttribute(arguments[1]),
  Object.fromEntries([...row.querySelectorAll('[data-metric]')].map(
    (c) => [c.dataset.metric, c.textContent]))]);
"""


def metric_rows(driver: Any, selector: str, attribute: str) -> dict[str, dict[str, str]]:
    """Rows of golden metrics as shown, read in one script (the page re-renders often)."""
    return dict(driver.execute_script(ROWS_JS, selector, attribute))


def attrs(driver: Any, selector: str, *names: str) -> list[dict[str, str | None]]:
    script = ("return [...document.querySelectorAll(arguments[0])].map((el) => "
              "Object.fromEntries(arguments[1].map((n) => [n, n === 'text' ? el.textContent "
              ": el.getAttribute(n)])));")
    return list(driver.execute_script(script, selector, list(names)))


def pct(rate: float) -> str:
    return f"{rate * 100:.2f}%"


def api_service(mesh: Mesh, name: str) -> dict[str, Any] | None:
    items = mesh.api.get(f"/api/v1/stats?kind=service&name={name}").json()["items"]
    return items[0] if items else None


def test_the_page_loads_with_the_token(page: Any, mesh: Mesh) -> None:
    until("the services table", lambda: page.find_elements("css selector", "#services"))
    assert page.execute_script("return sessionStorage.getItem('gossamer.token')") == token(mesh)
    assert "token" not in page.current_url  # moved out of the address bar
    assert page.execute_script("return location.hash") == "#/services"
    services = mesh.api.get("/api/v1/resources/Service").json()
    # Every Service resource, and the pure client the golden metrics see (no resource).
    want_rows = {f"{s['metadata']['name']}.{s['metadata']['namespace']}" for s in services}
    want_rows.add("idle.default")
    assert mesh.instance("idle").inbound_port == 0  # up lists pure clients too
    until("the services table to list the pure client too", lambda: set(metric_rows(
        page, "#services tr[data-service]", "data-service")) == want_rows)

    def summary() -> dict[str, str] | None:
        text = {a["data-summary"]: a["text"] for a in attrs(
            page, "[data-summary]", "data-summary", "text")}
        revision = mesh.api.get("/healthz").json()["revision"]
        # The count is the table's: a service in one and not the other confuses.
        want = {"services": f"{len(want_rows)} services",
                "proxies": f"{len(mesh.run.instances)}/{len(mesh.run.instances)} "
                           "proxies connected",
                "revision": f"revision {revision}"}
        return text if text == want else None

    until("the summary line to match the API", summary)


def _wait_for_baseline(mesh: Mesh, timeout: float = 40.0) -> None:
    """Every sidecar scraped before the load, so the window holds all of it."""
    until("every sidecar scraped", lambda: len(mesh.api.get(
        "/api/v1/stats?kind=workload").json()["items"]) == len(mesh.run.instances), timeout)


def test_numbers_and_graph_match_the_api_and_the_known_load(page: Any, mesh: Mesh) -> None:
    _wait_for_baseline(mesh)
    with mesh.client_via("frontend") as client:
        for query, count, status in (("", OK, 200), ("?status=500", FAILED, 500)):
            for _ in range(count):
                assert client.get(f"http://catalog/items{query}").status_code == status
    api = until("the API to count the load", lambda: (
        s if (s := api_service(mesh, "catalog")) and s["requests"] == TOTAL else None), 40)
    assert api["success_rate"] == pytest.approx(OK / TOTAL)

    go(page, mesh, "services")
    rows = until("catalog's row to show the load", lambda: (
        r if (r := metric_rows(page, "#services tr[data-service]", "data-service")).get(
            "catalog.default", {}).get("requests") == str(TOTAL) else None))
    catalog = rows["catalog.default"]
    assert catalog["requests"] == str(api["requests"]) == str(TOTAL)
    assert catalog["success"] == pct(api["success_rate"]) == pct(OK / TOTAL)
    assert catalog["rps"] != "-"
    # frontend served nothing (the load left from its sidecar), catalog-v2 got no share.
    for idle in ("frontend.default", "catalog-v2.default"):
        assert set(rows[idle].values()) == {"-"}, rows[idle]

    graph = mesh.api.get("/api/v1/graph").json()
    api_edges = {e["id"]: e for e in graph["edges"]}
    assert api_edges["frontend.default->catalog-v1.default"]["requests"] == TOTAL
    assert api_edges["catalog.default->inventory.default"]["requests"] == TOTAL
    go(page, mesh, "graph")

    def drawn() -> list[dict[str, str | None]] | None:
        edges = attrs(page, "g.edge.calls", "data-edge", "data-requests", "data-success", "text")
        return edges if {e["data-edge"] for e in edges} == set(api_edges) else None

    edges = until("the demo's edges drawn", drawn)
    by_id = {e["data-edge"]: e for e in edges}
    for edge_id in ("frontend.default->catalog-v1.default", "catalog.default->inventory.default"):
        assert by_id[edge_id]["data-requests"] == str(TOTAL)
    front = by_id["frontend.default->catalog-v1.default"]
    assert float(front["data-success"] or "nan") == pytest.approx(OK / TOTAL)
    assert pct(OK / TOTAL) in (front["text"] or "")
    nodes = {n["data-node"]: n for n in attrs(page, "g.node", "data-node", "text")}
    assert {n["id"] for n in graph["nodes"]} <= set(nodes)
    assert pct(OK / TOTAL) in (nodes["catalog.default"]["text"] or "")


def test_service_page_lists_workloads_routes_and_policies(page: Any, mesh: Mesh) -> None:
    mesh.apply(POLICY + NAMESPACE)
    try:
        mesh.wait_synced()
        go(page, mesh, "service/default/catalog")
        workloads = [w for w in mesh.api.get("/api/v1/resources/Workload").json()
                     if w["spec"]["service"] == "catalog"]
        assert len(workloads) == 3
        rows = until("catalog's workloads", lambda: (
            r if len(r := attrs(page, "#workloads tr[data-workload]", "data-workload",
                                "text")) == len(workloads) else None))
        shown = {r["data-workload"]: r["text"] or "" for r in rows}
        for w in workloads:
            text = shown[w["metadata"]["name"]]
            assert f"{w['spec']['address']}:{w['spec']['port']}" in text
            assert "Healthy" in text
        [route] = attrs(page, "tr[data-route='HTTPRoute/default/catalog']", "text")
        assert "catalog-v1:80 (weight 100)" in (route["text"] or "")
        [policy] = until("the policy row", lambda: attrs(
            page, "tr[data-policy='ResiliencePolicy/default/catalog-timeouts']", "text"))
        assert "this service" in (policy["text"] or "")
        # Labels of a namespace (stored in gossamer-system) are no mesh-wide policy.
        assert not page.find_elements("css selector", "tr[data-policy^='Namespace/']")
        opened = page.execute_script(  # one script: the page re-renders every few seconds
            "const row = document.querySelector(arguments[0]);"
            "row.querySelector('summary').click();"
            "const d = row.querySelector('details');"
            "return [d.open, d.querySelector('pre').innerText];",
            "tr[data-policy='ResiliencePolicy/default/catalog-timeouts']")
        assert opened[0] is True
        assert '"request": "10s"' in opened[1]

        def cards_match() -> bool:
            api = api_service(mesh, "catalog")
            shown = {a["data-metric"]: a["text"] for a in attrs(
                page, "#golden [data-metric]", "data-metric", "text")}
            want = "-" if not api or not api["requests"] else str(api["requests"])
            return shown.get("requests") == want
        until("the service page's request count to equal the API's", cards_match)
    finally:
        mesh.delete("ResiliencePolicy", "default", "catalog-timeouts")


def test_proxies_view_lists_every_demo_proxy(page: Any, mesh: Mesh) -> None:
    mesh.wait_synced()
    go(page, mesh, "proxies")

    def matches() -> list[dict[str, Any]] | None:
        proxies = [p for p in mesh.api.get("/api/v1/proxies").json() if p["connected"]]
        rows = {r["data-proxy"]: r for r in attrs(page, "#proxies tr[data-proxy]", "data-proxy",
                                                 "data-connected", "data-host")}
        acked = {(a["proxy"], a["type"]): a["acked"] for a in page.execute_script(
            "return [...document.querySelectorAll('#proxies tr[data-proxy] [data-type]')].map("
            "(el) => ({proxy: el.closest('tr').dataset.proxy, type: el.dataset.type, "
            "acked: el.querySelector('[data-field=acked]').textContent}));")}
        if {p["node_id"] for p in proxies} != set(rows) or len(rows) != len(mesh.run.instances):
            return None
        for p in proxies:
            if rows[p["node_id"]]["data-connected"] != "true":
                return None
            # The host each sidecar runs on (all on loopback in local mode).
            assert rows[p["node_id"]]["data-host"] == p["metadata"]["inbound_address"]
            for name, t in p["types"].items():
                if t["subscribed"] and acked.get((p["node_id"], name)) != t["acked_version"]:
                    return None
        return proxies

    proxies = until("every demo proxy shown connected at the API's versions", matches)
    assert all(p["types"]["listeners"]["acked_version"] for p in proxies)


def test_tap_view_shows_a_live_request(page: Any, mesh: Mesh) -> None:
    go(page, mesh, "tap/default/inventory")
    until("the tap form", lambda: page.find_elements("css selector", "#tap-start"))
    assert page.find_element("css selector", "#tap-service").get_attribute("value") == \
        "default/inventory"
    page.find_element("css selector", "#tap-path").send_keys("/stock")
    page.find_element("css selector", "#tap-start").click()
    until("the tap to start", lambda: page.find_element(
        "css selector", "#tap-status").get_attribute("data-state") == "running")
    mark = secrets.token_hex(4)
    path = f"/stock?dash={mark}&status=404"
    deadline, seen = time.monotonic() + 30, None
    with mesh.client_via("catalog") as client:  # not through catalog: its numbers stay put
        for _ in range(150):  # the tap attaches to Envoy shortly after Start
            assert client.get(f"http://inventory{path}").status_code == 404
            assert client.get("http://inventory/other").status_code == 200
            seen = attrs(page, f"#tap tr[data-path='{path}']", "data-status", "data-method",
                         "text")
            if seen or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert seen, "the tapped request never appeared"
    assert seen[0]["data-status"] == "404"
    assert seen[0]["data-method"] == "GET"
    text = seen[0]["text"] or ""
    assert "/sa/catalog" in text  # the verified caller: catalog's sidecar
    assert "inventory-0" in text
    paths = [r["data-path"] or "" for r in attrs(page, "#tap tr.tap-row", "data-path")]
    assert all(p.startswith("/stock") for p in paths), paths  # the path filter holds
    page.find_element("css selector", "#tap-stop").click()
    until("the tap to stop", lambda: page.find_element(
        "css selector", "#tap-status").get_attribute("data-state") == "stopped")


def test_failures_view_explains_a_failed_request(page: Any, mesh: Mesh) -> None:
    from selenium.common.exceptions import StaleElementReferenceException

    mark = secrets.token_hex(4)
    path = f"/stock?dashfail={mark}&status=503"
    with mesh.client_via("catalog") as client:  # not through catalog: its numbers stay put
        assert client.get(f"http://inventory{path}").status_code == 503
    row = f"#failures tr[data-path='{path}']"

    go(page, mesh, "failures")

    def listed() -> Any:
        found = page.find_elements("css selector", row)
        if not found:  # the view does not poll: ask it again, as a user would
            with contextlib.suppress(StaleElementReferenceException):  # mid re-render
                until("the failures page", lambda: page.find_elements(
                    "css selector", "#failures-reload"))[0].click()
        return found or None

    until("the failed request listed", listed, timeout=30)
    api = mesh.api.get("/api/v1/failures", params={"path": path}).json()["items"]
    assert api[0]["status"] == 503
    until("both ends of the hop reported", lambda: len(mesh.api.get(
        "/api/v1/explain", params={"request_id": api[0]["request_id"]}).json()["hops"]) == 2)
    page.find_element("css selector", f"{row} button").click()
    box = until("the explanation", lambda: page.find_elements(
        "css selector", f"{row} .explanation"))[0]
    exp = mesh.api.get("/api/v1/explain", params={"request_id": api[0]["request_id"]}).json()
    fields = {e.get_attribute("data-field"): e.text
              for e in box.find_elements("css selector", "[data-field]")}
    assert fields["failed_at"] == f"Failed at: {exp['failed_at']}"
    assert exp["failed_at"].startswith("the app (inventory-")
    assert "answered 503 itself" in fields["cause"]


def test_a_read_token_reads_but_cannot_tap(browser: Any, mesh: Mesh) -> None:
    resp = mesh.api.post("/api/v1/tokens", json={"scope": "read", "description": "dashboard"})
    assert resp.status_code == 200, resp.text
    sign_in(browser, mesh, resp.json()["token"])
    until("the services table", lambda: browser.find_elements("css selector", "#services"))
    go(browser, mesh, "tap/default/catalog")
    until("the tap form", lambda: browser.find_elements("css selector", "#tap-start"))[0].click()
    error = until("the 403 message", lambda: (
        e if (e := browser.find_element("id", "error")).is_displayed() else None))
    assert error.text == "403 Forbidden: a read token cannot do this; it needs an admin token"
    assert browser.find_element("id", "tap-status").get_attribute("data-state") == "stopped"


def test_a_bad_token_shows_the_401_and_a_form(browser: Any, mesh: Mesh) -> None:
    sign_in(browser, mesh, "gst_not_a_real_token")
    error = until("the 401 message", lambda: (
        e if (e := browser.find_element("id", "error")).is_displayed() else None))
    assert error.text.startswith("401 Unauthorized: the token is not known to this control "
                                 "plane"), error.text
    field = until("the token form", lambda: browser.find_elements("id", "token-input"))[0]
    field.send_keys(token(mesh))
    browser.find_element("css selector", "#token-form button").click()
    until("the services table", lambda: browser.find_elements("css selector", "#services"))
    assert not browser.find_element("id", "error").is_displayed()


def test_the_gateway_is_its_own_node_and_links_to_its_page(page: Any, mesh: Mesh,
                                                          ingress_port: int) -> None:
    """The ingress gateway in the service graph: drawn as a gateway, linked to a page
    with its listeners, attached routes and replicas as the API has them."""
    sign_in(page, mesh, token(mesh))
    with httpx.Client(trust_env=False, timeout=10) as outside:
        for _ in range(5):
            assert outside.get(f"http://127.0.0.1:{ingress_port}/").status_code == 200
    node_id = "demo-ingress.default"
    until("the gateway node in the API's graph", lambda: any(
        n["id"] == node_id and n["kind"] == "gateway"
        for n in mesh.api.get("/api/v1/graph").json()["nodes"]), 40)
    go(page, mesh, "graph")
    gw = until("the gateway node drawn", lambda: page.find_elements(
        "css selector", f"g.node[data-node='{node_id}']"))[0]
    assert gw.get_attribute("data-kind") == "gateway"
    assert "gateway" in (gw.get_attribute("class") or "").split()
    # A Service's node is drawn as before.
    frontend = page.find_element("css selector", "g.node[data-node='frontend.default']")
    assert frontend.get_attribute("data-kind") == "service"
    link = gw.find_element("css selector", "a")
    assert link.get_dom_attribute("href") == "#/gateway/default/demo-ingress"
    page.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))",
                        link)
    until("the gateway page", lambda: page.find_elements("css selector", "#listeners"))
    status = mesh.api.get("/api/v1/resources/Gateway/default/demo-ingress").json()["status"]
    rows = {r["data-listener"]: r for r in attrs(page, "#listeners tr[data-listener]",
                                                 "data-listener", "text")}
    assert set(rows) == {"http"}
    attached = page.find_element("css selector", "#listeners tr[data-listener=http] "
                                                 "[data-field=attached]").text
    assert attached == str(status["listeners"][0]["attachedRoutes"]) == "1"
    routes = [r["data-route"] for r in attrs(page, "#gateway-routes tr[data-route]",
                                             "data-route")]
    assert routes == ["HTTPRoute/default/demo-ingress"]
    accepted = page.find_element("css selector", "#gateway-routes [data-condition=Accepted]")
    assert accepted.get_attribute("data-status") == "True"
    replicas = until("the replica listed connected", lambda: [
        r for r in attrs(page, "#replicas tr[data-replica]", "data-replica", "data-connected")
        if r["data-connected"] == "true"])
    assert [r["data-replica"] for r in replicas] == ["demo-ingress-0.default"]
