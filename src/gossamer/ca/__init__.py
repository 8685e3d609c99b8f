"""The mesh certificate authority: a pure issuer plus its store-backed state."""
