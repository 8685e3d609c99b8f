"""The local-mode file (Process documents) and how `gossamer up` runs each instance:
placeholders, upstream local ports, and the instances table."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossamer.cli.local import instance_lines
from gossamer.local.spec import load_local_app
from gossamer.local.up import LocalRun
from gossamer.model import InvalidResource


def process(name: str, spec: str) -> str:
    return f"""
apiVersion: local.gossamer.dev/v1alpha1
kind: Process
metadata: {{name: {name}}}
spec:
  service: {name}
{spec}
---"""


def refused(text: str) -> str:
    with pytest.raises(InvalidResource) as err:
        load_local_app(text)
    return str(err.value)


def test_a_fixed_upstream_port_with_replicas_is_refused() -> None:
    """Both instances' sidecars would bind it, and the kernel would split one
    instance's calls between them."""
    message = refused(process("web", """  replicas: 2
  upstreams: ["ratings:9080=7000"]
  command: ["app"]"""))
    assert "spec.upstreams[0]: 'ratings:9080=7000' fixes local port 7000" in message
    assert "{upstream[ratings:9080]}" in message
    load_local_app(process("web", """  replicas: 1
  upstreams: ["ratings:9080=7000"]
  command: ["app"]"""))


def test_two_processes_cannot_share_a_fixed_upstream_port() -> None:
    message = refused(process("web", """  upstreams: ["ratings=7000"]
  command: ["app"]""") + process("api", """  upstreams: ["reviews=7000"]
  command: ["app"]"""))
    assert "invalid Process 'api': spec.upstreams[0]: local port 7000 is already " \
           "Process 'web''s" in message


def test_placeholders_in_env_are_checked_like_the_command() -> None:
    message = refused(process("web", """  upstreams: ["ratings"]
  env: {RATINGS: "http://127.0.0.1:{upstream[reviews]}"}
  command: ["app"]"""))
    assert "spec.env: 'http://127.0.0.1:{upstream[reviews]}': unknown placeholder " \
           "{upstream[reviews]}" in message
    assert "{upstream[ratings]}" in message  # the ones it may use
    assert "expected [NAMESPACE/]SERVICE[:PORT][=LOCALPORT]" in refused(process(
        "web", """  upstreams: ["ratings=port"]
  command: ["app"]"""))


def test_each_instance_is_told_its_own_upstream_ports(tmp_path: Path) -> None:
    """up chooses every instance's upstream local ports itself, so the command and env
    placeholders name them, and the agent binds exactly those."""
    app = load_local_app(process("web", """  replicas: 2
  upstreams: ["ratings:9080", "data/db:5432"]
  env: {RATINGS_URL: "http://127.0.0.1:{upstream[ratings:9080]}/", DB: "{upstream[data/db:5432]}",
        WHO: "{name}"}
  command: ["app", "--ratings", "{upstream[ratings:9080]}", "--port", "{port}"]"""))
    run = LocalRun(app, tmp_path)
    [proc] = app.processes
    ports: set[int] = set()
    for replica in (0, 1):
        instance, argv, _ = run.plan_instance(proc, replica)
        rating, db = instance.upstreams["ratings:9080"], instance.upstreams["data/db:5432"]
        ports |= {rating, db}
        assert argv[argv.index("--upstream") + 1] == f"ratings:9080={rating}"
        flags = [argv[i + 1] for i, a in enumerate(argv) if a in ("--env", "--upstream")]
        assert f"data/db:5432={db}" in flags
        assert f"RATINGS_URL=http://127.0.0.1:{rating}/" in flags
        assert f"DB={db}" in flags
        assert f"WHO=web-{replica}" in flags
        command = argv[argv.index("--") + 1:]
        assert command == ["app", "--ratings", str(rating), "--port",
                           argv[argv.index("--app-port") + 1]]
    assert len(ports) == 4  # no two instances share a port


def test_the_instances_table_lists_pure_clients_with_their_ports(tmp_path: Path) -> None:
    app = load_local_app(process("loadgen", """  inbound: false
  upstreams: ["frontend"]
  command: ["app"]"""))
    [proc] = app.processes
    client, _, _ = LocalRun(app, tmp_path).plan_instance(proc, 0)
    [line] = instance_lines([client])
    assert line.split()[:5] == ["loadgen-0", "service", "loadgen", "inbound", "none"]
    assert f"outbound proxy http://127.0.0.1:{client.outbound_port}" in line
    assert f"upstream frontend 127.0.0.1:{client.upstreams['frontend']}" in line


def test_up_runs_an_egress_gateway_for_each_egress_via_and_implies_its_service(
        tmp_path: Path) -> None:
    app = load_local_app(process("shop", '  command: ["app"]') + """
apiVersion: mesh.gossamer.dev/v1alpha1
kind: ExternalService
metadata: {name: ledger}
spec:
  hosts: [ledger.bank.example]
  ports: [{port: 80, protocol: HTTP}]
  egress: {via: egress}
""")
    run = LocalRun(app, tmp_path)
    assert run.egress_gateways() == [("default", "egress")]
    instance, argv, _ = run.plan_egress_gateway("default", "egress")
    assert argv[argv.index("gateway"):argv.index("gateway") + 3] == ["gateway", "--egress",
                                                                     "--name"]
    assert argv[argv.index("--name") + 1] == "egress"
    assert argv[argv.index("--replica") + 1] == instance.workload == "egress-0"
    assert argv[argv.index("--inbound-port") + 1] == str(instance.inbound_port)
    assert instance.inbound_port  # a serving instance: up waits for it to be healthy
    [line] = instance_lines([instance])
    assert line.split()[:3] == ["egress-0", "gateway", "egress"]
    applied: list[dict[str, object]] = []
    run._call = lambda method, path, body=None: applied.append(body)  # type: ignore[method-assign]
    run.apply_resources()
    services = [d["metadata"] for d in applied if d["kind"] == "Service"]  # type: ignore[index]
    assert {"name": "egress", "namespace": "default"} in services
