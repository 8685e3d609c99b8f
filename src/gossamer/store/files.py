"""The directory the desired state lives in: the store file, the admin token."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)


def private_dir(path: Path) -> None:
    """Create `path`, and each missing parent, readable by the owner only (0700)
    whatever the umask: `mkdir -p` would leave them 0777 under `umask 000`, and
    another user could then replace the store or the admin token. A directory that
    already exists is the user's choice and is left as it is, with a warning when
    others may write to it."""
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # created meanwhile by someone else: treated as existing
        # mkdir's mode goes through the umask, which may have removed our own bits.
        directory.chmod(0o700)
    if path in missing:
        return
    mode = path.stat().st_mode
    if path.is_dir() and mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning("%s can be written by other users (mode %o); make it private with "
                    "`chmod 700 %s`", path, stat.S_IMODE(mode), path)
