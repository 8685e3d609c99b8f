"""Global rate limits: the control plane's side of Envoy's rate-limit service."""
