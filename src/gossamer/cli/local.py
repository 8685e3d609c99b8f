"""`gossamer up` and `gossamer demo`."""

from __future__ import annotations

import signal
import sys
import threading
from importlib import resources as pkg
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from gossamer.cli.app import app, read_text
from gossamer.cli.client import CliError
from gossamer.local.spec import LocalApp, Process, load_local_app
from gossamer.model import Resource, parse_document
from gossamer.model.registry import load_yaml_documents
from gossamer.store.files import private_dir

if TYPE_CHECKING:  # imported on use: it loads httpx, which `control-plane` has no use for
    from gossamer.local.up import Instance, LocalRun

EXAMPLES = ("canary-50-50.yaml", "header-to-v2.yaml", "all-v1.yaml")
StateDir = Annotated[Path, typer.Option("--state-dir", help="store, logs and sidecar files")]
Isolate = Annotated[bool, typer.Option(
    "--isolate", help="each instance in its own network namespace, its traffic captured "
                      "(root)")]


def ingress_resources(port: int) -> list[Resource]:
    """The demo's ingress Gateway (demo/ingress.yaml) with its listener on `port`."""
    docs = load_yaml_documents(pkg.files("gossamer.demo").joinpath("ingress.yaml").read_text())
    docs[0]["spec"]["listeners"][0]["port"] = port
    return [parse_document(d) for d in docs]


def _run(local: LocalApp, state_dir: Path, api_port: int, xds_port: int,
         extra_help: str = "", isolate: bool = False) -> None:
    from gossamer.local.up import LocalRun, UpError

    _can_isolate(isolate)
    run = LocalRun(local, state_dir.resolve(), api_port=api_port, xds_port=xds_port,
                   isolate=isolate)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        print(f"gossamer: starting the control plane (state in {run.state_dir})", flush=True)
        run.start_control_plane()
        run.apply_resources()
        xds = run.hosts.bridge_address if run.hosts is not None else "127.0.0.1"
        print(f"gossamer: control plane API {run.server}, xDS {xds}:{run.xds_port}",
              flush=True)
        run.start_processes(stop=stop)
        _print_summary(run, extra_help)
        while not stop.wait(0.5):
            dead = [c for c in run.children if c.popen.poll() is not None and c.role != "done"]
            for c in dead:
                print(f"gossamer: {c.name} exited with {c.popen.returncode}"
                      + (f"; see {c.log}" if c.log else ""), flush=True)
                c.role = "done"
    except UpError as exc:
        raise CliError(str(exc)) from exc
    finally:
        print("gossamer: stopping (draining sidecars, then the control plane)...", flush=True)
        try:
            run.stop()
        except UpError as exc:
            raise CliError(str(exc)) from exc
        print("gossamer: stopped", flush=True)


def _can_isolate(isolate: bool) -> None:
    """Refuse --isolate without root in one line, before anything is written."""
    from gossamer.local.netns import missing

    if isolate and (reason := missing()) is not None:
        raise CliError(f"--isolate: {reason} (run as root, or without --isolate)")


def instance_lines(instances: list[Instance]) -> list[str]:
    """One line per instance, pure clients (`inbound: false`) included: their outbound
    proxy and upstream ports are where their calls go."""
    lines = []
    for i in instances:
        if not i.outbound_port:  # a Gateway's replica: its listeners are the Gateway's
            lines.append(f"  {i.workload:<16} gateway {i.service:<12} envoy admin "
                         f"http://127.0.0.1:{i.admin_port}")
            continue
        inbound = f"http://{i.address}:{i.inbound_port}" if i.inbound_port else "none (client)"
        line = (f"  {i.workload:<16} service {i.service:<12} inbound {inbound:<22}  "
                f"outbound proxy http://127.0.0.1:{i.outbound_port}  "
                f"envoy admin http://127.0.0.1:{i.admin_port}")
        for target, port in i.upstreams.items():
            line += f"  upstream {target} 127.0.0.1:{port}"
        lines.append(line)
    return lines


def _print_summary(run: LocalRun, extra_help: str) -> None:
    print("\ngossamer: every instance is up and meshed:", flush=True)
    for line in instance_lines(run.instances):
        print(line)
    ca_file = (f"\n  export GOSSAMER_CA_FILE={run.bundle_file}" if run.hosts is not None
               else "")
    print(f"""
Where to look (in another terminal):
  export GOSSAMER_SERVER={run.server}
  export GOSSAMER_TOKEN=$(cat {run.admin_token_file}){ca_file}
  gossamer check                      # every proxy connected and in sync?
  gossamer get workloads              # instances and their health
  gossamer proxy-config {run.instances[0].workload if run.instances else 'WORKLOAD'} routes
  logs: {run.state_dir / 'logs'}
{extra_help}Press Ctrl-C to stop everything.
""", flush=True)


@app.command()
def up(file: Annotated[str, typer.Option("--file", "-f", help="the application file")],
       state_dir: StateDir = Path(".gossamer/up"),
       api_port: Annotated[int, typer.Option("--api-port")] = 0,
       xds_port: Annotated[int, typer.Option("--xds-port")] = 0,
       isolate: Isolate = False) -> None:
    """Run the control plane and every Process of FILE, each beside its sidecar."""
    _run(load_local_app(read_text(file)), state_dir, api_port, xds_port, isolate=isolate)


@app.command()
def demo(state_dir: StateDir = Path(".gossamer/demo"),
         rate: Annotated[float, typer.Option("--rate", help="load, requests/s")] = 5.0,
         duration: Annotated[float, typer.Option("--duration", help="load, seconds")] = 1800.0,
         api_port: Annotated[int, typer.Option("--api-port")] = 0,
         xds_port: Annotated[int, typer.Option("--xds-port")] = 0,
         isolate: Isolate = False,
         ingress_port: Annotated[int, typer.Option(
             "--ingress-port", help="the ingress gateway's HTTP port on 127.0.0.1; 0: no "
             "gateway")] = 18080) -> None:
    """Run the demo: frontend -> catalog (v1, v2) -> inventory, with bounded load, and
    an ingress gateway to frontend for clients outside the mesh."""
    _can_isolate(isolate)
    text = pkg.files("gossamer.demo").joinpath("demo.yaml").read_text()
    local = load_local_app(text)
    ingress = ""
    if ingress_port:
        local.resources += ingress_resources(ingress_port)
        ingress = ("From outside the mesh, through the ingress gateway:\n"
                   f"  curl http://127.0.0.1:{ingress_port}/\n")
    local.processes.append(Process.model_validate({
        "apiVersion": "local.gossamer.dev/v1alpha1", "kind": "Process",
        "metadata": {"name": "loadgen"},
        "spec": {"service": "loadgen", "console": True, "inbound": False, "command": [
            sys.executable, "-m", "gossamer.demo.load", "--url", "http://frontend/",
            "--rate", str(rate), "--duration", str(duration)]},
    }))
    examples = Path("examples/demo")
    if not examples.is_dir():  # not run from a checkout: write the examples here
        private_dir(state_dir)
        examples = (state_dir / "examples").resolve()
        examples.mkdir(exist_ok=True)
        for name in EXAMPLES:
            text = pkg.files("gossamer.demo").joinpath(name).read_text()
            (examples / name).write_text(text)
    _run(local, state_dir, api_port, xds_port, extra_help=ingress + (
        "Shift traffic live (the load lines below show catalog v1/v2 counts):\n"
        + "".join(f"  gossamer apply -f {examples / name}\n" for name in EXAMPLES)),
        isolate=isolate)
