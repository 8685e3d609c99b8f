"""Reference docs that restate what the code knows: tested against the code, so they
cannot drift from it again."""

from __future__ import annotations

import re
from importlib import resources as pkg
from pathlib import Path

import pytest

from gossamer.cli.run import DRAIN_NOTE
from gossamer.index import build_index
from gossamer.local.spec import load_local_app
from gossamer.model import InvalidResource, parse_document, parse_documents
from gossamer.model.registry import DOCUMENT_KINDS, KINDS, kind_for

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def _section(path: Path, heading: str) -> str:
    """The text under `heading` (a Markdown heading line), up to the next heading of
    the same or a higher level."""
    text = path.read_text()
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n")
    end = re.compile(rf"\n#{{1,{len(level)}}} ").search(text, start + 1)
    return text[start:end.start() if end else len(text)]


def test_every_unknown_kind_error_in_the_docs_is_the_real_one() -> None:
    """`known kinds: ...` as the docs quote it is the message apply prints today."""
    quoted = [(p.name, m) for p in DOCS
              for m in re.findall(r"unknown kind '(\w+)'; known kinds: ([\w, ]+)",
                                  p.read_text())]
    assert {name for name, _ in quoted} >= {"cli.md", "resources.md"}
    for name, (kind, listed) in quoted:
        with pytest.raises(InvalidResource) as err:
            parse_document({"kind": kind})
        assert f"unknown kind '{kind}'; known kinds: {listed}" in str(err.value), name
        assert listed == ", ".join(DOCUMENT_KINDS), name


def test_the_kinds_endpoint_row_lists_the_registry() -> None:
    row = next(line for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()
               if line.startswith("| GET | `/api/v1/kinds` |"))
    assert re.findall(r"`([A-Z][\w.-]+)`", row) == list(KINDS)


def test_the_kinds_table_of_resources_md_has_every_kind() -> None:
    text = (ROOT / "docs" / "resources.md").read_text()
    table = text[:text.index("\n## ")]
    listed = re.findall(r"^\| \[`([\w.-]+)`\]", table, re.MULTILINE)
    assert sorted(listed) == sorted(KINDS)


def test_every_kind_spelling_cli_md_lists_is_accepted() -> None:
    section = _section(ROOT / "docs" / "cli.md", "## Resource kinds")
    listing = section[section.index("case-insensitive:"):section.index("The fields of")]
    spellings = re.findall(r"`([\w.-]+)`", listing)
    assert {kind_for(s).KIND for s in spellings} == set(KINDS)


def test_local_mode_says_up_front_which_clients_ignore_http_proxy() -> None:
    """A user whose Java or Node.js app calls straight past the sidecar learns why, and
    what to use instead, before the first example."""
    text = (ROOT / "docs" / "local-mode.md").read_text()
    intro = text[:text.index("## The application file")]
    for needed in ("Java", "Node.js", "ignore\n`HTTP_PROXY`", "upstreams:", "#upstream-ports"):
        assert needed in intro, needed


def test_security_md_says_when_open_connections_follow_a_policy_change() -> None:
    """`gossamer check` says "in sync" before connections already open follow a changed
    policy: where users read about policies, the docs say so, as check itself does."""
    section = _section(ROOT / "docs" / "security.md", "### When a policy change takes effect")
    for needed in ("new connections at once", "--drain-seconds", "gossamer check"):
        assert needed in section, needed
    assert DRAIN_NOTE in (ROOT / "docs" / "cli.md").read_text()


def test_every_demo_example_takes_full_effect_on_the_demo() -> None:
    """The README's tour applies these to `gossamer demo`: none may carry settings the
    mesh reports as having no effect (a policy on a Service whose routes send its
    traffic elsewhere)."""
    demo = load_local_app(pkg.files("gossamer.demo").joinpath("demo.yaml").read_text())
    for path in sorted((ROOT / "examples" / "demo").glob("*.yaml")):
        if path.name == "app.yaml":
            continue
        docs = parse_documents(path.read_text())
        index = build_index([*demo.resources, *docs], 1)
        for doc in docs:
            bad = [c for c in index.conditions.get(doc.key, ()) if c.status != "True"]
            assert bad == [], (path.name, doc.key, bad)
