"""`gossamer k8s`: what Gossamer looks like to a Kubernetes cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gossamer.cli.app import app
from gossamer.k8s.crds import crds_yaml
from gossamer.k8s.inject import InjectConfig

k8s = typer.Typer(no_args_is_help=True, help="Kubernetes: the CRDs of Gossamer's kinds.")
app.add_typer(k8s, name="k8s")


@k8s.command("crds")
def crds() -> None:
    """Print the CustomResourceDefinitions of Gossamer's kinds as one YAML stream."""
    print(crds_yaml(), end="")


@app.command("inject")
def inject(
    file: Annotated[Path, typer.Option("--file", "-f", help="YAML of Pods, Deployments, "
                                       "StatefulSets, DaemonSets, Jobs...; - for stdin")],
    image: Annotated[str, typer.Option("--image", help="the image of the sidecar and the "
                                       "capture init container")] = InjectConfig.image,
    control_plane: Annotated[str, typer.Option(
        "--control-plane", help="the control plane's API URL as pods reach it")
    ] = InjectConfig.control_plane,
) -> None:
    """Print the documents with Gossamer's sidecar injected, as the webhook would do
    (like `istioctl kube-inject`); other documents pass through unchanged."""
    import sys

    import yaml

    from gossamer.cli.client import CliError
    from gossamer.k8s.inject import InjectError, inject_document

    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"{file}: {exc}") from exc
    config = InjectConfig(image=image, control_plane=control_plane)
    out = []
    for i, doc in enumerate(docs, 1):
        if not isinstance(doc, dict):
            raise CliError(f"{file}: document {i} is not a mapping")
        try:
            out.append(inject_document(doc, config))
        except InjectError as exc:
            raise CliError(f"{file}: document {i}: {exc}") from exc
    print(yaml.safe_dump_all(out, sort_keys=False, width=100), end="")


@k8s.command("rbac")
def rbac() -> None:
    """Print the chart's templates/rbac.yaml, generated from the kinds the controller
    watches (least privilege)."""
    from gossamer.k8s.install import rbac_template

    print(rbac_template(), end="")


@k8s.command("smi-crds")
def smi_crds() -> None:
    """Print the chart's templates/smi-crds.yaml: the SMI kinds' CRDs (TrafficSplit,
    TrafficTarget, HTTPRouteGroup, TCPRoute), generated from Gossamer's SMI models."""
    from gossamer.k8s.install import smi_crds_template

    print(smi_crds_template(), end="")


def kubeconfig_path(kubeconfig: Path | None) -> Path:
    import os

    if kubeconfig is not None:
        return kubeconfig
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(env) if env else Path.home() / ".kube" / "config"


Kubeconfig = Annotated[Path | None, typer.Option(
    "--kubeconfig", help="default: $KUBECONFIG, else ~/.kube/config")]


@app.command("install")
def install(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the manifests instead "
                                          "of applying them")] = False,
    values_files: Annotated[list[Path] | None, typer.Option(
        "--values", "-f", help="a values file (as helm's -f); repeatable")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="key.path=value (as helm's --set); repeatable")] = None,
    chart: Annotated[Path | None, typer.Option(
        "--chart", help="the chart directory; default: deploy/helm/gossamer of this "
        "checkout")] = None,
    skip_crds: Annotated[bool, typer.Option("--skip-crds")] = False,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Render the Helm chart as `helm install` would, and apply it to the
    kubeconfig's cluster in gossamer-system (or print it with --dry-run)."""
    import asyncio

    import yaml

    from gossamer.cli.client import CliError
    from gossamer.k8s.install import InstallError, chart_dir, generated_ca, render, values

    where = chart or chart_dir()
    if not (where / "Chart.yaml").is_file():
        raise CliError(f"no chart at {where} (pass --chart DIR)")
    try:
        docs = render(where, generated_ca(values(where, values_files or [], sets or [])),
                      crds=not skip_crds)
    except InstallError as exc:
        raise CliError(str(exc)) from exc
    if dry_run:
        print(yaml.safe_dump_all(docs, sort_keys=False, width=100), end="")
        return
    meta = yaml.safe_load((where / "Chart.yaml").read_text())
    asyncio.run(_apply(docs, kubeconfig_path(kubeconfig), str(meta.get("name", "")),
                       str(meta.get("version", ""))))


async def _apply(docs: list[dict[str, Any]], kubeconfig: Path, chart: str,
                 version: str) -> None:
    from gossamer.cli.client import CliError
    from gossamer.k8s import release
    from gossamer.k8s.client import KubeApi, KubeError
    from gossamer.k8s.install import NAMESPACE

    try:
        api = KubeApi.connect(kubeconfig)
    except KubeError as exc:
        raise CliError(str(exc)) from exc

    async def apply(doc: dict[str, Any]) -> None:
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        print(f"{doc['kind']}/{name} {await api.apply(doc)}")

    try:
        await apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        done = await release.install(api, docs, NAMESPACE, chart, version, apply, print)
        print(f"release {chart} {version}, revision {done.revision}: "
              f"{len(done.objects)} objects (ConfigMap {NAMESPACE}/{release.RECORD})")
    except (KubeError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        await api.close()


@app.command("uninstall")
def uninstall(kubeconfig: Kubeconfig = None) -> None:
    """Delete what the last `gossamer install` applied, as its release record lists
    (CRDs and the namespace stay, as with `helm uninstall`)."""
    import asyncio

    from gossamer.cli.client import CliError
    from gossamer.k8s import release
    from gossamer.k8s.client import KubeApi, KubeError
    from gossamer.k8s.install import NAMESPACE

    async def run() -> release.Release | None:
        api = KubeApi.connect(kubeconfig_path(kubeconfig))
        try:
            return await release.uninstall(api, NAMESPACE, print)
        finally:
            await api.close()

    try:
        old = asyncio.run(run())
    except (KubeError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if old is None:
        raise CliError(f"no release record (ConfigMap {NAMESPACE}/{release.RECORD}): "
                       "nothing was installed with `gossamer install` here")
    print(f"release {old.chart} {old.version} (revision {old.revision}) uninstalled; "
          "its CustomResourceDefinitions and the namespace are kept")


def check_kubernetes(kubeconfig: Path | None, server: str | None) -> None:
    """`gossamer check --kubernetes`: one line per check; exit 1 on any ✘."""
    import asyncio

    from gossamer.cli.client import CliError
    from gossamer.k8s.check import Finding, check
    from gossamer.k8s.client import KubeApi, KubeError

    async def run() -> list[Finding]:
        api = KubeApi.connect(kubeconfig_path(kubeconfig))
        found = []
        try:
            async for finding in check(api, server=server):
                print(finding.line(), flush=True)
                found.append(finding)
        finally:
            await api.close()
        return found

    try:
        findings = asyncio.run(run())
    except KubeError as exc:
        raise CliError(f"kubernetes: {exc}") from exc
    failed = sum(f.ok is False for f in findings)
    if failed:
        raise CliError(f"{failed} check(s) failed")
    print("Status check results are ✔")
