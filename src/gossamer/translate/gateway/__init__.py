"""Translation for gateways (`gossamer gateway`): a standalone Envoy at the edge.

Pure, like the rest of `translate/`: from the index's `GatewayView` (index/gateways.py)
and the shared mesh (its clusters to the backends, over mTLS with the gateway's own
identity) to one gateway replica's snapshot. `routes.py` builds the route config of
each HTTP port, `listeners.py` a listener per port, `proxy.py` assembles them.
"""

from gossamer.translate.gateway.proxy import gateway_inputs, translate_gateway

__all__ = ["gateway_inputs", "translate_gateway"]
