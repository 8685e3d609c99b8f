"""The syntax rules the node metadata shares with the resource model.

Kubernetes' rules for names and labels: the agent's metadata carries a service
account and labels that must pass the same checks as a Workload's, and the node
metadata is parsed without the model (`node.py`), so the model takes them from here.
"""

from __future__ import annotations

import re

# RFC 1123 DNS label, as Kubernetes uses for names and namespaces. Patterns end in
# \Z, not $, which would also accept a trailing newline.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
# RFC 1123 subdomain: a Gateway's name, for one.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z"
)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z")


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if len(key) > 317 or not LABEL_KEY.match(key):
            raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
        if not LABEL_VALUE.match(value):
            raise ValueError(f"label value {value!r} for {key!r} is not a valid label value")
    return labels
