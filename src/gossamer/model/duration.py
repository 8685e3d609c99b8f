"""Gateway API durations ("1h30m", "500ms"): parsed once, kept as the user wrote them."""

from __future__ import annotations

import re

GEP_2257 = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}\Z")
_PART = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}


def parse_duration_ms(text: str) -> int:
    """Milliseconds in a GEP-2257 duration; ValueError names the accepted form."""
    if not GEP_2257.match(text):
        raise ValueError(
            f"{text!r} is not a duration: use up to four parts of 1-5 digits with "
            "units h, m, s or ms, such as '10s', '1m30s' or '250ms'"
        )
    return sum(int(n) * _UNIT_MS[u] for n, u in _PART.findall(text))
