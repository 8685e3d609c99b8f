"""The control plane process: store, reconcile loop, xDS server and HTTP API in one loop."""
