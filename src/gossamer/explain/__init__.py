"""Why did a request fail: failed requests the sidecars log, explained."""
