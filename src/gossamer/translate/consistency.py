"""Refuse to publish a snapshot Envoy would choke on.

Every EDS cluster must have its assignment (else it warms forever), every
RDS name a listener uses must exist, no two listeners may share a port.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


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
) -> None:
    problems = []
    have_eds, have_rds = set(endpoints), set(routes)
    problems += [f"cluster refers to missing endpoints {n!r}"
                 for n in sorted(set(eds_refs) - have_eds)]
    problems += [f"listener refers to missing route config {n!r}"
                 for n in sorted(set(rds_refs) - have_rds)]
    seen: dict[int, str] = {}
    for listener, port in sorted(listener_ports.items()):
        if port in seen:
            problems.append(f"listeners {seen[port]!r} and {listener!r} both use port {port}")
        seen[port] = listener
    if problems:
        raise InconsistentConfig(problems)
