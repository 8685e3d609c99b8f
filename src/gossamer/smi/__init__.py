"""The SMI APIs mapped onto Gossamer's native resources (docs/smi.md): pure functions
from SMI resources (`model/smi.py`) to HTTPRoutes, TCPRoutes and AuthorizationPolicies,
and golden metrics as SMI TrafficMetrics."""
