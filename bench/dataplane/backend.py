"""Start the benchmark's backend: nginx answering every GET with 100 static bytes on 127.0.0.1:PORT.

    python bench/dataplane/backend.py PORT DIR

Writes DIR/nginx.conf from nginx.conf beside this file and execs nginx in the
foreground, so whoever started this process (run.py, or a Gossamer agent) owns
nginx by the same PID and stops it with one signal.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# 100 bytes: a small static answer, so proxy overhead dominates, not copying.
BODY = ("gossamer bench backend " * 5)[:99] + "\n"


def write_config(port: int, work: Path) -> Path:
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    template = (Path(__file__).parent / "nginx.conf").read_text()
    conf = work / "nginx.conf"
    conf.write_text(template.format(port=port, dir=work, body=BODY.replace(chr(10), r'\n')))
    return conf


def main() -> None:
    port, work = int(sys.argv[1]), Path(sys.argv[2]).resolve()
    conf = write_config(port, work)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    os.execv(nginx, [nginx, "-c", str(conf), "-p", str(work)])


if __name__ == "__main__":
    main()
