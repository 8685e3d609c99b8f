"""A namespace's labels, for the label selectors that pick namespaces (a Gateway
listener's `allowedRoutes.namespaces.from: Selector`).

Namespaces exist in Gossamer as soon as a resource names one; this kind only gives
one labels. As on Kubernetes, every namespace carries the label
`kubernetes.io/metadata.name: NAME` whether or not a Namespace resource exists
(`namespace_labels`). On Kubernetes the controller converts the cluster's Namespaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar, Literal

from pydantic import model_validator

from gossamer.contract.checks import DNS_LABEL
from gossamer.model.meta import Resource
from gossamer.model.policy import MESH_ROOT_NAMESPACE

NAME_LABEL = "kubernetes.io/metadata.name"


class Namespace(Resource):
    KIND = "Namespace"
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)
    # Cluster-wide: stored in the mesh root namespace, like the Mesh.
    CLUSTER_NAMESPACE: ClassVar[str | None] = MESH_ROOT_NAMESPACE
    kind: Literal["Namespace"] = "Namespace"

    @model_validator(mode="after")
    def _name(self) -> Namespace:
        if not DNS_LABEL.match(self.metadata.name) or len(self.metadata.name) > 63:
            raise ValueError("metadata.name: a namespace name is a DNS label: lowercase "
                             "letters, digits and '-', at most 63")
        if self.metadata.namespace != MESH_ROOT_NAMESPACE:
            raise ValueError("metadata.namespace: a Namespace is cluster-wide: leave the "
                             f"namespace out (it is stored in {MESH_ROOT_NAMESPACE!r})")
        return self


def namespace_labels(namespaces: Iterable[Namespace]) -> Mapping[str, Mapping[str, str]]:
    """The labels of each namespace a Namespace resource gives labels to."""
    return {n.metadata.name: {**n.metadata.labels, NAME_LABEL: n.metadata.name}
            for n in namespaces}


def labels_of(labels: Mapping[str, Mapping[str, str]], namespace: str) -> Mapping[str, str]:
    return labels.get(namespace) or {NAME_LABEL: namespace}
