"""The local-mode file: mesh resources plus `Process` documents saying how to
start each service's instances on this machine."""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from gossamer.contract.checks import check_labels
from gossamer.contract.protocol import Protocol
from gossamer.model import FieldError, InvalidResource, Resource, parse_document
from gossamer.model.limits import text_errors
from gossamer.model.meta import ObjectMeta, ServiceName, Strict
from gossamer.model.registry import _field_errors, load_yaml_documents

LOCAL_API_VERSION = "local.gossamer.dev/v1alpha1"
PLACEHOLDERS = frozenset({"port", "python", "name", "replica", "service"})
# An `upstreams` entry: [NS/]SVC[:PORT][=LOCALPORT] (as `gossamer proxy --upstream`).
_UPSTREAM = re.compile(r"^(?P<target>(?:[a-z0-9-]+/)?[a-z0-9-]+(?::\d+)?)(?:=(?P<local>\d+))?$")
# `{upstream[ENTRY]}`: the local port of the instance's upstream ENTRY (without =LOCALPORT).
_UPSTREAM_FIELD = re.compile(r"^upstream\[(?P<target>[^\]]+)\]$")


def upstream_target(entry: str) -> tuple[str, int | None]:
    """An `upstreams` entry -> (the entry without `=LOCALPORT`, LOCALPORT or None)."""
    m = _UPSTREAM.match(entry)
    if m is None:
        raise ValueError(f"{entry!r}: expected [NAMESPACE/]SERVICE[:PORT][=LOCALPORT]")
    local = m.group("local")
    return m.group("target"), int(local) if local is not None else None


def _check_placeholders(part: str, targets: set[str]) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(part) if f is not None}
    except ValueError as exc:
        raise ValueError(f"{part!r}: {exc} (write {{{{ or }}}} for a literal brace)") from exc
    for f in sorted(fields):
        m = _UPSTREAM_FIELD.match(f)
        if f in PLACEHOLDERS or (m is not None and m.group("target") in targets):
            continue
        known = [f"{{{p}}}" for p in sorted(PLACEHOLDERS)]
        known += [f"{{upstream[{t}]}}" for t in sorted(targets)]
        raise ValueError(f"{part!r}: unknown placeholder {{{f}}}; use " + ", ".join(known))


class ProcessSpec(Strict):
    service: ServiceName
    command: list[str] = Field(min_length=1)
    replicas: int = Field(default=1, ge=0, le=20, strict=True)
    labels: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    # None: the protocol of the Service's port.
    protocol: Protocol | None = None
    probe_path: str | None = Field(default=None, alias="probePath")
    upstreams: list[str] = Field(default_factory=list)
    # False: the app serves nothing (a client such as a load generator); its
    # sidecar carries only outbound calls and it is not registered.
    inbound: bool = Field(default=True, strict=True)
    # Show the app's output in the terminal instead of its log file.
    console: bool = Field(default=False, strict=True)

    @field_validator("upstreams")
    @classmethod
    def _upstreams(cls, v: list[str]) -> list[str]:
        for entry in v:
            upstream_target(entry)
        return v

    @model_validator(mode="after")
    def _placeholders_and_ports(self) -> ProcessSpec:
        """`command` and `env` values take the same placeholders. A fixed upstream local
        port cannot serve several instances: each instance's sidecar binds it, and the
        kernel then splits one instance's calls between the sidecars, so edges, tap
        and explain would blame the wrong instance."""
        targets = {upstream_target(e)[0] for e in self.upstreams}
        for where, parts in (("command", self.command), ("env", list(self.env.values()))):
            for part in parts:
                try:
                    _check_placeholders(part, targets)
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from exc
        if self.replicas > 1:
            for i, entry in enumerate(self.upstreams):
                target, local = upstream_target(entry)
                if local is not None:
                    raise ValueError(
                        f"upstreams[{i}]: {entry!r} fixes local port {local}, which "
                        f"{self.replicas} replicas cannot all bind; write {target!r} (each "
                        f"instance gets a free port: {{upstream[{target}]}} in command and "
                        f"env, and $GOSSAMER_UPSTREAM_* in the app's environment)")
        return self

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)


class Process(Strict):
    api_version: Literal["local.gossamer.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Process"]
    metadata: ObjectMeta
    spec: ProcessSpec


class LocalApp:
    def __init__(self, resources: list[Resource], processes: list[Process]) -> None:
        self.resources = resources
        self.processes = processes


def _process(doc: dict[str, object]) -> Process:
    bad_text = text_errors(doc)
    if bad_text:
        raise InvalidResource(bad_text, kind="Process")
    try:
        return Process.model_validate(doc)
    except ValidationError as exc:
        raise InvalidResource(_field_errors(exc), kind="Process") from exc


def load_local_app(text: str) -> LocalApp:
    docs = load_yaml_documents(text)
    resources, processes = [], []
    for i, doc in enumerate(docs):
        if isinstance(doc, dict) and doc.get("kind") == "Process":
            try:
                processes.append(_process(doc))
            except InvalidResource as exc:
                errors = [FieldError(f"document {i + 1}: {e.path}", e.reason)
                          for e in exc.errors]
                raise InvalidResource(errors, kind="Process") from exc
        else:
            resources.append(parse_document(doc))
    if not processes:
        raise InvalidResource([FieldError("", "the file has no Process documents to run")])
    _distinct_local_ports(processes)
    return LocalApp(resources, processes)


def _distinct_local_ports(processes: list[Process]) -> None:
    """Two instances cannot share a fixed upstream local port (see ProcessSpec)."""
    owner: dict[int, str] = {}
    for proc in processes:
        for i, entry in enumerate(proc.spec.upstreams):
            _, local = upstream_target(entry)
            if local is None:
                continue
            if local in owner:
                raise InvalidResource([FieldError(
                    f"spec.upstreams[{i}]",
                    f"local port {local} is already {owner[local]}'s; each instance needs "
                    "its own (leave =LOCALPORT out for a free one)")],
                    kind="Process", name=proc.metadata.name)
            owner[local] = f"Process {proc.metadata.name!r}"

