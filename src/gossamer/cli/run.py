"""Commands that run the mesh's processes (control-plane, proxy) and check them
(check, proxy-config)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from gossamer.cli.app import Server, app
from gossamer.cli.client import Api, CliError

# delta-rds: a delta stream without VHDS (the outbound route config whole, by RDS).
XDS_MODES = ("delta", "delta-rds", "sotw")


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command("control-plane")
def control_plane(
    state_dir: Annotated[Path, typer.Option(
        "--state-dir", help="the admin token, and the store unless --store")] = Path(".gossamer"),
    store: Annotated[str | None, typer.Option(
        "--store", help="the store's URL: postgresql://user@host/db to share one database "
        "between replicas; default: SQLite in --state-dir")] = None,
    xds_port: Annotated[int, typer.Option("--xds-port")] = 15010,
    api_port: Annotated[int, typer.Option("--api-port")] = 15080,
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    advertise_address: Annotated[str | None, typer.Option(
        "--advertise-address", help="address agents dial for xDS (default: --host)")] = None,
    api_tls: Annotated[bool | None, typer.Option(
        "--api-tls/--no-api-tls", help="serve the API over TLS (default: when --host is "
        "not a loopback address; beyond loopback always)")] = None,
    trust_domain: Annotated[str, typer.Option("--trust-domain")] = "gossamer.local",
    cert_ttl: Annotated[int, typer.Option("--cert-ttl", help="default workload certificate "
                                          "lifetime, seconds")] = 86400,
    max_cert_ttl: Annotated[int, typer.Option("--max-cert-ttl", help="longest lifetime an "
                                              "agent may ask for, seconds")] = 7 * 86400,
    ca_cert: Annotated[Path | None, typer.Option("--ca-cert", help="plug-in intermediate CA "
                                                 "certificate (PEM)")] = None,
    ca_key: Annotated[Path | None, typer.Option("--ca-key", help="its private key")] = None,
    ca_chain: Annotated[Path | None, typer.Option("--ca-chain", help="its chain up to the "
                                                  "root")] = None,
    ratelimit_redis: Annotated[str | None, typer.Option(
        "--ratelimit-redis", help="keep global rate-limit counters in this Redis "
        "(redis://host:port/db), shared by every replica; default: in memory")] = None,
    stats_interval: Annotated[float, typer.Option(
        "--stats-interval", help="seconds between reads of every sidecar's stats")] = 5.0,
    stats_window: Annotated[float, typer.Option(
        "--stats-window", help="seconds of traffic golden metrics cover")] = 60.0,
    vip_range: Annotated[str, typer.Option(
        "--vip-range", help="CIDR Services' virtual IPs are allocated from (capture, mesh "
        "DNS)")] = "240.240.0.0/16",
    kubernetes: Annotated[bool, typer.Option(
        "--kubernetes", help="serve the Kubernetes cluster's Services, EndpointSlices, Pods "
        "and the mesh's CRDs (docs/kubernetes.md)")] = False,
    kubeconfig: Annotated[Path | None, typer.Option(
        "--kubeconfig", help="with --kubernetes: this kubeconfig file; default: the pod's "
        "ServiceAccount (in cluster)")] = None,
    inject_image: Annotated[str, typer.Option(
        "--inject-image", help="with --kubernetes: the image injected sidecars run")
    ] = "ghcr.io/gossamer-mesh/gossamer:0.1.0",
    secrets_key_file: Annotated[Path | None, typer.Option(
        "--secrets-key-file", help="keys sealing the CA's private keys in the store, one per "
        "line, the first sealing (mode 0600); default: $GOSSAMER_SECRETS_KEY, else "
        "plaintext")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the control plane: store, mesh CA, xDS server (TLS) and HTTP API."""
    from datetime import timedelta

    from gossamer.contract.spiffe import check_trust_domain
    from gossamer.controlplane.server import ControlPlane, ControlPlaneOptions

    _logging(verbose)
    plugin = (ca_cert, ca_key, ca_chain)
    if any(plugin) and not all(plugin):
        raise CliError("a plug-in CA needs all of --ca-cert, --ca-key and --ca-chain")
    try:
        check_trust_domain(trust_domain)
    except ValueError as exc:
        raise CliError(f"--trust-domain: {exc}") from exc
    from gossamer.secrets import SecretsError, load_keyring
    from gossamer.virtualips.table import parse_range

    try:
        secrets = load_keyring(secrets_key_file)
    except SecretsError as exc:
        raise CliError(str(exc)) from exc
    try:
        parse_range(vip_range)
    except ValueError as exc:
        raise CliError(f"--vip-range: {exc}") from exc
    try:
        options = ControlPlaneOptions(
            state_dir=state_dir, store_url=store, host=host, xds_port=xds_port,
            api_port=api_port, advertise_address=advertise_address, api_tls=api_tls,
            trust_domain=trust_domain, cert_ttl=timedelta(seconds=cert_ttl),
            max_cert_ttl=timedelta(seconds=max_cert_ttl),
            plugin_ca=plugin if all(plugin) else None,  # type: ignore[arg-type]
            ratelimit_redis=ratelimit_redis, stats_interval=stats_interval,
            stats_window=stats_window, gc_freeze=True, vip_range=vip_range,
            kubernetes=kubernetes, kubeconfig=kubeconfig, inject_image=inject_image,
            secrets=secrets)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if stats_interval <= 0 or stats_window < stats_interval:
        raise CliError("--stats-interval must be positive and --stats-window at least as long")
    if kubeconfig is not None and not kubernetes:
        raise CliError("--kubeconfig needs --kubernetes")
    from gossamer.ca.errors import CaError
    from gossamer.k8s.client import KubeError
    from gossamer.store import StoreError

    try:
        asyncio.run(ControlPlane(options).serve_forever())
    except KubeError as exc:
        raise CliError(f"kubernetes: {exc}") from exc
    except CaError as exc:
        raise CliError(f"certificate authority: {exc}") from exc
    except StoreError as exc:
        raise CliError(f"store: {exc}") from exc


def _parse_upstream(text: str, namespace: str) -> Any:
    """`svc`, `svc:port`, `svc=local`, `svc:port=local`, optional `ns/` prefix;
    no port means the Service's default port (resolved by the agent)."""
    from gossamer.agent.ports import free_port
    from gossamer.agent.runner import UpstreamSpec

    target, _, local = text.partition("=")
    ns, _, rest = target.rpartition("/")
    name, _, port = rest.partition(":")
    try:
        return UpstreamSpec(service=name, namespace=ns or namespace, port=int(port or 0),
                            local_port=int(local) if local else free_port())
    except ValueError as exc:
        raise CliError(f"--upstream {text!r}: expected SERVICE[:PORT][=LOCALPORT]") from exc


def _parse_upstreams(values: list[str], namespace: str) -> list[Any]:
    specs = [_parse_upstream(u, namespace) for u in values]
    seen: set[tuple[str, str | None, int]] = set()
    for s in specs:
        key = (s.service, s.namespace, s.port)
        if key in seen:
            raise CliError(f"--upstream {s.service}: listed twice")
        seen.add(key)
    return specs


def _labels(values: list[str], flag: str = "--label") -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} {item!r}: expected key=value")
        out[key] = value
    return out


@app.command(context_settings={"allow_extra_args": True})
def proxy(
    ctx: typer.Context,
    service: Annotated[str, typer.Option("--service", help="service this workload runs as")],
    app_port: Annotated[int, typer.Option("--app-port", help="port the app listens on; 0: the "
                                          "app only calls out (no inbound, not registered)")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    label: Annotated[list[str], typer.Option("--label", "-l", help="k=v (repeatable)")] = [],  # noqa: B006
    server: Annotated[str | None, typer.Option(
        "--control-plane", "--server", help="the control plane's API URL, or several "
        "replicas' comma-separated (default $GOSSAMER_SERVER or http://127.0.0.1:15080)")
    ] = None,
    inbound_port: Annotated[int, typer.Option("--inbound-port")] = 0,
    outbound_port: Annotated[int, typer.Option("--outbound-port")] = 0,
    admin_port: Annotated[int, typer.Option("--admin-port")] = 0,
    name: Annotated[str | None, typer.Option("--name", help="workload name")] = None,
    protocol: Annotated[str | None, typer.Option(
        "--protocol", help="http|http2|grpc|tcp (default: the Service port's)")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", help="address peers reach this workload at (default: this host's "
        "address towards the control plane)")] = None,
    env: Annotated[list[str], typer.Option("--env", "-e", help="K=V for the app "
                                           "(repeatable; mesh variables win)")] = [],  # noqa: B006
    upstream: Annotated[list[str], typer.Option("--upstream", help="SVC[:PORT][=LOCALPORT]: "
                                                "a dedicated local port for one service")] = [],  # noqa: B006
    probe_path: Annotated[str | None, typer.Option("--probe-path", help="HTTP probe path; "
                                                   "default: TCP connect")] = None,
    drain_seconds: Annotated[float, typer.Option("--drain-seconds")] = 2.0,
    xds_mode: Annotated[str, typer.Option("--xds-mode", help=(
        "delta (outbound virtual hosts by VHDS)|delta-rds (delta without VHDS)|sotw"))] = "delta",
    concurrency: Annotated[int, typer.Option("--concurrency", help="Envoy worker threads")] = 1,
    workdir: Annotated[Path | None, typer.Option("--workdir")] = None,
    token: Annotated[str | None, typer.Option(
        "--token", help="join token for this service (prefer --token-file or "
        "$GOSSAMER_TOKEN: argv is visible to every user)")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", envvar="GOSSAMER_TOKEN_FILE", show_envvar=True,
        help="file holding the join token")] = None,
    ca_file: Annotated[Path | None, typer.Option(
        "--ca-file", envvar="GOSSAMER_CA_FILE", show_envvar=True,
        help="PEM bundle that verifies the control plane")] = None,
    ca_fingerprint: Annotated[str | None, typer.Option(
        "--ca-fingerprint", envvar="GOSSAMER_CA_FINGERPRINT", show_envvar=True,
        help="SHA-256 of a CA certificate: fetch the bundle from the control plane and "
        "keep it only if it holds that certificate")] = None,
    cert_ttl: Annotated[int | None, typer.Option(
        "--cert-ttl", help="workload certificate lifetime, seconds (default: the CA's)")] = None,
    service_account: Annotated[str | None, typer.Option(
        "--service-account", help="identity account (default: the service name)")] = None,
    capture: Annotated[bool, typer.Option(
        "--capture", help="redirect the workload's traffic to the sidecar with iptables "
        "(root; the app needs no proxy settings)")] = False,
    proxy_uid: Annotated[int, typer.Option(
        "--proxy-uid", help="with --capture: the uid (and gid) Envoy runs as")] = 1337,
    capture_exclude_ports: Annotated[list[str], typer.Option(
        "--capture-exclude-ports", help="outbound TCP ports not captured (comma-separated, "
        "repeatable)")] = [],  # noqa: B006
    capture_exclude_cidrs: Annotated[list[str], typer.Option(
        "--capture-exclude-cidrs", help="outbound destinations not captured, CIDRs "
        "(comma-separated, repeatable)")] = [],  # noqa: B006
    capture_port: Annotated[int, typer.Option(
        "--capture-port", help="the outbound capture listener's port")] = 15001,
    capture_installed: Annotated[bool, typer.Option(
        "--capture-installed", help="with --capture: the rules are installed already "
        "(`gossamer capture install`, a pod's init container); run unprivileged, as "
        "--proxy-uid")] = False,
    app_probes_port: Annotated[int, typer.Option(
        "--app-probes-port", help="where kubelet's rewritten HTTP probes ($GOSSAMER_APP_PROBES, "
        "set by injection) are answered, on --address")] = 15020,
    ready_probe: Annotated[bool, typer.Option(
        "--ready-probe", help="also answer GET /healthz/ready there with Envoy's readiness "
        "(kubelet's probe of the sidecar: Envoy's admin stays on loopback)")] = False,
    register: Annotated[bool, typer.Option(
        "--register/--no-register", help="register the Workload and report the app's "
        "health (off on Kubernetes: the controller registers pods)")] = True,
    dns_port: Annotated[int, typer.Option(
        "--dns-port", help="the mesh DNS listener's port (UDP)")] = 15053,
    admin_tls_port: Annotated[int | None, typer.Option(
        "--admin-tls-port", help="the control plane's mTLS admin listener on --address "
        "(default 15091, or a free port when taken; off on loopback; 0: off)")] = None,
    prometheus_port: Annotated[int | None, typer.Option(
        "--prometheus-port", help="/stats/prometheus for Prometheus on --address (default "
        "15090, or a free port when taken; off on loopback; 0: off)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a sidecar Envoy beside a workload; after `--`, the command that starts the app."""
    from gossamer.agent.join import JoinError, detect_address, join_token
    from gossamer.agent.ports import free_port
    from gossamer.agent.runner import AgentConfig, AgentError, run_agent
    from gossamer.cli.client import OPTIONS, server_url
    from gossamer.cli.proxyadmin import off_host_port

    _logging(verbose)
    if xds_mode not in XDS_MODES:
        raise CliError("--xds-mode must be delta, delta-rds or sotw")
    if protocol not in (None, "http", "http2", "grpc", "tcp"):
        raise CliError("--protocol must be http, http2, grpc or tcp")
    from gossamer.agent.capturing import CaptureOptions

    if capture_installed and not capture:
        raise CliError("--capture-installed needs --capture")
    try:
        captured = CaptureOptions.parse(proxy_uid, capture_exclude_ports, capture_exclude_cidrs,
                                        capture_port, dns_port) if capture else None
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    from gossamer.agent.appprobes import ENV, parse_probes

    try:
        app_probes = parse_probes(os.environ[ENV]) if os.environ.get(ENV) else {}
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if captured is not None and capture_installed:
        from dataclasses import replace

        captured = replace(captured, preinstalled=True)
    url = server_url(server)
    try:
        address = address or detect_address(url)
        token = join_token(token, token_file)
    except JoinError as exc:
        raise CliError(str(exc)) from exc
    config = AgentConfig(
        service=service, app_port=app_port, namespace=namespace, labels=_labels(label),
        server=url,
        inbound_port=(inbound_port or free_port()) if app_port else 0,
        outbound_port=outbound_port or free_port(), admin_port=admin_port or free_port(),
        protocol=protocol, name=name, address=address, env=_labels(env, "--env"),
        upstreams=_parse_upstreams(upstream, namespace),
        command=list(ctx.args), probe_path=probe_path, drain_seconds=drain_seconds,
        delta=xds_mode != "sotw", vhds=xds_mode == "delta", concurrency=concurrency,
        workdir=workdir, token=token, token_file=token_file,
        ca_file=ca_file or OPTIONS.ca_file,
        ca_fingerprint=ca_fingerprint, cert_ttl=cert_ttl, service_account=service_account,
        capture=captured, register=register, app_probes=app_probes,
        app_probes_port=app_probes_port, ready_probe=ready_probe,
        admin_tls_port=off_host_port(admin_tls_port, "--admin-tls-port"),
        prometheus_port=off_host_port(prometheus_port, "--prometheus-port"),
    )
    try:
        code = asyncio.run(run_agent(config))
    except AgentError as exc:
        raise CliError(str(exc)) from exc
    raise typer.Exit(code)


@app.command()
def gateway(
    name: Annotated[str, typer.Option(
        "--name", help="the Gateway this Envoy serves; with --egress, the Service named by "
        "ExternalServices' egress.via")],
    egress: Annotated[bool, typer.Option(
        "--egress", help="run the egress gateway NAME: registered as a Workload of Service "
        "NAME, it takes the mesh's calls to the ExternalServices whose egress.via is NAME "
        "over mutual TLS on --inbound-port")] = False,
    inbound_port: Annotated[int, typer.Option(
        "--inbound-port", help="with --egress: the mTLS port sidecars call, on --address "
        "(default: a free port)")] = 0,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    server: Annotated[str | None, typer.Option(
        "--control-plane", "--server", help="the control plane's API URL (default "
        "$GOSSAMER_SERVER or http://127.0.0.1:15080)")] = None,
    replica: Annotated[str | None, typer.Option(
        "--replica", help="this replica's name, its node id's first part (default: "
        "NAME-<random>)")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", help="address the Gateway's listeners bind (default: this host's "
        "address towards the control plane)")] = None,
    admin_port: Annotated[int, typer.Option("--admin-port", help="Envoy's admin, on "
                                            "loopback")] = 0,
    drain_seconds: Annotated[float, typer.Option(
        "--drain-seconds", help="at stop, how long listeners drain before Envoy exits")] = 5.0,
    xds_mode: Annotated[str, typer.Option("--xds-mode", help=(
        "delta (outbound virtual hosts by VHDS)|delta-rds (delta without VHDS)|sotw"))] = "delta",
    concurrency: Annotated[int, typer.Option("--concurrency", help="Envoy worker threads")] = 2,
    workdir: Annotated[Path | None, typer.Option("--workdir")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", envvar="GOSSAMER_TOKEN_FILE", show_envvar=True,
        help="file holding a join token for the gateway's service account")] = None,
    ca_file: Annotated[Path | None, typer.Option(
        "--ca-file", envvar="GOSSAMER_CA_FILE", show_envvar=True,
        help="PEM bundle that verifies the control plane")] = None,
    ca_fingerprint: Annotated[str | None, typer.Option(
        "--ca-fingerprint", envvar="GOSSAMER_CA_FINGERPRINT", show_envvar=True,
        help="SHA-256 of a CA certificate the control plane's bundle must hold")] = None,
    service_account: Annotated[str | None, typer.Option(
        "--service-account", help="identity account (default: the Gateway's name): its "
        "SPIFFE ID is spiffe://TD/ns/NAMESPACE/sa/ACCOUNT")] = None,
    admin_tls_port: Annotated[int | None, typer.Option(
        "--admin-tls-port", help="the control plane's mTLS admin listener on --address "
        "(default 15091, or a free port when taken; 0: off)")] = None,
    prometheus_port: Annotated[int | None, typer.Option(
        "--prometheus-port", help="/stats/prometheus on --address (default 15090, or a "
        "free port when taken; 0: off)")] = None,
    ready_port: Annotated[int, typer.Option(
        "--ready-port", help="answer GET /healthz/ready with Envoy's readiness on "
        "--address:PORT (a pod's readiness probe); 0: off")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the Envoy of a Gateway (an agent with no app), or with --egress of an egress
    gateway; replicas of one gateway each run this with their own --replica."""
    from gossamer.agent.join import JoinError, detect_address, join_token
    from gossamer.agent.ports import free_port
    from gossamer.agent.runner import AgentConfig, AgentError, run_agent
    from gossamer.cli.client import OPTIONS, server_url
    from gossamer.cli.proxyadmin import off_host_port
    from gossamer.contract.checks import DNS_LABEL, DNS_SUBDOMAIN

    _logging(verbose)
    if xds_mode not in XDS_MODES:
        raise CliError("--xds-mode must be delta, delta-rds or sotw")
    if egress and (not DNS_LABEL.match(name) or len(name) > 63):
        raise CliError("--name with --egress must be a Service name (a DNS label)")
    if not DNS_SUBDOMAIN.match(name) or len(name) > 253:
        raise CliError("--name must be a Gateway name (lowercase letters, digits, '-', '.')")
    if inbound_port and not egress:
        raise CliError("--inbound-port needs --egress (an ingress Gateway's ports are its "
                       "listeners')")
    account = service_account or name
    if not DNS_LABEL.match(account) or len(account) > 63:
        raise CliError(f"the gateway's identity account {account!r} must be a DNS label: "
                       "give --service-account for a Gateway name with dots")
    url = server_url(server)
    try:
        address = address or detect_address(url)
        token = join_token(None, token_file)
    except JoinError as exc:
        raise CliError(str(exc)) from exc
    # An egress gateway is a Workload of Service NAME (its inbound port is how sidecars
    # reach it); an ingress one registers nothing and binds its Gateway's listeners.
    config = AgentConfig(
        service=name if egress else account, app_port=0, namespace=namespace, server=url,
        name=replica, inbound_port=(inbound_port or free_port()) if egress else 0,
        admin_port=admin_port or free_port(), address=address, drain_seconds=drain_seconds,
        delta=xds_mode != "sotw", vhds=xds_mode == "delta", concurrency=concurrency,
        workdir=workdir, token=token, token_file=token_file,
        ca_file=ca_file or OPTIONS.ca_file, ca_fingerprint=ca_fingerprint,
        service_account=service_account, gateway=name,
        app_probes_port=ready_port, ready_probe=bool(ready_port),
        admin_tls_port=off_host_port(admin_tls_port, "--admin-tls-port"),
        prometheus_port=off_host_port(prometheus_port, "--prometheus-port"),
    )
    try:
        code = asyncio.run(run_agent(config))
    except AgentError as exc:
        raise CliError(str(exc)) from exc
    raise typer.Exit(code)


# "In sync" is about config; a changed security policy reaches connections opened before
# it only as they drain (docs/security.md#when-a-policy-change-takes-effect).
DRAIN_NOTE = ("note: in sync means the proxies run the latest config; connections opened "
              "before a security policy change (authorization, JWT, mTLS) keep the old rules "
              "until they drain, within each agent's --drain-seconds (2 s by default)")


@app.command()
def check(server: Server = None,
          kubernetes: Annotated[bool, typer.Option(
              "--kubernetes", help="check the installation in the cluster instead "
              "(docs/kubernetes.md#checking-the-installation)")] = False,
          kubeconfig: Annotated[Path | None, typer.Option(
              "--kubeconfig", help="with --kubernetes; default: $KUBECONFIG, else "
              "~/.kube/config")] = None) -> None:
    """Is the control plane up, and is every proxy connected and on the latest config?
    With --kubernetes: is the installation in the cluster whole?"""
    if kubernetes:
        from gossamer.cli.k8s import check_kubernetes

        check_kubernetes(kubeconfig, server)
        return
    api = Api(server)
    health = api.call("GET", "/healthz")
    role = ", leader" if health.get("leader") else ", not the leader"
    print(f"control plane: ok (version {health['version']}, store revision "
          f"{health['revision']}{role})")
    store_down = health.get("store_available") is False
    if store_down:
        print("store: UNAVAILABLE: this replica serves its last config and refuses writes "
              "(503) until the store is back")
    problems = 0
    proxies = api.call("GET", "/api/v1/proxies")
    for p in proxies:
        state = "connected" if p.get("connected") else "DISCONNECTED"
        synced = "in sync" if p.get("synced") else "NOT in sync"
        line = f"proxy {p['node_id']}: {state}, {synced}"
        if p.get("last_nack"):
            nack = p["last_nack"]
            line += f"; last NACK {nack.get('type')} version {nack.get('version')}: " \
                    f"{nack.get('error')}"
        if p.get("rejected"):
            line += f"; config withheld: {p['rejected']}"
        problems += _unhealthy(p)
        print(line)
    if not [p for p in proxies if p.get("connected")]:
        print("no proxies connected")
    else:
        print(DRAIN_NOTE)
    if store_down:
        raise CliError("the control plane's store is unavailable")
    if problems:
        raise CliError(f"{problems} proxy(ies) not healthy")


def _unhealthy(proxy: dict[str, Any]) -> bool:
    """Not in sync, config withheld, or disconnected while a Workload still names it.
    A proxy whose workload was deregistered (its agent stopped it, or a client-only
    proxy, never registered) is listed but not counted: stopping one is normal."""
    if not proxy.get("connected"):
        return bool(proxy.get("registered", True))
    return not proxy.get("synced") or bool(proxy.get("rejected"))


@app.command("proxy-config")
def proxy_config(
    workload: str,
    section: Annotated[str, typer.Argument(help="clusters|listeners|routes|endpoints|all")] = "all",
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    server: Server = None,
) -> None:
    """Show the config a sidecar's Envoy is running (the control plane reads its admin)."""
    from gossamer.cli.proxyadmin import config_dump

    print(json.dumps(config_dump(server, workload, namespace, section), indent=2))
