"""`gossamer gateway` refuses names it cannot run before it starts anything."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("args", "error"), [
    (["--name", "Edge"], "--name must be a Gateway name"),
    (["--name", "edge.example"], "identity account 'edge.example' must be a DNS label"),
    (["--name", "edge", "--xds-mode", "rest"], "--xds-mode must be delta, delta-rds or sotw"),
    (["--name", "egress.example", "--egress"], "--name with --egress must be a Service name"),
    (["--name", "edge", "--inbound-port", "8080"], "--inbound-port needs --egress"),
])
def test_a_gateway_it_cannot_run_is_refused_with_one_line(args: list[str], error: str) -> None:
    done = subprocess.run([sys.executable, "-m", "gossamer", "gateway", *args,
                           "--control-plane", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip()[7:]}"]
    assert error in done.stderr
