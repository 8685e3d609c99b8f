"""PEM material for OpenSSL without writing keys to disk.

Python's `ssl` loads a certificate chain and key only from files; the control
plane's keys (its API serving pair, its client certificate for sidecars' admin
listeners) live in memory, so they are handed over through an anonymous memory
file, never a file on disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def in_memory(data: bytes) -> Iterator[str]:
    """A path OpenSSL can open that holds `data`: an anonymous memory file (Linux),
    else a file in a private temporary directory, removed at once."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("gossamer-tls", os.MFD_CLOEXEC)
        try:
            with os.fdopen(os.dup(fd), "wb") as out:
                out.write(data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    folder = tempfile.mkdtemp(prefix="gossamer-tls-")  # mode 0700
    try:
        path = Path(folder) / "pem"
        path.write_bytes(data)
        yield str(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
