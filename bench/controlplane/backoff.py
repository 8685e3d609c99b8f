"""How fast a real Envoy retries a broken xDS stream, with the agent's bootstrap
(`envoyGrpc.retryPolicy`: 250 ms base, 2 s cap) and with Envoy's default (500 ms,
30 s): connect attempts to a closed xDS port in 40 s. This is what bounds how
long sidecars stay on stale config after a control-plane restart.

    PYTHONPATH=$PWD/src .venv/bin/python bench/controlplane/backoff.py [--seconds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

from gossamer.agent.bootstrap import XDS_RETRY_BASE_S, XDS_RETRY_MAX_S, bootstrap
from gossamer.contract.node import NodeMetadata
from gossamer.envoy.binary import find_envoy

NODE = NodeMetadata(node_id="web-1.default", service="web", namespace="default", workload="web-1",
                    inbound_port=15006, inbound_address="127.0.0.1", app_port=8080,
                    app_protocol=None, outbound_port=15001, admin_port=15000)


def free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def attempts(with_policy: bool, seconds: float) -> int:
    """Connect failures to a closed xDS port after `seconds`."""
    closed, admin = free(), free()
    b = bootstrap(NODE, "127.0.0.1", closed)
    b.pop("statsConfig", None)
    b["admin"] = {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": admin}}}
    if not with_policy:
        b["dynamicResources"]["adsConfig"]["grpcServices"][0]["envoyGrpc"].pop("retryPolicy")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(b, f)
    p = subprocess.Popen([find_envoy(), "-c", f.name, "--base-id", str(free()), "-l", "error"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(seconds)
        url = f"http://127.0.0.1:{admin}/stats?filter=gossamer_xds.upstream_cx_connect_fail"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.read().decode().strip().split(":")[-1])
    finally:
        p.terminate()
        p.wait(10)
        os.unlink(f.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    seconds = parser.parse_args().seconds
    for label, policy in ((f"agent bootstrap ({XDS_RETRY_BASE_S * 1000:.0f} ms, "
                           f"{XDS_RETRY_MAX_S:g} s)", True),
                          ("Envoy default (500 ms, 30 s)", False)):
        print(f"{label}: {attempts(policy, seconds)} attempts in {seconds:g} s", flush=True)


if __name__ == "__main__":
    main()
