"""The agent (`gossamer proxy`): runs beside one workload and its Envoy."""
