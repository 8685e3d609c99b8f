"""xDS: snapshot cache, sans-I/O stream state, and the grpc.aio ADS server."""
