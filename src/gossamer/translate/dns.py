"""Mesh DNS: the UDP listener `dns` of a capturing sidecar, Envoy's own DNS filter
answering the names of the Services in its egress scope with their virtual IPs.

The agent's capture rules send the workload's DNS queries (udp/53) here. A name in
the table gets its Service's virtual IP (the capture listener routes by it,
translate/capture.py); any other name is forwarded to the host's resolvers, which
the agent read from /etc/resolv.conf. Envoy's own queries to those resolvers run
as its uid, which the capture rules leave alone, so even a loopback resolver
(127.0.0.53) is reached, not looped back here. Without resolvers, other names get
no answer. Only A and AAAA queries are answered (Envoy's filter answers no other
type); a Service has no IPv6 address, so AAAA for its names is answered empty.

The names of a Service `svc` in namespace `ns`: `svc.ns`, `svc.ns.svc`,
`svc.ns.svc.cluster.local` and `svc.ns.<dnsDomain>` (the Mesh's, `mesh` by
default), and `svc` alone for callers in `ns`, as for Host headers
(translate/names.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.udp.dns_filter.v3 import dns_filter_pb2  # noqa: F401
from envoy.extensions.network.dns_resolver.cares.v3 import cares_dns_resolver_pb2  # noqa: F401

from gossamer.translate.protos import build

DNS_LISTENER = "dns"
DNS_STATS = "dns"  # dns_filter stats: dns.<...>: local_a_record_answers, ...
DNS_FILTER = "type.googleapis.com/envoy.extensions.filters.udp.dns_filter.v3.DnsFilterConfig"
CARES = "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3." \
        "CaresDnsResolverConfig"
# How long callers may cache an answer. Virtual IPs are stable, and one freed by a
# deleted Service is not handed out again until the range wraps (virtualips/).
ANSWER_TTL = "30s"
RESOLVER_TIMEOUT = "5s"

SvcKey = tuple[str, str]


def service_names(name: str, namespace: str, *, same_ns: bool, domain: str) -> list[str]:
    names = [f"{name}.{namespace}", f"{name}.{namespace}.svc",
             f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.{domain}"]
    return [name, *names] if same_ns else names


def dns_table(vips: Mapping[SvcKey, str], services: Iterable[SvcKey], namespace: str,
              domain: str) -> tuple[tuple[str, str], ...]:
    """(name, address) of every name of `services` (those with a virtual IP), for a
    caller in `namespace`, sorted."""
    out = []
    for key in services:
        ip = vips.get(key)
        if ip is None:
            continue
        for name in service_names(key[1], key[0], same_ns=key[0] == namespace, domain=domain):
            out.append((name, ip))
    return tuple(sorted(set(out)))


def _client(resolvers: tuple[tuple[str, int], ...]) -> dict[str, Any]:
    return {"clientConfig": {
        "resolverTimeout": RESOLVER_TIMEOUT,
        "maxPendingLookups": 256,
        "typedDnsResolverConfig": {"name": "envoy.network.dns_resolver.cares", "typedConfig": {
            "@type": CARES,
            "resolvers": [{"socketAddress": {"address": host, "portValue": port}}
                          for host, port in resolvers],
            # Only these resolvers, and the names as asked (the app's resolver has
            # already applied its search list).
            "dnsResolverOptions": {"noDefaultSearchDomain": True},
        }},
    }}


def dns_listener(port: int, table: tuple[tuple[str, str], ...],
                 resolvers: tuple[tuple[str, int], ...]) -> Listener:
    """On 127.0.0.1:`port` (UDP), where the capture rules redirect udp/53."""
    domains = [{"name": name, "endpoint": {"addressList": {"address": [ip]}},
                "answerTtl": ANSWER_TTL} for name, ip in table]
    config: dict[str, Any] = {
        "@type": DNS_FILTER,
        "statPrefix": DNS_STATS,
        "serverConfig": {"inlineDnsTable": {"virtualDomains": domains}},
        **(_client(resolvers) if resolvers else {}),
    }
    return build(Listener, {
        "name": DNS_LISTENER,
        "address": {"socketAddress": {"protocol": "UDP", "address": "127.0.0.1",
                                      "portValue": port}},
        "trafficDirection": "OUTBOUND",
        "listenerFilters": [{"name": "envoy.filters.udp.dns_filter", "typedConfig": config}],
    })
