"""Live tap: requests as a Service's own sidecars see them (`gossamer tap`)."""
