"""Virtual IPs: the stable address each Service gets for capture and mesh DNS.

`table` is the stored allocation (one document, written by the control plane's
allocator task, controlplane/vips.py) and the pure allocation step; `assign`
decides each Service's effective address (an explicit `spec.virtualIP` wins)
for the mesh index.
"""
