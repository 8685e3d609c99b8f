"""Gateway API's HTTPCORSFilter, as an HTTPRoute's CORS filter carries it."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from gossamer.model.meta import METHODS, Strict, check_header_name

# An allowed origin: `*`, or scheme://host[:port] whose host may start with `*.`.
ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?\Z")


def _wildcard_alone(values: list[str], what: str) -> None:
    if "*" in values and len(values) > 1:
        raise ValueError(f"{what}: '*' must be the only entry when given")


class CORS(Strict):
    """Gateway API HTTPCORSFilter: the answer to preflights and the CORS response headers."""

    allow_origins: list[str] = Field(default_factory=list, alias="allowOrigins", max_length=64)
    allow_methods: list[str] = Field(default_factory=list, alias="allowMethods", max_length=9)
    allow_headers: list[str] = Field(default_factory=list, alias="allowHeaders", max_length=64)
    expose_headers: list[str] = Field(default_factory=list, alias="exposeHeaders",
                                      max_length=64)
    allow_credentials: bool | None = Field(default=None, alias="allowCredentials",
                                             strict=True)
    max_age: int = Field(default=5, alias="maxAge", ge=1, le=86_400, strict=True)

    @model_validator(mode="after")
    def _values(self) -> CORS:
        for i, origin in enumerate(self.allow_origins):
            if origin != "*" and (len(origin) > 253 or not ORIGIN.match(origin)):
                raise ValueError(f"allowOrigins[{i}]: {origin!r} is neither '*' nor "
                                 "scheme://host[:port] (the host may start with '*.')")
        for i, method in enumerate(self.allow_methods):
            if method != "*" and method not in METHODS:
                raise ValueError(f"allowMethods[{i}]: {method!r} is not an HTTP method")
        for field, values in (("allowHeaders", self.allow_headers),
                              ("exposeHeaders", self.expose_headers)):
            for i, name in enumerate(values):
                if name != "*":
                    try:
                        check_header_name(name)
                    except ValueError as exc:
                        raise ValueError(f"{field}[{i}]: {exc}") from exc
        _wildcard_alone(self.allow_origins, "allowOrigins")
        _wildcard_alone(self.allow_methods, "allowMethods")
        _wildcard_alone(self.allow_headers, "allowHeaders")
        _wildcard_alone(self.expose_headers, "exposeHeaders")
        return self
