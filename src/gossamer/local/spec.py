"""The local-mode file: mesh resources plus `Process` documents saying how to
start each service's instances on this machine."""

from __future__ import annotations

import string
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from gossamer.model import FieldError, InvalidResource, Resource, parse_document
from gossamer.model.limits import text_errors
from gossamer.model.meta import ObjectMeta, ServiceName, Strict, check_labels
from gossamer.model.registry import _field_errors, load_yaml_documents
from gossamer.model.service import Protocol

LOCAL_API_VERSION = "local.gossamer.dev/v1alpha1"
PLACEHOLDERS = frozenset({"port", "python", "name", "replica", "service"})


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

    @field_validator("command")
    @classmethod
    def _placeholders(cls, v: list[str]) -> list[str]:
        for part in v:
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(part) if f is not None}
            except ValueError as exc:
                raise ValueError(
                    f"{part!r}: {exc} (write {{{{ or }}}} for a literal brace)") from exc
            unknown = fields - PLACEHOLDERS
            if unknown:
                raise ValueError(f"{part!r}: unknown placeholder {{{sorted(unknown)[0]}}}; use "
                                 + ", ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS)))
        return v

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
    return LocalApp(resources, processes)
