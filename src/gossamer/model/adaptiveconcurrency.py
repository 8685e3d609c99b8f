"""ResiliencePolicy `adaptiveConcurrency`: Envoy's gradient controller, enforced by the
target Service's own sidecars, which shed load (503) when their app's latency climbs.

The controller compares the latency of recent requests (`sampleAggregatePercentile`
of the samples of one `concurrencyUpdateInterval`) with the app's ideal latency
(minRTT): measured now and then at low concurrency (`minRttCalcParams`), or given
(`minRtt`). The gradient between the two scales the number of requests allowed in
flight; requests above it are answered 503 at once instead of queueing.

Absent optional fields keep Envoy's defaults (listed beside each), so the policy says
only what it changes.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from gossamer.model.duration import parse_duration_ms
from gossamer.model.meta import Strict

UINT32_MAX = 4_294_967_295
# Used when the minRTT is measured and the policy gives no interval (Envoy needs one).
DEFAULT_MIN_RTT_INTERVAL = "60s"


def _positive_duration(value: str) -> str:
    if parse_duration_ms(value) == 0:
        raise ValueError(f"{value!r}: must be longer than 0")
    return value


_PositiveDuration = Annotated[str, AfterValidator(_positive_duration)]
_Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False, strict=True)]
_PositiveCount = Annotated[int, Field(ge=1, le=UINT32_MAX, strict=True)]


class ConcurrencyLimitParams(Strict):
    # Envoy: 1000.
    max_concurrency_limit: _PositiveCount | None = Field(
        default=None, alias="maxConcurrencyLimit")
    # How often the limit is recalculated from the latency samples of the last period.
    concurrency_update_interval: _PositiveDuration = Field(
        default="100ms", alias="concurrencyUpdateInterval")


class MinRttCalcParams(Strict):
    # Between two measurements of the minRTT (Envoy needs it; default 60s).
    interval: _PositiveDuration | None = None
    # Requests sampled per measurement; Envoy: 50.
    request_count: _PositiveCount | None = Field(default=None, alias="requestCount")
    # Random delay of a measurement's start, % of interval; Envoy: 15.
    jitter: _Percent | None = None
    # The limit while measuring, and its floor; Envoy: 3.
    min_concurrency: _PositiveCount | None = Field(default=None, alias="minConcurrency")
    # Latency tolerated above the minRTT, % of it; Envoy: 25.
    buffer: _Percent | None = None


class AdaptiveConcurrency(Strict):
    # The percentile of a period's latency samples compared with the minRTT; Envoy: 50.
    sample_aggregate_percentile: _Percent | None = Field(
        default=None, alias="sampleAggregatePercentile")
    concurrency_limit_params: ConcurrencyLimitParams = Field(
        default_factory=ConcurrencyLimitParams, alias="concurrencyLimitParams")
    min_rtt_calc_params: MinRttCalcParams | None = Field(default=None, alias="minRttCalcParams")
    # A fixed ideal latency instead of measuring it.
    min_rtt: _PositiveDuration | None = Field(default=None, alias="minRtt")

    @model_validator(mode="after")
    def _fixed_or_measured(self) -> AdaptiveConcurrency:
        calc = self.min_rtt_calc_params
        if self.min_rtt is not None and calc is not None:
            for field, alias in (("interval", "interval"), ("request_count", "requestCount"),
                                 ("jitter", "jitter")):
                if getattr(calc, field) is not None:
                    raise ValueError(f"minRttCalcParams.{alias}: only used when the minRTT is "
                                     "measured; remove it or minRtt")
        return self
