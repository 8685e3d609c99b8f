"""requirements.lock pins every package the suite runs on, direct and transitive,
and this environment runs exactly those versions: a new release of anything cannot
change a fresh checkout's run without a change to the lock."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"not an exact pin: {line!r}"
        assert re.fullmatch(r"[\w.+!-]+", version), f"not an exact pin: {line!r}"
        out[canonicalize_name(name)] = version
    return out


def needed(root: str, extras: set[str]) -> set[str]:
    """The distributions `root[extras]` needs in this environment, transitively."""
    seen: set[str] = set()
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        dist = metadata.distribution(name)
        for text in dist.requires or []:
            req = Requirement(text)
            env = default_environment()
            if req.marker is not None and not any(
                    req.marker.evaluate({**env, "extra": e}) for e in wanted | {""}):
                continue
            key = canonicalize_name(req.name)
            if key not in seen:
                seen.add(key)
                todo.append((req.name, set(req.extras)))
    return seen


def test_every_needed_package_is_pinned_and_installed_at_its_pin() -> None:
    locked = pins()
    for name in sorted(needed("gossamer-mesh", {"test"})):
        assert name in locked, f"{name} is needed but not in requirements.lock: ./scripts/lock"
        installed = metadata.version(name)
        assert installed == locked[name], (
            f"{name} {installed} is installed, the lock pins {locked[name]}: ./scripts/setup")
