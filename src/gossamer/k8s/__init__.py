"""Kubernetes: what Gossamer's resources look like to a cluster (CRDs generated from
`model/`)."""
