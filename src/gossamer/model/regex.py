"""Envoy matches regular expressions with RE2; reject what RE2 would refuse."""

from __future__ import annotations

import re

# Python accepts these but RE2 does not (no backtracking features).
_RE2_UNSUPPORTED = [
    (re.compile(r"\(\?[=!]"), "lookahead (?= / (?! is not supported by RE2"),
    (re.compile(r"\(\?<[=!]"), "lookbehind (?<= / (?<! is not supported by RE2"),
    (re.compile(r"(?<!\\)\\[1-9]"), "backreferences such as \\1 are not supported by RE2"),
    (re.compile(r"\(\?P=\w+\)"), "named backreferences are not supported by RE2"),
    (re.compile(r"[*+?}][+]"), "possessive quantifiers are not supported by RE2"),
    (re.compile(r"\(\?>"), "atomic groups are not supported by RE2"),
]


def check_re2(pattern: str) -> str:
    if len(pattern) > 1024:
        raise ValueError("regular expression longer than 1024 characters")
    for probe, reason in _RE2_UNSUPPORTED:
        if probe.search(pattern):
            raise ValueError(reason)
    try:
        re.compile(pattern)
    except (re.error, OverflowError) as exc:  # OverflowError: a{99999999999}
        raise ValueError(f"invalid regular expression: {exc}") from exc
    except RecursionError as exc:
        raise ValueError("invalid regular expression: nested too deeply") from exc
    return pattern
