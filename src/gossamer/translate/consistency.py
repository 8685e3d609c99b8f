"""Refuse to publish a snapshot Envoy would choke on.

Every EDS cluster must have its assignment (else it warms forever), every
RDS name a listener uses must exist, no two listeners may share a port, and every
cluster a route or TCP listener sends to must be in the snapshot (routes do not
ask Envoy to validate clusters, so a missing one would fail requests, not the push).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping


class InconsistentConfig(ValueError):
    """Translation produced a snapshot with dangling references; nothing is pushed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def check_consistency(
    *,
    eds_refs: Iterable[str],
    endpoints: Iterable[str],
    rds_refs: Iterable[str],
    routes: Iterable[str],
    listener_ports: Mapping[str, int],
    cluster_refs: Iterable[str] = (),
    clusters: Container[str] = (),
) -> None:
    problems = []
    have_eds, have_rds = set(endpoints), set(routes)
    problems += [f"cluster refers to missing endpoints {n!r}"
                 for n in sorted(set(eds_refs) - have_eds)]
    problems += [f"listener refers to missing route config {n!r}"
                 for n in sorted(set(rds_refs) - have_rds)]
    problems += [f"a route sends to a cluster the proxy does not have: {n!r}"
                 for n in sorted(set(cluster_refs)) if n not in clusters]
    seen: dict[int, str] = {}
    for listener, port in sorted(listener_ports.items()):
        if port in seen:
            problems.append(f"listeners {seen[port]!r} and {listener!r} both use port {port}")
        seen[port] = listener
    if problems:
        raise InconsistentConfig(problems)
