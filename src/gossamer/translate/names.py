"""Names of generated Envoy resources; stats and `proxy-config` output show them."""

from __future__ import annotations

INBOUND_LISTENER = "inbound"
OUTBOUND_LISTENER = "outbound"
OUTBOUND_ROUTES = "outbound"
# The inbound listener's route config (RDS), in its own namespace of names.
INBOUND_ROUTES = "inbound"
NO_ROUTE_CLUSTER = "gossamer_no_such_backend"
# The catch-all virtual host and route of the `outbound` route config: a host that
# names no Service (in the caller's egress scope) gets a 404 from here.
NO_SERVICE_ROUTE = "no-such-service"
# A gateway's catch-all route for a host none of its routes names (explain/ reads it).
NO_HOST_ROUTE = "no-such-host"

# The route stat prefix of a Service port whose routes send elsewhere (a split):
# `vhost.<virtual host>.route.called.upstream_rq_*` count what its callers sent it.
CALLED_STATS = "called"


def outbound_cluster(namespace: str, name: str, port: int) -> str:
    return f"outbound|{port}||{name}.{namespace}"


def inbound_cluster(app_port: int) -> str:
    return f"inbound|{app_port}"


def upstream_listener(namespace: str, name: str, port: int) -> str:
    return f"upstream|{port}||{name}.{namespace}"


def service_domains(name: str, namespace: str, port: int, *, same_ns: bool,
                    default_port: bool) -> list[str]:
    """Host names a caller may use for a service port.

    Only the service's default port answers to a host without a port, and
    only callers in the same namespace may use the bare service name.
    """
    hosts = [f"{name}.{namespace}", f"{name}.{namespace}.svc",
             f"{name}.{namespace}.svc.cluster.local"]
    if same_ns:
        hosts.insert(0, name)
    out = [f"{h}:{port}" for h in hosts]
    if default_port:
        out = hosts + out
    return out


# Inbound filter chains: the mTLS one, and the plaintext one PERMISSIVE adds.
INBOUND_MTLS_CHAIN = "inbound-mtls"
INBOUND_PLAINTEXT_CHAIN = "inbound-plaintext"
# Their HCM / tcp_proxy stat prefixes (`http.<prefix>.*`): the mTLS chain (or the
# only one when mesh mTLS is off) and PERMISSIVE's plaintext chain.
INBOUND_STATS = "inbound"
INBOUND_PLAINTEXT_STATS = "inbound_plaintext"


def jwks_cluster(host: str, port: int) -> str:
    """The cluster Envoy fetches a remote JWKS through (not EDS: no assignment)."""
    return f"jwks|{host}:{port}"


def rbac_policy(namespace: str, name: str, rule: int) -> str:
    """Envoy RBAC policy of one AuthorizationPolicy rule, as denials and stats show it."""
    return f"{namespace}/{name}[rule-{rule}]"


def jwt_provider(namespace: str, name: str, rule: int) -> str:
    return f"{namespace}/{name}[jwt-{rule}]"
