"""The names the agent's bootstrap, Envoy and the control plane must spell alike.

Each is written on one side and read on another, so a rename here is a protocol
change: an Envoy still running an older bootstrap keeps the old name.
"""

from __future__ import annotations

from typing import Any, Final

# -- static clusters of the bootstrap (agent/bootstrap.py) --------------------------
# The control plane's gRPC port: ADS, and the services that ride on it (the
# rate-limit service, the access-log service, the CA). Translation points Envoy's
# rate-limit filter and failure log at it.
XDS_CLUSTER: Final = "gossamer_xds"
# The agent's SDS socket (agent/sds.py), which serves the two secrets below.
SDS_CLUSTER: Final = "gossamer_sds"

# -- SDS secrets --------------------------------------------------------------------
CERT_SECRET: Final = "default"  # the workload's certificate chain and key
ROOT_SECRET: Final = "ROOTCA"   # the trust bundle (every root the mesh trusts now)
# The DNS name in the control plane's serving certificate; agents and Envoy
# verify it (the address they dial may be an IP or anything else).
CONTROL_PLANE_NAME: Final = "gossamer-control-plane"


def sds_config() -> dict[str, Any]:
    """The ConfigSource (JSON form) of the secrets CERT_SECRET and ROOT_SECRET.

    Use exactly this wherever a secret is referenced (the listeners and clusters
    translation makes, the bootstrap's xDS cluster): Envoy shares one SDS
    subscription between references whose name *and* config source are equal, so
    any difference here means another stream to the agent and another copy of the
    secret in Envoy, updated at a slightly different moment. SotW (GRPC): Envoy opens one
    stream per secret anyway.
    """
    return {
        "apiConfigSource": {
            "apiType": "GRPC",
            "transportApiVersion": "V3",
            "grpcServices": [{"envoyGrpc": {"clusterName": SDS_CLUSTER}}],
        },
        "resourceApiVersion": "V3",
    }


# -- the failure access log (translate/telemetry.py -> explain/logservice.py) --------
# The access-log `log_name` of each connection manager.
INBOUND_LOG: Final = "gossamer.inbound"
OUTBOUND_LOG: Final = "gossamer.outbound"
# The custom tag naming the upstream listener (`upstream|PORT||SVC.NS`) a request came
# through; absent on the outbound and inbound listeners.
LISTENER_TAG: Final = "listener"

# -- global rate limits (translate/ratelimit.py -> ratelimit/service.py) --------------
RATELIMIT_DOMAIN: Final = "gossamer"
# The descriptor entry naming the rule: `rule_id(namespace, policy, index)`.
RULE_KEY: Final = "gossamer_rule"
# The gate entry, present only when the rule's match holds.
MATCH_KEY: Final = "gossamer_match"
# The entries that separate counters, one per key type of a rule.
CALLER_ENTRY: Final = "caller"
HEADER_ENTRY: Final = "header"
PATH_ENTRY: Final = "path"
# Envoy's `remote_address` action names its entry so.
CLIENT_IP_ENTRY: Final = "remote_address"
KEY_ENTRIES: Final = frozenset({CALLER_ENTRY, HEADER_ENTRY, PATH_ENTRY, CLIENT_IP_ENTRY})


def rule_id(namespace: str, policy: str, index: int) -> str:
    """The RULE_KEY value of a RateLimitPolicy's global rule number `index`."""
    return f"{namespace}/{policy}/{index}"


# -- Envoy's runtime (the bootstrap's static layer) ------------------------------------
# The largest RE2 program (`RE2::ProgramSize()`, about one instruction per byte range
# a pattern can match, counted repetitions unrolled) a regex may compile to: the
# control plane accepts only regexes within it (model/regex.py), and the agent's
# bootstrap sets Envoy's runtime value PROGRAM_SIZE_RUNTIME_KEY to this same number,
# so what is accepted at apply is what the sidecars accept. Envoy's default of 100
# refuses `[a-z0-9]{1,63}` (192) and a realistic host-name regex (3011); 8192 takes
# four 1000-character repetitions of any class and a 1024-byte literal, costs a
# sidecar at most 128 KiB a regex, and keeps Envoy's compile budget at RE2's default
# 8 MiB (newer Envoys scale it by 1 KiB per allowed instruction).
MAX_PROGRAM_SIZE: Final = 8192
PROGRAM_SIZE_RUNTIME_KEY: Final = "re2.max_program_size.error_level"


# -- kubelet's probes of a pod (k8s/inject.py writes them, agent/appprobes.py answers) -
# The agent's probe server on the pod's address: rewritten app probes under
# /app-health/CONTAINER/KIND, and Envoy's own readiness at PROXY_READY_PATH (kubelet
# probes from the node, and Envoy's admin stays on the pod's loopback).
PROBES_PORT: Final = 15020
PROXY_READY_PATH: Final = "/healthz/ready"
