"""Golden metrics: the control plane reads every sidecar's Envoy stats and sums them up."""
