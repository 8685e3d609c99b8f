"""What the agent and the control plane agree on, in one place.

The agent writes it (Envoy's bootstrap: the node metadata, the static clusters'
names), Envoy carries it, and the control plane reads it back (translation, the
xDS server's authorization, the rate-limit and access-log services). Nothing here
imports the resource model or any edge, so every side can depend on it.
"""
