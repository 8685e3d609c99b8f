"""`gossamer k8s`: what Gossamer looks like to a Kubernetes cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
