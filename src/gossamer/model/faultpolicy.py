"""FaultPolicy: chaos testing of one Service by delaying or aborting a share of the
requests its callers send it, optionally only requests carrying given headers.

Faults are injected by each caller's sidecar (like Istio's VirtualService fault),
before the request leaves it, so an injected abort never reaches the Service and is
never retried. One policy per Service: the first by (namespace, name) wins, the others
are reported `Accepted=False, reason Conflicted`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from gossamer.model.httproute import HeaderMatch
from gossamer.model.meta import Resource, Strict
from gossamer.model.policy import EdgeTargetRef, TargetedSpec
from gossamer.model.resiliencepolicy import Percent, PositiveDuration

# gRPC status codes by name (google.rpc.Code), 0..16.
GRPC_STATUS = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
               "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
               "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
               "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")


def grpc_code(value: Any) -> Any:
    """A status name becomes its number, so the stored form is one thing."""
    if isinstance(value, str):
        if value not in GRPC_STATUS:
            raise ValueError(f"unknown gRPC status {value!r}; use 0-16 or one of: "
                             f"{', '.join(GRPC_STATUS)}")
        return GRPC_STATUS.index(value)
    return value


GrpcStatus = Annotated[int, Field(ge=0, le=16, strict=True), BeforeValidator(grpc_code)]


class FaultDelay(Strict):
    # Every affected request waits this long before it is forwarded.
    fixed_delay: PositiveDuration = Field(alias="fixedDelay")
    # Share of the requests delayed, 0-100, to a millionth of a request.
    percent: Percent


class FaultAbort(Strict):
    http_status: int | None = Field(default=None, alias="httpStatus", ge=200, le=599,
                                    strict=True)
    grpc_status: GrpcStatus | None = Field(default=None, alias="grpcStatus")
    percent: Percent

    @model_validator(mode="after")
    def _one_status(self) -> FaultAbort:
        if (self.http_status is None) == (self.grpc_status is None):
            raise ValueError("an abort needs exactly one of httpStatus or grpcStatus")
        return self


class FaultMatch(Strict):
    # All must match (AND), as in an HTTPRoute match.
    headers: list[HeaderMatch] = Field(min_length=1, max_length=16)


class FaultPolicySpec(TargetedSpec):
    # A Service, or a Gateway: its replicas inject into every route they forward.
    target_ref: EdgeTargetRef = Field(alias="targetRef")  # type: ignore[assignment]
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    match: FaultMatch | None = None

    @model_validator(mode="after")
    def _some_fault(self) -> FaultPolicySpec:
        if self.delay is None and self.abort is None:
            raise ValueError("a FaultPolicy needs at least one of delay or abort")
        return self


class FaultPolicy(Resource):
    KIND = "FaultPolicy"
    kind: Literal["FaultPolicy"] = "FaultPolicy"
    spec: FaultPolicySpec
