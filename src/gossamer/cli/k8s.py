"""`gossamer k8s`: what Gossamer looks like to a Kubernetes cluster."""

from __future__ import annotations

import typer

from gossamer.cli.app import app
from gossamer.k8s.crds import crds_yaml

k8s = typer.Typer(no_args_is_help=True, help="Kubernetes: the CRDs of Gossamer's kinds.")
app.add_typer(k8s, name="k8s")


@k8s.command("crds")
def crds() -> None:
    """Print the CustomResourceDefinitions of Gossamer's kinds as one YAML stream."""
    print(crds_yaml(), end="")
