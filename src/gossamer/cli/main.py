"""`gossamer`: the command line. Errors are one line on stderr and exit 1."""

from __future__ import annotations

import importlib
import os
import sys

from gossamer.cli.app import app
from gossamer.cli.client import CliError
from gossamer.model import InvalidResource

# The command modules, in the order `gossamer --help` lists their commands.
COMMAND_MODULES = ("resources", "run", "capture", "dashboard", "metrics", "explain", "k8s",
                   "local", "proxyadmin", "secrets", "security", "tap", "top")


def main() -> None:
    # The agent forks Envoy and the app (with a pre-exec hook) while gRPC threads
    # run; gRPC's own fork handlers can abort the child then, and log every fork.
    # Our children exec at once, so they need none of it. Must precede `import grpc`.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    for module in COMMAND_MODULES:  # each registers its commands on `app`
        importlib.import_module(f"gossamer.cli.{module}")

    try:
        app()
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except InvalidResource as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
