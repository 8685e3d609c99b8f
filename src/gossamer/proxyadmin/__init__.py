"""How the control plane (and Prometheus) reach a sidecar's Envoy admin, on any host.

Envoy's admin listens on the sidecar's loopback only: it can quit Envoy, change
its log level and dump its config, and it has no authentication of its own.
Across hosts the control plane reaches it through a static listener of each
sidecar, `gossamer_admin`, on the workload's address: mutual TLS 1.3 that
accepts only the control plane's SPIFFE identity and passes on only the admin
paths the control plane reads (`agent/adminlisteners.py`), as istiod reaches
proxies through xDS debug. A second, plain listener serves only
`/stats/prometheus`, for Prometheus. The listeners' addresses travel in the node
metadata (`target.py`); sidecars without them (local mode, on loopback) are
reached on their loopback admin, as before.
"""
