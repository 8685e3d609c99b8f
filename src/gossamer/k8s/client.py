"""The Kubernetes API edge: list, watch, status, Leases and TokenReviews, through
lightkube. Everything else in `k8s/` sees plain JSON data and one exception type,
`KubeError` (`Gone` when a watch's resourceVersion is too old: relist)."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core.exceptions import ConfigError
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import (
    Namespace,
    Node,
    Pod,
    Secret,
    Service,
    ServiceAccount,
)
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from gossamer.k8s.crds import mesh_kinds, plural
from gossamer.model.meta import GATEWAY_API_VERSION, GATEWAY_GROUP
from gossamer.model.secret import TLS_TYPE
from gossamer.model.smi import (
    ACCESS_API_VERSION,
    SMI_TCPROUTE,
    SPECS_API_VERSION,
    SPLIT_API_VERSION,
)
from gossamer.model.tcproute import TCPROUTE_API_VERSION
from gossamer.model.tlsroute import TLSROUTE_API_VERSION


class KubeError(Exception):
    """The Kubernetes API refused or could not be reached."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class Gone(KubeError):
    """410: the watch's resourceVersion is older than the API server keeps; relist."""


@dataclass(frozen=True)
class Watched:
    """One kind the controller lists and watches. `key`: the core kind's name, or
    `group/Kind` for the mesh's own kinds (convert.Cluster's keys)."""

    key: str
    resource: Any  # a lightkube resource class
    namespaced: bool = True
    status: bool = False  # the controller writes its status subresource
    # A field selector the API server filters by (Secrets: only `type=kubernetes.io/tls`).
    fields: tuple[tuple[str, str], ...] = ()


def _namespaced(api_version: str, kind: str, plural_name: str) -> Watched:
    group, version = api_version.split("/")
    res = create_namespaced_resource(group, version, kind, plural_name)
    return Watched(f"{group}/{kind}", res, status=True)


def _mesh() -> list[Watched]:
    out = []
    for cls in mesh_kinds():
        group, version = cls.API_VERSIONS[0].split("/")
        if cls.CLUSTER_NAMESPACE:
            res = create_global_resource(group, version, cls.KIND, plural(cls.KIND))
            out.append(Watched(f"{group}/{cls.KIND}", res, namespaced=False, status=True))
        else:
            out.append(_namespaced(cls.API_VERSIONS[0], cls.KIND, plural(cls.KIND)))
    return out


CORE = [Watched("Namespace", Namespace, namespaced=False), Watched("Node", Node, namespaced=False),
        Watched("Service", Service), Watched("EndpointSlice", EndpointSlice),
        Watched("Pod", Pod), Watched("ServiceAccount", ServiceAccount)]
ROUTES = [_namespaced(f"{GATEWAY_GROUP}/v1", "HTTPRoute", "httproutes"),
          _namespaced(f"{GATEWAY_GROUP}/v1", "GRPCRoute", "grpcroutes"),
          _namespaced(TCPROUTE_API_VERSION, "TCPRoute", "tcproutes"),
          # Read only: a ReferenceGrant has no status.
          Watched(f"{GATEWAY_GROUP}/ReferenceGrant", create_namespaced_resource(
              GATEWAY_GROUP, "v1beta1", "ReferenceGrant", "referencegrants"))]
SMI = [_namespaced(SPLIT_API_VERSION, "TrafficSplit", "trafficsplits"),
       _namespaced(ACCESS_API_VERSION, "TrafficTarget", "traffictargets"),
       _namespaced(SPECS_API_VERSION, "HTTPRouteGroup", "httproutegroups"),
       _namespaced(SPECS_API_VERSION, SMI_TCPROUTE.split(".", 1)[0], "tcproutes")]
# The edge (docs/gateways.md): Gateways, their TLS routes, and the TLS Secrets their
# listeners name (only TLS Secrets are read; convert.py keeps only the named ones).
EDGE = [_namespaced(GATEWAY_API_VERSION, "Gateway", "gateways"),
        _namespaced(TLSROUTE_API_VERSION, "TLSRoute", "tlsroutes"),
        Watched("Secret", Secret, fields=(("type", TLS_TYPE),))]
WATCHED: list[Watched] = [*CORE, *_mesh(), *ROUTES, *SMI, *EDGE]


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """lightkube's and httpx's exceptions as this edge's one type."""
    try:
        yield
    except ApiError as exc:
        code = int(exc.status.code or 0)
        cls = Gone if code == 410 else KubeError
        raise cls(f"{what}: {code} {exc.status.reason or ''} {exc.status.message or ''}"
                  .strip(), code) from exc
    except httpx2.HTTPError as exc:
        raise KubeError(f"{what}: {exc}") from exc


class KubeApi:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, kubeconfig: Path | None = None) -> KubeApi:
        """With a kubeconfig file, else the pod's own ServiceAccount (in-cluster)."""
        try:
            config = (KubeConfig.from_file(kubeconfig) if kubeconfig is not None
                      else KubeConfig.from_service_account())
        except (ConfigError, OSError) as exc:
            raise KubeError(f"no Kubernetes configuration: {exc}") from exc
        return cls(AsyncClient(config=config, trust_env=False, field_manager="gossamer"))

    async def list(self, w: Watched) -> tuple[list[dict[str, Any]], str]:
        """Every object of the kind (all namespaces) and the list's resourceVersion."""
        with _errors(f"list {w.key}"):
            fields: dict[str, Any] | None = dict(w.fields) or None
            found = (self.client.list(w.resource, namespace="*", fields=fields)
                     if w.namespaced else self.client.list(w.resource, fields=fields))
            items = [_plain(obj) async for obj in found]
            return items, found.resourceVersion

    async def watch(self, w: Watched, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Events after `version`, following the server's reconnects; raises Gone when
        `version` is too old, KubeError on any other failure."""
        kwargs: dict[str, Any] = {"namespace": "*"} if w.namespaced else {}
        if w.fields:
            kwargs["fields"] = dict(w.fields)
        with _errors(f"watch {w.key}"):
            async for kind, obj in self.client.watch(w.resource, resource_version=version,
                                                      server_timeout=300, **kwargs):
                yield kind, _plain(obj)

    async def patch_status(self, w: Watched, namespace: str, name: str,
                           status: dict[str, Any]) -> None:
        with _errors(f"status of {w.key} {namespace}/{name}"):
            await self.client.patch(w.resource.Status, name, {"status": status},
                                    namespace=namespace or None,
                                    patch_type=PatchType.MERGE)

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            with _errors(f"get Lease {namespace}/{name}"):
                return _plain(await self.client.get(Lease, name, namespace=namespace))
        except KubeError as exc:
            if exc.code == 404:
                return None
            raise

    async def write_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        """Create (no resourceVersion) or replace (its resourceVersion a precondition:
        409 when another holder wrote first)."""
        meta = lease["metadata"]
        with _errors(f"write Lease {meta['namespace']}/{meta['name']}"):
            obj = cast(Lease, Lease.from_dict(lease))
            if meta.get("resourceVersion"):
                return _plain(await self.client.replace(obj))
            return _plain(await self.client.create(obj))

    async def review_token(self, token: str, audience: str) -> dict[str, Any]:
        """The TokenReview's status: `authenticated`, `user.username`, `audiences`."""
        review = cast(TokenReview, TokenReview.from_dict({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]}}))
        with _errors("TokenReview"):
            done = await self.client.create(review)
        return _plain(done).get("status") or {}

    async def apply(self, obj: dict[str, Any]) -> str:
        """Create the object, or merge-patch the one that exists (as `kubectl apply`
        without its last-applied bookkeeping): "created" or "configured"."""
        from lightkube import codecs
        from lightkube.core.exceptions import LoadResourceError

        meta = obj.get("metadata") or {}
        what = f"{obj.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}".replace(
            " /", " ")
        try:
            res = codecs.from_dict(obj)
        except LoadResourceError as exc:
            raise KubeError(f"{what}: {exc}") from exc
        try:
            with _errors(f"create {what}"):
                await self.client.create(res)
            return "created"
        except KubeError as exc:
            if exc.code != 409:
                raise
        with _errors(f"patch {what}"):
            await self.client.patch(cast(Any, type(res)), meta["name"], obj,
                                    namespace=meta.get("namespace"),
                                    patch_type=PatchType.MERGE)
        return "configured"

    async def delete(self, api_version: str, kind: str, name: str,
                     namespace: str | None = None) -> bool:
        """Delete one object of a kind lightkube knows; False when it was not there."""
        from lightkube.core.exceptions import LoadResourceError
        from lightkube.core.resource_registry import resource_registry

        what = f"{kind} {namespace + '/' if namespace else ''}{name}"
        try:
            res = resource_registry.load(api_version, kind)
        except LoadResourceError as exc:
            raise KubeError(f"delete {what}: {exc}") from exc
        if res is None:
            raise KubeError(f"delete {what}: unknown kind {api_version} {kind}")
        try:
            with _errors(f"delete {what}"):
                await self.client.delete(cast(Any, res), name, namespace=namespace)
        except KubeError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    async def get(self, resource: Any, name: str, namespace: str | None = None
                  ) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        try:
            with _errors(f"get {resource.__name__} {name}"):
                return _plain(await self.client.get(resource, name, namespace=namespace))
        except KubeError as exc:
            if exc.code == 404:
                return None
            raise

    async def list_all(self, resource: Any, namespaced: bool = True
                       ) -> builtins.list[dict[str, Any]]:
        with _errors(f"list {resource.__name__}"):
            found = (self.client.list(resource, namespace="*") if namespaced
                     else self.client.list(resource))
            return [_plain(obj) async for obj in found]

    async def may(self, user: str, verb: str, group: str, resource: str,
                  namespace: str = "", subresource: str = "") -> bool:
        """A SubjectAccessReview: may `user` do this (RBAC as the API server decides)?"""
        from lightkube.resources.authorization_v1 import SubjectAccessReview

        attrs = {"verb": verb, "group": group, "resource": resource}
        if namespace:
            attrs["namespace"] = namespace
        if subresource:
            attrs["subresource"] = subresource
        review = cast(SubjectAccessReview, SubjectAccessReview.from_dict({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "resourceAttributes": attrs}}))
        with _errors("SubjectAccessReview"):
            done = _plain(await self.client.create(review))
        return bool((done.get("status") or {}).get("allowed"))

    async def close(self) -> None:
        await self.client.close()


def _plain(obj: Any) -> dict[str, Any]:
    out = obj.to_dict()
    assert isinstance(out, dict)
    return out
