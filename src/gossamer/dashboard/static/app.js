// Gossamer dashboard: a hand-written single-page UI over the control plane's HTTP API.
// No framework and no build step: the wheel carries this file as it is. Every number
// comes from the API as it answered; nothing is computed here but layout and formatting.
"use strict";
(() => {
  const TOKEN_KEY = "gossamer.token";
  const REFRESH_MS = 5000;
  const TAP_ROWS = 200;
  const ROUTE_KINDS = ["HTTPRoute", "GRPCRoute", "TCPRoute"];
  // SMI resources are not policies of a Service (they map onto routes and policies).
  const SMI_KINDS = ["TrafficSplit", "TrafficTarget", "HTTPRouteGroup", "TCPRoute.specs.smi-spec.io"];
  const MESH_ROOT = "gossamer-system";
  // Kinds that are neither routes nor policies of a Service (a Namespace is stored in
  // MESH_ROOT, where it would read as a mesh-wide policy).
  const NOT_POLICIES = ["Gateway", "TLSRoute", "Secret", "ReferenceGrant", "Namespace"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLOURS = { good: "#2e8b57", warn: "#c98a00", bad: "#c73a3a", none: "#9aa3ad" };

  const view = document.getElementById("view");
  const errorBox = document.getElementById("error");
  const summaryBox = document.getElementById("summary");
  const signout = document.getElementById("signout");
  let generation = 0; // bumps on every navigation; stale refreshes drop their result
  let timer = null;
  let tap = null; // {controller} while a tap streams

  // ---- token -------------------------------------------------------------------------

  /** Moves `#token=...` into sessionStorage and clears it from the address bar (and history). */
  function takeFragmentToken() {
    const m = /^#token=([^&]*)/.exec(location.hash);
    if (!m) return;
    const value = decodeURIComponent(m[1]).trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    history.replaceState(null, "", location.pathname + location.search + "#/services");
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  // ---- API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function check(resp) {
    if (resp.ok) return resp;
    let message = "";
    try {
      const body = await resp.json();
      message = body.error || body.detail || "";
    } catch (_) {
      message = "";
    }
    throw new ApiError(resp.status, message || resp.statusText || "request failed");
  }

  async function request(path, signal) {
    let resp;
    try {
      resp = await fetch(path, {
        headers: { Authorization: "Bearer " + token(), Accept: "application/json" },
        cache: "no-store", signal,
      });
    } catch (exc) {
      if (exc.name === "AbortError") throw exc;
      throw new ApiError(0, "cannot reach the control plane (" + exc.message + ")");
    }
    return check(resp);
  }

  const api = async (path) => (await request(path)).json();

  /** Golden metrics, or null when this control plane does not scrape (503). */
  async function stats(path) {
    try {
      return await api(path);
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 503) return null;
      throw exc;
    }
  }

  function showError(exc) {
    if (exc instanceof ApiError) {
      const what = { 0: "Network error", 401: "401 Unauthorized", 403: "403 Forbidden",
                     404: "404 Not found" }[exc.status] || "HTTP " + exc.status;
      errorBox.textContent = what + ": " + exc.message;
    } else {
      errorBox.textContent = "Error: " + (exc && exc.message ? exc.message : String(exc));
    }
    errorBox.hidden = false;
    if (exc instanceof ApiError && exc.status === 401) {
      errorBox.textContent += " Paste a valid token below.";
      tokenForm();
    }
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }

  // ---- DOM helpers -------------------------------------------------------------------

  function build(doc, ns, tag, attrs, children) {
    const el = ns ? doc.createElementNS(ns, tag) : doc.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const h = (tag, attrs, ...children) => build(document, null, tag, attrs, children);
  const s = (tag, attrs, ...children) => build(document, SVG_NS, tag, attrs, children);

  function table(headers, rows, attrs) {
    return h("table", attrs || {},
      h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls }, label)))),
      h("tbody", {}, rows));
  }

  const empty = (text) => h("p", { class: "empty" }, text);

  function expander(key, label, value) {
    return h("details", { "data-key": key }, h("summary", {}, label),
      h("pre", {}, JSON.stringify(value, null, 2)));
  }

  // ---- formatting --------------------------------------------------------------------

  const served = (m) => !!m && m.requests > 0;
  const pct = (rate) => (rate === null || rate === undefined ? "-" : (rate * 100).toFixed(2) + "%");
  const ms = (v) => (v === null || v === undefined ? "-" : v.toFixed(v < 10 ? 2 : 1));
  const health = (rate) =>
    rate === null || rate === undefined ? "none" : rate >= 0.99 ? "good" : rate >= 0.95 ? "warn" : "bad";
  const key = (name, ns) => name + "." + ns;
  const short = (v) => (v ? String(v).slice(0, 16) : "-");

  function when(epoch) {
    if (!epoch) return "-";
    const d = new Date(epoch * 1000);
    const ago = Math.max(0, Math.round(Date.now() / 1000 - epoch));
    const age = ago < 120 ? ago + "s" : ago < 7200 ? Math.round(ago / 60) + "m" : Math.round(ago / 3600) + "h";
    return d.toLocaleTimeString() + " (" + age + " ago)";
  }

  /** The golden-metric cells of one row: "-" everywhere when nothing was served. */
  function metricCells(m) {
    const on = served(m);
    const cell = (name, text, cls) => h("td", { class: "num " + (cls || ""), "data-metric": name }, text);
    return [
      cell("success", on ? pct(m.success_rate) : "-", on ? health(m.success_rate) : ""),
      cell("rps", on ? m.rps.toFixed(2) : "-"),
      cell("p50", on ? ms(m.latency_ms.p50) : "-"),
      cell("p95", on ? ms(m.latency_ms.p95) : "-"),
      cell("p99", on ? ms(m.latency_ms.p99) : "-"),
      cell("requests", on ? String(m.requests) : "-"),
    ];
  }
  const METRIC_HEADERS = [["Success", "num"], ["RPS", "num"], ["p50 ms", "num"],
                          ["p95 ms", "num"], ["p99 ms", "num"], ["Requests", "num"]];

  const windowNote = (st) =>
    st ? "Golden metrics over the last " + st.window_seconds + " s, refreshed every " +
         REFRESH_MS / 1000 + " s."
       : "This control plane does not scrape proxy stats: no golden metrics.";

  const serviceLink = (name, ns) => h("a", { href: "#/service/" + encodeURIComponent(ns) + "/" +
                                                  encodeURIComponent(name) }, name);

  // ---- summary line ------------------------------------------------------------------

  /** The services the dashboard lists, as [key, namespace, name] by namespace/name: every
   *  Service resource, and every service the golden metrics saw without one (a pure
   *  client's sidecar, such as a load generator's). The summary line counts exactly
   *  what the Services table lists. An ingress gateway's replicas are scraped like
   *  sidecars, but it serves no Service: it is a node of the graph with a page of its own. */
  function serviceList(services, st, proxies) {
    const names = new Map(services.map((d) => [key(d.metadata.name, d.metadata.namespace),
                                                [d.metadata.namespace, d.metadata.name]]));
    const gateways = new Set(proxies.map((p) => p.metadata || {})
      .filter((m) => m.gateway && !m.inbound_port).map((m) => key(m.gateway, m.namespace || "default")));
    for (const m of st ? st.items : []) {
      const k = key(m.name, m.namespace);
      if (!names.has(k) && !gateways.has(k)) names.set(k, [m.namespace, m.name]);
    }
    return [...names.entries()].map(([k, [ns, name]]) => [k, ns, name])
      .sort((a, b) => (a[1] + "/" + a[2]).localeCompare(b[1] + "/" + b[2]));
  }

  async function refreshSummary() {
    const [healthz, services, st, proxies] = await Promise.all([
      (await fetch("/healthz", { cache: "no-store" })).json(),
      api("/api/v1/resources/Service"), stats("/api/v1/stats?kind=service"),
      api("/api/v1/proxies")]);
    const live = proxies.filter((p) => p.connected).length;
    summaryBox.replaceChildren(
      h("span", { "data-summary": "services" }, serviceList(services, st, proxies).length + " services"), " · ",
      h("span", { "data-summary": "proxies" }, live + "/" + proxies.length + " proxies connected"),
      " · ", h("span", { "data-summary": "revision" }, "revision " + healthz.revision));
  }

  // ---- Services ----------------------------------------------------------------------

  async function servicesView() {
    const [services, st, proxies] = await Promise.all([
      api("/api/v1/resources/Service"), stats("/api/v1/stats?kind=service"), api("/api/v1/proxies")]);
    const byKey = new Map((st ? st.items : []).map((m) => [key(m.name, m.namespace), m]));
    const rows = serviceList(services, st, proxies)
      .map(([k, ns, name]) => h("tr", { "data-service": k },
        h("td", {}, ns), h("td", {}, serviceLink(name, ns)),
        metricCells(byKey.get(k))));
    return [h("h1", {}, "Services"),
      h("p", { class: "sub" }, windowNote(st), " Inbound traffic, as each service's own sidecars served it."),
      rows.length ? table([["Namespace"], ["Service"], ...METRIC_HEADERS], rows, { id: "services" })
                  : empty("No services yet: apply some with `gossamer apply -f`.")];
  }

  // ---- Graph -------------------------------------------------------------------------

  /** Workloads a Service selects (the control plane's own rule: labels, else spec.service). */
  function selects(svc, w) {
    if (w.metadata.namespace !== svc.metadata.namespace) return false;
    const sel = (svc.spec && svc.spec.selector) || {};
    const labels = w.metadata.labels || {};
    const pairs = Object.entries(sel);
    if (!pairs.length) return w.spec.service === svc.metadata.name;
    return pairs.every(([k, v]) => labels[k] === v);
  }

  /** Layer = longest path from a root (callers left of callees); back edges of cycles ignored. */
  function layers(ids, links) {
    const out = new Map(ids.map((id) => [id, []]));
    for (const l of links) out.get(l.from).push(l.to);
    const layer = new Map();
    const onPath = new Set();
    const depthOf = (id) => {
      if (layer.has(id)) return layer.get(id);
      onPath.add(id);
      let d = 0;
      for (const [from, tos] of out) {
        if (tos.includes(id) && from !== id && !onPath.has(from)) d = Math.max(d, depthOf(from) + 1);
      }
      onPath.delete(id);
      layer.set(id, d);
      return d;
    };
    ids.forEach(depthOf);
    // A root sits just left of its nearest callee, not in the first column.
    for (const id of ids) {
      const tos = out.get(id).filter((t) => t !== id);
      const hasPred = links.some((l) => l.to === id && l.from !== id);
      if (!hasPred && tos.length) layer.set(id, Math.max(0, Math.min(...tos.map((t) => layer.get(t))) - 1));
    }
    return layer;
  }

  /** Orders each layer by the mean position of its neighbours (a few barycenter sweeps). */
  function order(ids, layer, links) {
    const cols = [];
    for (const id of [...ids].sort()) {
      const l = layer.get(id);
      (cols[l] = cols[l] || []).push(id);
    }
    const pos = new Map();
    const index = () => cols.forEach((c) => (c || []).forEach((id, i) => pos.set(id, i)));
    index();
    const mean = (id, neighbours) => {
      const ps = neighbours(id).map((n) => pos.get(n));
      return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : pos.get(id);
    };
    const preds = (id) => links.filter((l) => l.to === id).map((l) => l.from);
    const succs = (id) => links.filter((l) => l.from === id).map((l) => l.to);
    for (let sweep = 0; sweep < 4; sweep++) {
      const down = sweep % 2 === 0;
      const seq = down ? cols.keys() : [...cols.keys()].reverse();
      for (const c of seq) {
        if (!cols[c]) continue;
        const m = new Map(cols[c].map((id) => [id, mean(id, down ? preds : succs)]));
        cols[c].sort((a, b) => m.get(a) - m.get(b) || a.localeCompare(b));
        index();
      }
    }
    return cols.map((c) => c || []);
  }

  function edgeRate(edges) {
    let done = 0;
    let failed = 0;
    for (const e of edges) {
      const r = e.responses || {};
      done += Object.values(r).reduce((a, b) => a + b, 0);
      failed += r["5xx"] || 0;
    }
    return done ? (done - failed) / done : null;
  }

  async function graphView() {
    const [graph, services, workloads] = await Promise.all([
      stats("/api/v1/graph"), api("/api/v1/resources/Service"), api("/api/v1/resources/Workload")]);
    const nodes = new Map();
    const addNode = (name, ns, m) => {
      const id = key(name, ns);
      if (!nodes.has(id) || m) nodes.set(id, { id, name, namespace: ns, m: m || (nodes.get(id) || {}).m });
    };
    for (const d of services) addNode(d.metadata.name, d.metadata.namespace, null);
    for (const n of graph ? graph.nodes : []) addNode(n.name, n.namespace, n);
    const calls = (graph ? graph.edges : []).map((e) => ({ from: key(e.source.service, e.source.namespace),
                                                          to: e.destination, e, kind: "calls" }));
    for (const c of calls) {
      if (!nodes.has(c.to)) addNode(...c.to.split(/\.(.*)/s).slice(0, 2), null);
    }
    // A Service that selects another service's workloads (catalog-v1 -> catalog) is drawn
    // as a dashed link, so a route's backend connects to the workloads that serve it.
    const selected = [];
    for (const svc of services) {
      const from = key(svc.metadata.name, svc.metadata.namespace);
      const targets = new Set(workloads.filter((w) => selects(svc, w) && w.spec.service !== svc.metadata.name)
        .map((w) => key(w.spec.service, w.metadata.namespace)));
      for (const to of targets) {
        if (nodes.has(to)) selected.push({ from, to, kind: "selects" });
      }
    }
    const links = [...calls, ...selected];
    const ids = [...nodes.keys()];
    const cols = order(ids, layers(ids, links), links);
    return [h("h1", {}, "Service graph"),
      h("p", { class: "sub" }, windowNote(graph),
        " Solid: calls (label: requests per second and success, as the callers saw them). " +
        "Dashed: a Service that selects another service's workloads."),
      h("div", { class: "legend" }, h("span", { class: "good" }, "● ≥ 99%"),
        h("span", { class: "warn" }, "● ≥ 95%"), h("span", { class: "bad" }, "● < 95%"),
        h("span", { class: "muted" }, "● no traffic")),
      h("div", { class: "graph" }, drawGraph(nodes, cols, calls, selected))];
  }

  function drawGraph(nodes, cols, calls, selected) {
    const W = 190, H = 50, GX = 170, GY = 36, PAD = 24;
    const tallest = Math.max(1, ...cols.map((c) => c.length));
    const height = PAD * 2 + tallest * H + (tallest - 1) * GY;
    const width = PAD * 2 + cols.length * W + Math.max(0, cols.length - 1) * GX;
    const at = new Map();
    cols.forEach((col, c) => {
      const top = (height - (col.length * H + (col.length - 1) * GY)) / 2;
      col.forEach((id, i) => at.set(id, { x: PAD + c * (W + GX), y: top + i * (H + GY), col: c }));
    });
    const inbound = (id) => calls.filter((l) => l.to === id).map((l) => l.e);
    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "graph",
                           role: "img", "aria-label": "service graph" },
      s("defs", {}, Object.entries(COLOURS).map(([name, colour]) =>
        s("marker", { id: "arrow-" + name, viewBox: "0 0 10 10", refX: 10, refY: 5,
                      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
          s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: colour })))));
    for (const l of [...selected, ...calls]) svg.append(drawEdge(l, at.get(l.from), at.get(l.to), W, H));
    for (const [id, n] of nodes) svg.append(drawNode(n, at.get(id), W, H, inbound(id)));
    return svg;
  }

  function drawEdge(l, a, b, W, H) {
    const isCall = l.kind === "calls";
    const rate = isCall ? l.e.success_rate : null;
    const tone = isCall ? health(rate) : "none";
    let d, lx, ly;
    if (b.col > a.col) {
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, dx = (x2 - x1) / 2;
      d = `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`;
      lx = (x1 + x2) / 2;
      ly = (y1 + y2) / 2 - 6;
    } else { // same layer or backwards (a cycle): loop underneath
      const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2 + (a === b ? 30 : 0), y2 = b.y + H;
      const drop = 40 + Math.abs(x1 - x2) / 6;
      d = `M ${x1} ${y1} C ${x1} ${y1 + drop}, ${x2} ${y2 + drop}, ${x2} ${y2}`;
      lx = (x1 + x2) / 2;
      ly = Math.max(y1, y2) + drop * 0.75 + 4;
    }
    const label = isCall ? `${l.e.rps.toFixed(2)} rps · ${pct(rate)}` : "selects";
    const attrs = { class: "edge " + l.kind, "data-edge": l.from + "->" + l.to };
    if (isCall) Object.assign(attrs, { "data-requests": l.e.requests, "data-success": rate === null ? "" : rate,
                                        "data-rps": l.e.rps });
    return s("g", attrs,
      s("title", {}, isCall ? `${l.from} → ${l.to}: ${l.e.requests} requests, ${pct(rate)} success, ` +
                              `p99 ${ms(l.e.latency_ms.p99)} ms` : `${l.from} selects workloads of ${l.to}`),
      s("path", { d, class: "s-" + tone, "marker-end": `url(#arrow-${tone})` }),
      s("text", { x: lx, y: ly, "text-anchor": "middle" }, label));
  }

  function drawNode(n, p, W, H, inbound) {
    let rate = null, note = "no traffic";
    if (served(n.m)) {
      rate = n.m.success_rate;
      note = `${pct(rate)} · ${n.m.rps.toFixed(2)} rps`;
    } else if (inbound.length) {
      rate = edgeRate(inbound);
      note = `${pct(rate)} (callers)`;
    }
    const tone = health(rate);
    // An ingress gateway serves no Service: it is drawn as the way in, linked to its page.
    const gateway = n.m && n.m.kind === "gateway" ? n.m.gateway || n.name : null;
    const href = gateway ? gatewayHref(n.namespace, gateway)
                         : "#/service/" + encodeURIComponent(n.namespace) + "/" + encodeURIComponent(n.name);
    const label = n.namespace === "default" ? n.name : n.id;
    return s("g", { class: gateway ? "node gateway" : "node", "data-node": n.id,
                    "data-kind": gateway ? "gateway" : "service",
                    "data-success": rate === null ? "" : rate, "data-requests": n.m ? n.m.requests : 0 },
      s("a", { href },
        s("title", {}, `${gateway ? "ingress gateway " : ""}${n.id}: ${note}`),
        s("rect", { x: p.x, y: p.y, width: W, height: H, rx: gateway ? H / 2 : 6, class: "s-" + tone }),
        s("text", { x: p.x + (gateway ? 18 : 10), y: p.y + 20 }, gateway ? "⇥ gateway " + label : label),
        s("text", { x: p.x + (gateway ? 18 : 10), y: p.y + 38, class: "metric" }, note)));
  }

  const gatewayHref = (ns, name) => "#/gateway/" + encodeURIComponent(ns) + "/" + encodeURIComponent(name);

  // ---- Gateway page ------------------------------------------------------------------

  const GATEWAY_ROUTE_KINDS = ["HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"];

  function conditionCells(conds) {
    return h("td", {}, (conds || []).map((c) =>
      h("div", { class: c.status === "True" ? "" : (c.type === "Conflicted" ? "" : "bad"),
                 "data-condition": c.type, "data-status": c.status },
        `${c.type}=${c.status} (${c.reason})${c.message ? " " + c.message : ""}`)));
  }

  function parentOf(route, ns, name) {
    return (route.spec.parentRefs || []).map((p, i) => [p, ((route.status || {}).parents || [])[i]])
      .filter(([p]) => p.kind === "Gateway" && p.name === name && (p.namespace || route.metadata.namespace) === ns);
  }

  async function gatewayView(ns, name) {
    const q = encodeURIComponent(ns);
    const kinds = await api("/api/v1/kinds");
    const [gw, proxies, routes] = await Promise.all([
      api(`/api/v1/resources/Gateway/${q}/${encodeURIComponent(name)}`), api("/api/v1/proxies"),
      Promise.all(GATEWAY_ROUTE_KINDS.filter((k) => kinds.includes(k)).map((k) => api(`/api/v1/resources/${k}`)))]);
    const status = gw.status || {};
    const listeners = new Map((status.listeners || []).map((l) => [l.name, l]));
    const attached = routes.flat().flatMap((r) => parentOf(r, ns, name).map(([p, st]) => [r, p, st]));
    const replicas = proxies.filter((p) => (p.metadata || {}).gateway === name &&
      ((p.metadata || {}).namespace || "default") === ns && !(p.metadata || {}).inbound_port);
    return [h("h1", {}, `Gateway ${ns}/${name}`),
      h("p", { class: "sub" }, `Ingress gateway, class ${gw.spec.gatewayClassName}. `,
        "Its requests in the ", h("a", { href: "#/graph" }, "service graph"), "."),
      h("table", { id: "gateway-conditions" }, h("tr", {}, conditionCells(status.conditions))),
      h("h2", {}, "Listeners"),
      h("table", { id: "listeners" },
        h("tr", {}, ["Name", "Port", "Protocol", "Hostname", "Routes", "Conditions"].map((t) => h("th", {}, t))),
        gw.spec.listeners.map((l) => h("tr", { "data-listener": l.name },
          h("td", {}, l.name), h("td", { class: "num" }, String(l.port)), h("td", {}, l.protocol),
          h("td", {}, l.hostname || "*"),
          h("td", { class: "num", "data-field": "attached" },
            String((listeners.get(l.name) || {}).attachedRoutes ?? "-")),
          conditionCells((listeners.get(l.name) || {}).conditions)))),
      h("h2", {}, "Routes"),
      attached.length ? h("table", { id: "gateway-routes" },
        h("tr", {}, ["Kind", "Route", "Section", "Rules", "Status"].map((t) => h("th", {}, t))),
        attached.map(([r, p, st]) => h("tr", { "data-route": `${r.kind}/${r.metadata.namespace}/${r.metadata.name}` },
          h("td", {}, r.kind), h("td", {}, `${r.metadata.namespace}/${r.metadata.name}`),
          h("td", {}, p.sectionName || "all"),
          h("td", {}, (r.spec.rules || [{}]).map((rule) => h("div", {}, ruleText(rule)))),
          conditionCells((st || {}).conditions))))
        : h("p", { class: "muted" }, "No route names this Gateway as a parent."),
      h("h2", {}, "Replicas"),
      replicas.length ? h("table", { id: "replicas" },
        h("tr", {}, ["Proxy", "Address", "Connected"].map((t) => h("th", {}, t))),
        replicas.map((p) => h("tr", { "data-replica": p.node_id, "data-connected": String(!!p.connected) },
          h("td", {}, h("code", {}, p.node_id)), h("td", {}, (p.metadata || {}).inbound_address || ""),
          h("td", {}, p.connected ? "yes" : "no"))))
        : h("p", { class: "muted" }, "No replica is running (gossamer gateway --name " + name + ").")];
  }

  // ---- Service page ------------------------------------------------------------------

  function attaches(route, name, ns) {
    return (route.spec.parentRefs || []).some((p) => (p.kind || "Service") === "Service" &&
      p.name === name && (p.namespace || route.metadata.namespace) === ns);
  }

  function backendOf(route, name, ns) {
    return (route.spec.rules || []).some((r) => (r.backendRefs || []).some((b) =>
      b.name === name && (b.namespace || route.metadata.namespace) === ns));
  }

  function matchText(m) {
    const parts = [];
    if (m.path) parts.push(`${m.path.type || "PathPrefix"} ${m.path.value}`);
    if (m.method && typeof m.method === "string") parts.push(m.method);
    if (m.method && typeof m.method === "object") {
      parts.push(`${m.method.type || "Exact"} ${m.method.service || "*"}/${m.method.method || "*"}`);
    }
    for (const x of m.headers || []) parts.push(`header ${x.name}${x.type === "RegularExpression" ? "~" : "="}${x.value}`);
    for (const x of m.queryParams || []) parts.push(`query ${x.name}=${x.value}`);
    return parts.join(", ") || "any";
  }

  function ruleText(rule) {
    const matches = (rule.matches || []).map(matchText).join(" | ") || "any request";
    const backends = (rule.backendRefs || []).map((b) =>
      `${b.name}${b.port ? ":" + b.port : ""} (weight ${b.weight === undefined ? 1 : b.weight})`).join(", ");
    const filters = (rule.filters || []).map((f) => f.type);
    return `${matches} → ${backends || "no backends"}` + (filters.length ? ` [${filters.join(", ")}]` : "");
  }

  function conditions(doc) {
    const bad = ((doc.status || {}).conditions || []).filter((c) => c.status !== "True");
    return bad.length ? h("div", { class: "bad" }, bad.map((c) => `${c.type}=${c.status} (${c.reason}) ${c.message || ""}`))
                      : null;
  }

  function routeRows(routes) {
    return routes.map((r) => h("tr", { "data-route": `${r.kind}/${r.metadata.namespace}/${r.metadata.name}` },
      h("td", {}, r.kind), h("td", {}, r.metadata.name),
      h("td", {}, (r.spec.rules || [{}]).map((rule) => h("div", {}, ruleText(rule))), conditions(r)),
      h("td", {}, expander(`route:${r.kind}/${r.metadata.namespace}/${r.metadata.name}`, "full", r))));
  }

  function policyScope(doc, name, ns) {
    const target = doc.spec && doc.spec.targetRef;
    if (target) return target.name === name && doc.metadata.namespace === ns ? "service" : null;
    if (doc.metadata.namespace === ns) return "namespace";
    return doc.metadata.namespace === MESH_ROOT ? "mesh" : null;
  }

  async function serviceView(ns, name) {
    const kinds = await api("/api/v1/kinds");
    const policyKinds = kinds.filter((k) => !["Service", "Workload", ...ROUTE_KINDS, ...SMI_KINDS,
                                               ...NOT_POLICIES].includes(k));
    const q = encodeURIComponent(ns);
    const [svc, services, workloads, st, wst, graph, proxies, routes, policies] = await Promise.all([
      api(`/api/v1/resources/Service/${q}/${encodeURIComponent(name)}`),
      api(`/api/v1/resources/Service?namespace=${q}`),
      api(`/api/v1/resources/Workload?namespace=${q}`),
      stats(`/api/v1/stats?kind=service&namespace=${q}&name=${encodeURIComponent(name)}`),
      stats(`/api/v1/stats?kind=workload&namespace=${q}`),
      stats("/api/v1/graph"), api("/api/v1/proxies"),
      Promise.all(ROUTE_KINDS.filter((k) => kinds.includes(k)).map((k) => api(`/api/v1/resources/${k}`))),
      Promise.all(policyKinds.map((k) => api(`/api/v1/resources/${k}`)))]);
    const id = key(name, ns);
    const mine = st ? st.items.find((m) => m.name === name && m.namespace === ns) : undefined;
    const allRoutes = routes.flat();
    const edges = graph ? graph.edges : [];
    // Callers may reach its workloads through another Service (a route's catalog-v1).
    const own = workloads.filter((w) => w.spec.service === name);
    const via = new Set([id, ...services.filter((o) => own.some((w) => selects(o, w)))
      .map((o) => key(o.metadata.name, o.metadata.namespace))]);
    return [
      h("h1", {}, name, h("span", { class: "muted" }, " · " + ns)),
      h("p", { class: "sub" }, windowNote(st), " ", portsText(svc), " ", selectorText(svc)),
      conditions(svc),
      metricCards(mine),
      h("h2", {}, "Workloads"), workloadTable(svc, workloads, wst, proxies),
      h("h2", {}, "Routes attached to this service"),
      routeTable(allRoutes.filter((r) => attaches(r, name, ns)), "No route attaches to it: callers reach its workloads directly."),
      h("h2", {}, "Routes that send traffic to it"),
      routeTable(allRoutes.filter((r) => backendOf(r, name, ns)), "None."),
      h("h2", {}, "Policies"), policyTable(policies.flat(), name, ns),
      h("h2", {}, "Inbound edges (who calls it)"),
      edgeTable(edges.filter((e) => via.has(e.destination)), (e) => key(e.source.service, e.source.namespace), "from",
                (e) => e.destination),
      h("h2", {}, "Outbound edges (what it calls)"),
      edgeTable(edges.filter((e) => key(e.source.service, e.source.namespace) === id), (e) => e.destination, "to"),
      h("h2", {}, "Resource"), expander("service:" + id, "full Service", svc)];
  }

  const portsText = (svc) => "Ports: " + ((svc.spec.ports || []).map((p) => `${p.port}/${p.protocol || "http"}`).join(", ") || "none") + ".";
  const selectorText = (svc) => {
    const sel = Object.entries(svc.spec.selector || {}).map(([k, v]) => `${k}=${v}`);
    return sel.length ? "Selects workloads labelled " + sel.join(", ") + "." : "Selects workloads registered as this service.";
  };

  function metricCards(m) {
    const on = served(m);
    const card = (label, name, value, cls) =>
      h("div", { class: "card" }, h("div", { class: "label" }, label),
        h("div", { class: "value " + (cls || ""), "data-metric": name }, value));
    return h("div", { class: "cards", id: "golden" },
      card("Success", "success", on ? pct(m.success_rate) : "-", on ? health(m.success_rate) : ""),
      card("RPS", "rps", on ? m.rps.toFixed(2) : "-"),
      card("p50 ms", "p50", on ? ms(m.latency_ms.p50) : "-"),
      card("p95 ms", "p95", on ? ms(m.latency_ms.p95) : "-"),
      card("p99 ms", "p99", on ? ms(m.latency_ms.p99) : "-"),
      card("Requests", "requests", on ? String(m.requests) : "-"));
  }

  function workloadTable(svc, workloads, wst, proxies) {
    const mine = workloads.filter((w) => selects(svc, w));
    if (!mine.length) return empty("No workload is registered for it.");
    const byName = new Map((wst ? wst.items : []).map((m) => [m.name, m]));
    const proxy = new Map(proxies.map((p) => [p.node_id, p]));
    const rows = mine.map((w) => {
      const hl = w.spec.health || "Healthy";
      const p = w.spec.proxy ? proxy.get(w.spec.proxy) : undefined;
      const m = byName.get(w.metadata.name);
      return h("tr", { "data-workload": w.metadata.name },
        h("td", {}, w.metadata.name), h("td", {}, `${w.spec.address}:${w.spec.port}`),
        h("td", {}, h("span", { class: "pill " + (hl === "Healthy" ? "good" : hl === "Unhealthy" ? "bad" : "warn") }, hl)),
        h("td", {}, hl === "Healthy" ? "ready (an endpoint)" : "not ready (no traffic)"),
        h("td", {}, !w.spec.proxy ? "-" : p ? h("span", {}, p.connected ? "connected" : "disconnected") : "not connected"),
        h("td", {}, Object.entries(w.metadata.labels || {}).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`))),
        h("td", { class: "num" }, served(m) ? pct(m.success_rate) : "-"),
        h("td", { class: "num" }, served(m) ? String(m.requests) : "-"));
    });
    return table([["Name"], ["Address"], ["Health"], ["Ready"], ["Proxy"], ["Labels"], ["Success", "num"], ["Requests", "num"]],
                 rows, { id: "workloads" });
  }

  function routeTable(routes, none) {
    return routes.length ? table([["Kind"], ["Name"], ["Rules: matches → backends"], [""]], routeRows(routes), { class: "routes" })
                         : empty(none);
  }

  function policyTable(policies, name, ns) {
    const rows = policies.map((p) => [p, policyScope(p, name, ns)]).filter(([, scope]) => scope)
      .map(([p, scope]) => h("tr", { "data-policy": `${p.kind}/${p.metadata.namespace}/${p.metadata.name}` },
        h("td", {}, p.kind), h("td", {}, p.metadata.name),
        h("td", {}, scope === "service" ? "this service" : scope === "namespace" ? "namespace " + p.metadata.namespace : "whole mesh"),
        h("td", {}, Object.keys(p.spec || {}).filter((k) => k !== "targetRef").map((k) => h("span", { class: "tag" }, k)), conditions(p)),
        h("td", {}, expander(`policy:${p.kind}/${p.metadata.namespace}/${p.metadata.name}`, "full", p))));
    return rows.length ? table([["Kind"], ["Name"], ["Applies to"], ["Sets"], [""]], rows, { id: "policies" })
                       : empty("No policy applies to it.");
  }

  function edgeTable(edges, peer, label, through) {
    if (!edges.length) return empty("None in the window.");
    const rows = edges.map((e) => {
      const [pname, pns] = peer(e).split(/\.(.*)/s);
      return h("tr", { "data-edge": e.id }, h("td", {}, serviceLink(pname, pns)),
        through ? h("td", {}, through(e)) : null, metricCells(e));
    });
    const heads = [[label === "from" ? "From" : "To"], ...(through ? [["Via Service"]] : []), ...METRIC_HEADERS];
    return table(heads, rows, { class: "edges" });
  }

  // ---- Proxies -----------------------------------------------------------------------

  function typeLines(types) {
    return Object.entries(types || {}).filter(([, t]) => t.subscribed || t.sent_version).map(([name, t]) => {
      const cls = t.rejecting ? "bad" : t.synced === false ? "warn" : "";
      return h("div", { class: cls, "data-type": name },
        h("code", {}, name), " acked ", h("code", { title: t.acked_version || "", "data-field": "acked" }, short(t.acked_version)),
        " / sent ", h("code", { title: t.sent_version || "", "data-field": "sent" }, short(t.sent_version)),
        t.synced === false ? h("span", { class: "muted" }, " (latest " + short(t.latest_version) + ")") : null);
    });
  }

  function nackCell(n) {
    if (!n) return h("span", { class: "muted" }, "none");
    return h("div", { class: "bad" }, h("div", {}, `${n.type} version ${short(n.version)} at ${when(n.at)}`),
      h("div", {}, n.error));
  }

  async function proxiesView() {
    const proxies = await api("/api/v1/proxies");
    const rows = proxies.map((p) => {
      const meta = p.metadata || {};
      const state = !p.connected ? ["bad", "disconnected"] : p.synced === false ? ["warn", "connected, syncing"]
                                                                                  : ["good", "connected"];
      // The host the sidecar runs on: the address its workload is reached at.
      const host = meta.inbound_address || "";
      return h("tr", { "data-proxy": p.node_id, "data-connected": String(!!p.connected), "data-host": host },
        h("td", {}, h("code", {}, p.node_id), h("div", { class: "muted" }, p.user_agent || "")),
        h("td", {}, meta.service ? serviceLink(meta.service, meta.namespace || "default") : "-",
          h("div", { class: "muted" }, meta.workload || "")),
        h("td", { "data-field": "host" }, host ? h("code", {}, host) : "-"),
        h("td", {}, h("span", { class: "pill " + state[0], "data-field": "state" }, state[1]),
          h("div", { class: "muted" }, p.connected ? "since " + when(p.connected_at) : "at " + when(p.disconnected_at))),
        h("td", {}, p.stream || "-"),
        h("td", { "data-field": "versions" }, typeLines(p.types)),
        h("td", { "data-field": "nack" }, nackCell(p.last_nack),
          p.rejected ? h("div", { class: "bad" }, "not sent: " + JSON.stringify(p.rejected)) : null));
    });
    return [h("h1", {}, "Proxies"),
      h("p", { class: "sub" }, "Every sidecar the xDS server knows, on every host: connected now, or disconnected within the last hour. " +
        "Versions per xDS type: what the proxy ACKed and what was last sent to it."),
      rows.length ? table([["Node"], ["Service / workload"], ["Host"], ["State"], ["Stream"], ["Config versions"], ["Last NACK"]],
                          rows, { id: "proxies" })
                  : empty("No proxy is connected.")];
  }

  // ---- Failures (gossamer explain) ---------------------------------------------------

  const EXPLAIN_FIELDS = [["failed_at", "Failed at"], ["cause", "Why"], ["policy", "Policy"],
                          ["route", "Route"], ["cluster", "Cluster"]];

  function explanation(exp) {
    const lines = EXPLAIN_FIELDS.filter(([k]) => exp[k]).map(([k, label]) =>
      h("div", { "data-field": k }, h("strong", {}, label + ": "), exp[k]));
    return h("div", { class: "explanation", "data-request": exp.request_id },
      h("div", { class: "muted" }, exp.summary), lines,
      exp.flags.map((f) => h("div", { "data-field": "flag" }, h("strong", {}, "Flag: "), f)),
      exp.hints.map((t) => h("div", { class: "muted" }, "Hint: " + t)));
  }

  function failureRow(f) {
    const out = h("td", { class: "explain-cell" });
    const button = h("button", { class: "btn secondary", type: "button" }, "Explain");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const q = new URLSearchParams({ request_id: f.request_id });
        out.replaceChildren(explanation(await api("/api/v1/explain?" + q)));
      } catch (exc) {
        showError(exc);
        button.disabled = false;
      }
    });
    out.append(button);
    return h("tr", { "data-request": f.request_id, "data-path": f.path, "data-status": f.status },
      h("td", {}, when(f.start_time)), h("td", {}, f.reporter.workload, h("div", { class: "muted" }, f.direction)),
      h("td", {}, f.method), h("td", { class: "path" }, f.path),
      h("td", { class: "num bad" }, String(f.status || "-")), h("td", {}, f.flags.join(",") || "-"), out);
  }

  async function failuresView() {
    const found = await api("/api/v1/failures?limit=50");
    const rows = found.items.map(failureRow);
    const reload = h("button", { class: "btn secondary", type: "button", id: "failures-reload" }, "Refresh");
    reload.addEventListener("click", () => route());
    return [h("h1", {}, "Recent failures"),
      h("p", { class: "sub" }, "Requests that failed (status 400 and above, or an Envoy response flag), newest " +
        "first, as the sidecars reported them. Explain says where and why, like `gossamer explain`. " +
        "Needs an admin token."), reload,
      rows.length ? table([["Time"], ["Reported by"], ["Method"], ["Path"], ["Status", "num"], ["Flags"], ["Why"]],
                          rows, { id: "failures" })
                  : empty("No failed request reported.")];
  }

  // ---- Tap ---------------------------------------------------------------------------

  function stopTap(reason) {
    if (!tap) return;
    tap.controller.abort();
    tap.done(reason);
    tap = null;
  }

  async function tapView(ns, name) {
    const proxies = await api("/api/v1/proxies");
    const choices = [...new Set(proxies.filter((p) => p.connected && p.metadata && p.metadata.service &&
                                                      p.metadata.inbound_port)
      .map((p) => (p.metadata.namespace || "default") + "/" + p.metadata.service))].sort();
    const chosen = ns && name ? ns + "/" + name : choices[0] || "";
    const select = h("select", { id: "tap-service", "aria-label": "service" },
      choices.map((c) => h("option", { value: c, selected: c === chosen }, c)));
    const path = h("input", { id: "tap-path", placeholder: "path prefix, e.g. /items", size: 24 });
    const method = h("select", { id: "tap-method", "aria-label": "method" },
      ["", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].map((m) => h("option", { value: m }, m || "any method")));
    const start = h("button", { class: "btn", type: "submit", id: "tap-start" }, "Start");
    const stop = h("button", { class: "btn secondary", type: "button", id: "tap-stop", disabled: true }, "Stop");
    const status = h("span", { class: "status", id: "tap-status" }, "idle");
    const body = h("tbody", {});
    let count = 0;
    const form = h("form", { class: "inline", id: "tap-form" }, select, path, method, start, stop, status);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (tap || !select.value) return;
      body.replaceChildren();
      count = 0;
      const [tns, tsvc] = select.value.split("/");
      const params = new URLSearchParams({ limit: "10000", seconds: "600" });
      if (path.value.trim()) params.set("path", path.value.trim());
      if (method.value) params.set("method", method.value);
      const controller = new AbortController();
      const set = (running, text) => {
        start.disabled = running;
        stop.disabled = !running;
        select.disabled = path.disabled = method.disabled = running;
        status.textContent = text;
        status.dataset.state = running ? "running" : "stopped";
      };
      tap = { controller, done: (reason) => set(false, `${reason} after ${count} request(s)`) };
      set(true, `tapping ${select.value}…`);
      const onEvent = (e) => {
        if (e.error) throw new ApiError(502, e.error);
        count += 1;
        body.prepend(tapRow(e));
        while (body.childElementCount > TAP_ROWS) body.lastElementChild.remove();
        status.textContent = `tapping ${tns}/${tsvc}: ${count} request(s)`;
      };
      streamTap(`/api/v1/tap/${encodeURIComponent(tns)}/${encodeURIComponent(tsvc)}?${params}`,
                controller.signal, onEvent)
        .then(() => { if (tap && tap.controller === controller) { tap = null; set(false, `ended (time or count limit) after ${count} request(s)`); } })
        .catch((exc) => {
          if (exc.name === "AbortError") return;
          if (tap && tap.controller === controller) tap = null;
          set(false, "failed");
          showError(exc);
        });
    });
    stop.addEventListener("click", () => stopTap("stopped"));
    return [h("h1", {}, "Tap"),
      h("p", { class: "sub" }, "Live requests to a service, as its sidecars see them (newest first, at most " + TAP_ROWS +
        " rows). Needs an admin token: request headers are visible to it."),
      choices.length ? form : empty("No connected sidecar serves a service."),
      table([["Time"], ["Source"], ["Destination"], ["Method"], ["Path"], ["Status", "num"], ["Latency ms", "num"]],
            [body], { class: "tap-table", id: "tap" })];
  }

  function tapRow(e) {
    const ok = e.status && e.status < 500;
    return h("tr", { class: "tap-row", "data-path": e.path, "data-status": e.status, "data-method": e.method },
      h("td", {}, (e.time || "").replace("T", " ")), h("td", {}, e.source), h("td", {}, e.destination),
      h("td", {}, e.method), h("td", { class: "path" }, e.path),
      h("td", { class: "num " + (ok ? "good" : "bad") }, String(e.status)),
      h("td", { class: "num" }, e.latency_ms === undefined || e.latency_ms === null ? "-" : ms(e.latency_ms)));
  }

  /** Reads newline-delimited JSON from a streaming response as it arrives. */
  async function streamTap(path, signal, onEvent) {
    const resp = await request(path, signal);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (line) onEvent(JSON.parse(line));
      }
    }
  }

  // ---- token form --------------------------------------------------------------------

  function tokenForm() {
    stopTimer();
    const input = h("input", { type: "password", class: "token", id: "token-input", autocomplete: "off",
                               placeholder: "API token (GOSSAMER_TOKEN)" });
    const form = h("form", { class: "inline", id: "token-form" }, input,
      h("button", { class: "btn", type: "submit" }, "Use token"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (!input.value.trim()) return;
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      clearError();
      route();
    });
    view.replaceChildren(h("h1", {}, "Sign in"),
      h("p", { class: "sub" }, "The dashboard reads the control plane's API with a token. " +
        "`gossamer dashboard` prints a link that carries yours; or paste one here. " +
        "It is kept in this tab's session storage only."), form);
    signout.hidden = true;
    input.focus();
  }

  // ---- routing -----------------------------------------------------------------------

  const ROUTES = [
    [/^#\/services$/, "services", () => servicesView()],
    [/^#\/graph$/, "graph", () => graphView()],
    [/^#\/service\/([^/]+)\/([^/]+)$/, "services", (ns, name) => serviceView(ns, name)],
    [/^#\/gateway\/([^/]+)\/([^/]+)$/, "graph", (ns, name) => gatewayView(ns, name)],
    [/^#\/proxies$/, "proxies", () => proxiesView()],
    [/^#\/tap(?:\/([^/]+)\/([^/]+))?$/, "tap", (ns, name) => tapView(ns, name)],
    [/^#\/failures$/, "failures", () => failuresView()],
  ];

  function stopTimer() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }

  /** Re-renders, keeping which expanders were open and the scroll position. */
  function replaceView(nodes) {
    const open = new Set([...view.querySelectorAll("details[open]")].map((d) => d.dataset.key));
    const y = window.scrollY;
    view.replaceChildren(...nodes.flat().filter(Boolean));
    for (const d of view.querySelectorAll("details")) if (open.has(d.dataset.key)) d.open = true;
    window.scrollTo(0, y);
  }

  async function render(gen, match, refresh) {
    const fn = match.route[2];
    try {
      const [nodes] = await Promise.all([fn(...match.args), refreshSummary()]);
      if (gen !== generation) return;
      replaceView(nodes);
      clearError();
      view.dataset.loaded = String(Date.now());
      if (refresh) timer = setTimeout(() => render(gen, match, true), REFRESH_MS);
    } catch (exc) {
      if (gen !== generation) return;
      showError(exc);
      const retry = !(exc instanceof ApiError) || ![401, 403, 404].includes(exc.status);
      if (refresh && retry) timer = setTimeout(() => render(gen, match, true), REFRESH_MS);
    }
  }

  function route() {
    generation += 1;
    stopTimer();
    stopTap("stopped");
    takeFragmentToken();
    if (!location.hash || location.hash === "#" || location.hash === "#/") {
      history.replaceState(null, "", location.pathname + location.search + "#/services");
    }
    if (!token()) {
      tokenForm();
      return;
    }
    signout.hidden = false;
    for (const r of ROUTES) {
      const m = r[0].exec(location.hash);
      if (!m) continue;
      for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === r[1]);
      const args = m.slice(1).map((a) => (a === undefined ? undefined : decodeURIComponent(a)));
      view.replaceChildren(h("p", { class: "empty" }, "Loading…"));
      render(generation, { route: r, args }, r[1] !== "tap" && r[1] !== "failures");
      return;
    }
    view.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No such page: ", location.hash, ". ",
      h("a", { href: "#/services" }, "Services")));
  }

  signout.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    summaryBox.replaceChildren();
    route();
  });
  window.addEventListener("hashchange", route);
  route();
})();
