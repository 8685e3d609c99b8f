"""The mesh index: an immutable view of the desired state (`view.py`), how it is
built, incrementally where it can be (`build.py`), and the status conditions it
derives for users (`conditions.py`). Translation reads only the index."""

from gossamer.index.build import build_index, with_health
from gossamer.index.view import Endpoint, MeshIndex, Policy, PortKey, SvcKey, WorkloadKey

__all__ = [
    "Endpoint",
    "MeshIndex",
    "Policy",
    "PortKey",
    "SvcKey",
    "WorkloadKey",
    "build_index",
    "with_health",
]
