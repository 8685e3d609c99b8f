"""The control plane's HTTP/JSON API (FastAPI, with an OpenAPI document)."""
