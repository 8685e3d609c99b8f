"""PURE translation: (mesh index, node metadata) -> Envoy resources.

No I/O, no awaits, no globals. `translate_mesh` builds everything that is the
same for every proxy once per index; `translate_proxy` assembles one proxy's
snapshot from it and checks its consistency before anything is published.
"""

from gossamer.translate.consistency import InconsistentConfig, check_consistency
from gossamer.translate.mesh import MeshConfig, translate_mesh
from gossamer.translate.proxy import ProxyConfig, translate_proxy
from gossamer.translate.settings import MeshSettings

__all__ = [
    "InconsistentConfig",
    "MeshConfig",
    "MeshSettings",
    "ProxyConfig",
    "check_consistency",
    "translate_mesh",
    "translate_proxy",
]
