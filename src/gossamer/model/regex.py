"""Envoy matches regular expressions with RE2: check them with RE2 itself.

RE2 decides what compiles (its syntax, its repetition limit of 1000 counting nested
repetitions multiplied, its memory budget), and Envoy refuses any regex whose RE2
program is larger than the runtime value `re2.max_program_size.error_level` (100 by
default), with a NACK of the whole route config that carries it. A Python `re`
approximation accepts both kinds, so the control plane would push config that every
sidecar of the namespace refuses.
"""

from __future__ import annotations

import re

import re2

from gossamer.contract.names import MAX_PROGRAM_SIZE

# The longest pattern accepted; MAX_PROGRAM_SIZE (contract/names.py) bounds what it
# compiles to.
MAX_PATTERN_LENGTH = 1024

# As Envoy 1.40 compiles a regex (found with `envoy --mode validate`, whose NACKs
# report the program size): no logging, and Latin-1, so the pattern's UTF-8 bytes are
# matched as bytes. Hence `\x{100}` and above are refused, `.` is two instructions
# (not UTF-8's eight) and `\pL` eleven (not 1200); tests/unit/model/test_envoy_agreement.py
# compares sizes with the Envoy binary.
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.encoding = re2.Options.Encoding.LATIN1

# Features of other regex dialects that RE2 leaves out, named when RE2 refuses them
# (its own message, such as "invalid perl operator: (?=", says what but not why).
_HINTS = [
    (re.compile(r"\(\?[=!]"), "lookahead (?= / (?! is not supported by RE2"),
    (re.compile(r"\(\?<[=!]"), "lookbehind (?<= / (?<! is not supported by RE2"),
    (re.compile(r"(?<!\\)\\[1-9]"), "backreferences such as \\1 are not supported by RE2"),
    (re.compile(r"\(\?P=\w+\)"), "named backreferences are not supported by RE2"),
    (re.compile(r"[*+?}][+]"), "possessive quantifiers are not supported by RE2"),
    (re.compile(r"\(\?>"), "atomic groups are not supported by RE2"),
]


def program_size(pattern: str) -> int:
    """RE2's program size of `pattern`; ValueError says why RE2 refuses it."""
    try:
        return int(re2.compile(pattern.encode(), _OPTIONS).programsize)
    except re2.error as exc:
        for probe, hint in _HINTS:
            if probe.search(pattern):
                raise ValueError(hint) from exc
        raise ValueError(f"invalid regular expression: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else ""
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
    return text or "refused by RE2"


def check_re2(pattern: str, *, max_length: int | None = MAX_PATTERN_LENGTH) -> str:
    """`pattern` when Envoy's RE2 would compile it within MAX_PROGRAM_SIZE.

    `max_length=None` for a regex built from checked parts (a user's regex inside one
    of ours), whose own length is not the user's to keep within bounds."""
    if max_length is not None and len(pattern) > max_length:
        raise ValueError(f"regular expression longer than {max_length} characters")
    size = program_size(pattern)
    if size > MAX_PROGRAM_SIZE:
        raise ValueError(
            f"regular expression too complex: its RE2 program size is {size}, more than "
            f"{MAX_PROGRAM_SIZE}; counted repetitions such as {{1,100}} are unrolled and "
            "nested ones multiply, so bound them more tightly or use + and *")
    return pattern
