"""ExternalService: a destination outside the mesh that its workloads may call.

Named after Kuma's `MeshExternalService` (Istio's `ServiceEntry` covers more: it
also adds workloads to the registry; an ExternalService only ever describes
something the mesh does not run). The sidecars learn its host names, so:

- a capturing sidecar's mesh DNS answers them with a virtual IP and its capture
  listener routes calls to them (`curl http://api.payments.example` works, and
  passes `REGISTRY_ONLY`);
- the app can speak plain HTTP (or TCP) and the sidecar speaks TLS to the external
  service (`tls.mode: ORIGINATE`), checking its certificate against `caBundle` and
  `subjectAltNames` and presenting a client certificate when one is given;
- the mesh's policies that target `kind: ExternalService` (ResiliencePolicy,
  RateLimitPolicy) apply to the calls.

Ports: `port` is what the app calls, `targetPort` where the external service
listens (`port: 80, targetPort: 443` with origination: the app calls
`http://host/`, the sidecar reaches `https://host:443/`). Protocols HTTP and GRPC
are routed by host name, TCP, TLS and HTTPS by virtual IP and port. The app speaks
TLS itself on TLS and HTTPS ports, so the sidecar cannot originate there.

Where calls go: `endpoints` (addresses or DNS names, `targetPort` on each), or
without them each host resolved by Envoy's DNS on its own cluster. Wildcard hosts
(`*.example.com`, in an ExternalService of their own, HTTP and GRPC ports) are for
capturing sidecars: the call goes where the app connected (its own DNS), on
`targetPort`, and TLS names the request's host.
"""

from __future__ import annotations

import ipaddress
from enum import Enum
from typing import Annotated, Literal

from cryptography import x509
from pydantic import AfterValidator, Field, field_validator, model_validator

from gossamer.contract.checks import DNS_LABEL
from gossamer.model.duration import parse_duration_ms
from gossamer.model.meta import DNS_SUBDOMAIN, Resource, Strict
from gossamer.model.service import check_virtual_ip

MAX_PEM = 64 * 1024


class ExternalProtocol(str, Enum):
    HTTP = "HTTP"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    GRPC = "GRPC"

    @property
    def by_host(self) -> bool:
        """Routed by the request's Host (an HTTP connection manager on the sidecar)."""
        return self in (ExternalProtocol.HTTP, ExternalProtocol.GRPC)

    @property
    def app_speaks_tls(self) -> bool:
        return self in (ExternalProtocol.HTTPS, ExternalProtocol.TLS)


def check_host_name(v: str) -> str:
    """A DNS name, or `*.` and one: the names an external service answers to."""
    name = v[2:] if v.startswith("*.") else v
    if len(v) > 253 or not DNS_SUBDOMAIN.match(name) or "." not in name:
        raise ValueError(f"{v!r} is not a host name: lowercase DNS labels joined by '.' "
                         "(at least two), optionally after '*.' (a wildcard)")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return v
    raise ValueError(f"{v!r} is an IP address: name the host, and give its addresses "
                     "under endpoints")


def _check_duration(v: str) -> str:
    parse_duration_ms(v)
    return v


Duration = Annotated[str, AfterValidator(_check_duration)]


class ExternalPort(Strict):
    port: int = Field(ge=1, le=65535, strict=True)
    protocol: ExternalProtocol
    # Where the external service listens; None: `port`.
    target_port: int | None = Field(default=None, alias="targetPort", ge=1, le=65535,
                                    strict=True)
    name: str | None = Field(default=None, max_length=63)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not DNS_LABEL.match(v):
            raise ValueError("must be a DNS label: lowercase letters, digits and '-'")
        return v

    @property
    def upstream_port(self) -> int:
        return self.target_port or self.port


def _check_endpoint(v: str) -> str:
    try:
        ipaddress.IPv4Address(v)
        return v
    except ValueError:
        pass
    if len(v) > 253 or not DNS_SUBDOMAIN.match(v):
        raise ValueError(f"{v!r} is neither an IPv4 address nor a DNS name")
    return v


def _check_pem(v: str) -> str:
    if len(v) > MAX_PEM:
        raise ValueError(f"at most {MAX_PEM} characters")
    try:
        certs = x509.load_pem_x509_certificates(v.encode())
    except ValueError as exc:
        raise ValueError("not PEM certificates (-----BEGIN CERTIFICATE-----...)") from exc
    if not certs:
        raise ValueError("holds no certificate")
    return v


def _check_path(v: str) -> str:
    if not v.startswith("/") or "\x00" in v or len(v) > 1024:
        raise ValueError(f"{v!r}: must be an absolute path (read on the sidecar's host)")
    return v


Pem = Annotated[str, AfterValidator(_check_pem)]
Path = Annotated[str, AfterValidator(_check_path)]


class CaBundle(Strict):
    """The CAs the external service's certificate must chain to: inline PEM, or a
    file on each sidecar's host, which its Envoy reads (and re-reads on change)."""

    pem: Pem | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> CaBundle:
        if (self.pem is None) == (self.file is None):
            raise ValueError("give exactly one of pem and file")
        return self


class ClientCertificate(Strict):
    """For mTLS to the external service: files on each sidecar's host (a private key
    is never stored in the mesh's store)."""

    certificate_file: Path = Field(alias="certificateFile")
    private_key_file: Path = Field(alias="privateKeyFile")


class TlsMode(str, Enum):
    ORIGINATE = "ORIGINATE"


class ExternalTls(Strict):
    mode: TlsMode
    ca_bundle: CaBundle = Field(alias="caBundle")
    # None: the host name the cluster resolves (the first host with endpoints).
    sni: str | None = None
    # Names the certificate must carry (DNS SANs); empty: the SNI.
    subject_alt_names: list[Annotated[str, AfterValidator(check_host_name)]] = Field(
        default_factory=list, alias="subjectAltNames", max_length=16)
    client_certificate: ClientCertificate | None = Field(default=None,
                                                         alias="clientCertificate")

    @field_validator("sni")
    @classmethod
    def _sni(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("*") or not DNS_SUBDOMAIN.match(v)):
            raise ValueError(f"{v!r} is not a host name")
        return v


class ExternalTimeouts(Strict):
    connect: Duration | None = None
    request: Duration | None = None


class Egress(Strict):
    """Send this service's calls through the egress gateway `via`: sidecars send them
    over mutual TLS to Service `via` of this namespace, whose gateway proxies (run
    with that gateway name) alone reach the external service and originate TLS; an
    AuthorizationPolicy on Service `via` decides which workloads may reach which host."""

    via: str = Field(min_length=1, max_length=63)

    @field_validator("via")
    @classmethod
    def _via(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a gateway name (a Service name, a DNS label)")
        return v


class ExternalServiceSpec(Strict):
    hosts: list[Annotated[str, AfterValidator(check_host_name)]] = Field(min_length=1,
                                                                          max_length=32)
    ports: list[ExternalPort] = Field(min_length=1, max_length=16)
    endpoints: list[Annotated[str, AfterValidator(_check_endpoint)]] = Field(
        default_factory=list, max_length=64)
    virtual_ip: str | None = Field(default=None, alias="virtualIP")
    tls: ExternalTls | None = None
    timeouts: ExternalTimeouts | None = None
    egress: Egress | None = None

    @field_validator("virtual_ip")
    @classmethod
    def _virtual_ip(cls, v: str | None) -> str | None:
        return None if v is None else check_virtual_ip(v)

    @model_validator(mode="after")
    def _coherent(self) -> ExternalServiceSpec:
        if len(set(self.hosts)) != len(self.hosts):
            raise ValueError("hosts: a host is listed twice")
        if len({p.port for p in self.ports}) != len(self.ports):
            raise ValueError("ports: a port is listed twice")
        if self.wildcard:
            self._check_wildcard()
        if self.tls is not None:
            for i, p in enumerate(self.ports):
                if p.protocol.app_speaks_tls:
                    raise ValueError(
                        f"ports[{i}].protocol: the app speaks TLS itself on a "
                        f"{p.protocol.value} port, so the sidecar cannot originate TLS: "
                        "use HTTP, GRPC or TCP")
        return self

    def _check_wildcard(self) -> None:
        """A wildcard host's calls go where the app connected (capture's original
        destination, port `targetPort`), named by the request's host."""
        if not all(h.startswith("*.") for h in self.hosts):
            raise ValueError("hosts: wildcard and exact hosts cannot mix: put the "
                             "wildcards in an ExternalService of their own")
        for i, p in enumerate(self.ports):
            if not p.protocol.by_host:
                raise ValueError(f"ports[{i}].protocol: a wildcard host is routed by the "
                                 "request's host name: HTTP or GRPC only")
        for name, value in (("endpoints", self.endpoints), ("virtualIP", self.virtual_ip),
                            ("egress", self.egress)):
            if value:
                raise ValueError(f"{name}: not with wildcard hosts (calls go where the "
                                 "app connected, found by its own DNS)")
        if self.tls is not None and (self.tls.sni or self.tls.subject_alt_names):
            raise ValueError("tls: with wildcard hosts the SNI and the name checked are "
                             "the request's host: leave sni and subjectAltNames out")

    @property
    def wildcard(self) -> bool:
        return any(h.startswith("*.") for h in self.hosts)


class ExternalService(Resource):
    KIND = "ExternalService"
    kind: Literal["ExternalService"] = "ExternalService"
    spec: ExternalServiceSpec

    @model_validator(mode="after")
    def _name_is_dns_label(self) -> ExternalService:
        if not DNS_LABEL.match(self.metadata.name) or len(self.metadata.name) > 63:
            raise ValueError("metadata.name: an ExternalService name must be a DNS label "
                             "(no dots)")
        return self

    def port(self, number: int) -> ExternalPort | None:
        return next((p for p in self.spec.ports if p.port == number), None)
