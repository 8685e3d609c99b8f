"""The subset of Helm's templates (Go text/template with Sprig) the chart uses, so
`gossamer install` renders the chart's own files: one source of truth, and a chart
that `helm` renders the same way.

What is supported, and nothing more (an unknown action or function is an error, so
a template outside the subset fails loudly instead of rendering wrong):

- `{{ pipeline }}` with `{{-` and `-}}` trimming whitespace;
- `{{ if pipeline }}`, `{{ else }}`, `{{ else if pipeline }}`, `{{ end }}`,
  `{{ range $x := pipeline }}` (a list), `{{ $x := pipeline }}`;
- operands: `.Values.a.b` (and `.Release`, `.Chart`, `.Capabilities`), `$x` and
  `$x.a`, "strings", integers, `true`/`false`, `( pipeline )`;
- functions: quote, toYaml, nindent, indent, b64enc, required, default, gt, lt,
  eq, ne, not, and, or, int, list, trunc, printf (%s and %d).

Go's truthiness: false, 0, "", nil and empty collections are false.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml


class TemplateError(ValueError):
    """A template outside the subset, or a `required` value missing."""


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(\(|\)|\||:=|"(?:[^"\\]|\\.)*"|[^\s()|]+)')


@dataclass
class _Node:
    kind: str  # text | expr | if | range | set
    text: str = ""
    var: str = ""
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _lex(source: str) -> list[tuple[str, str]]:
    """Text and action pieces, with the trim markers applied to the text."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        pieces.append(("text", text))
        pieces.append(("action", m.group(2).strip()))
        pos = m.end()
        if m.group(3):
            rest = source[pos:]
            pos += len(rest) - len(rest.lstrip())
    pieces.append(("text", source[pos:]))
    return [p for p in pieces if p != ("text", "")]


def parse(source: str) -> list[_Node]:
    pieces = _lex(source)
    nodes, _ = _parse(pieces, 0, top=True)
    return nodes


def _parse(pieces: list[tuple[str, str]], i: int, top: bool = False
           ) -> tuple[list[_Node], int]:
    nodes: list[_Node] = []
    while i < len(pieces):
        kind, text = pieces[i]
        i += 1
        if kind == "text":
            nodes.append(_Node("text", text))
            continue
        if text.startswith("/*"):
            continue
        word = text.split(None, 1)[0] if text else ""
        if word in ("end", "else"):
            if top:
                raise TemplateError(f"{{{{ {text} }}}} without an if or range")
            return nodes, i - 1
        if word in ("if", "range"):
            node = _Node(word, text[len(word):].strip())
            if word == "range" and ":=" in node.text:
                var, node.text = (s.strip() for s in node.text.split(":=", 1))
                node.var = var
            i = _block(pieces, i, node)
            nodes.append(node)
        elif text.startswith("$") and ":=" in text:
            var, expr = (s.strip() for s in text.split(":=", 1))
            nodes.append(_Node("set", expr, var=var))
        else:
            nodes.append(_Node("expr", text))
    if not top:
        raise TemplateError("an if or range without its end")
    return nodes, i


def _block(pieces: list[tuple[str, str]], i: int, node: _Node) -> int:
    node.body, i = _parse(pieces, i)
    text = pieces[i][1]
    i += 1
    if text == "end":
        return i
    if text.startswith("else if "):
        inner = _Node("if", text[len("else if "):].strip())
        i = _block(pieces, i, inner)
        node.orelse = [inner]
        return i
    node.orelse, i = _parse(pieces, i)
    if pieces[i][1] != "end":
        raise TemplateError(f"expected end, found {{{{ {pieces[i][1]} }}}}")
    return i + 1


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (
        isinstance(value, (list, dict)) and not value)


def _yaml(value: Any) -> str:
    if value is None or value == {} or value == []:
        return "{}" if value != [] else "[]"
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False).rstrip("\n")


def _required(message: str, value: Any) -> Any:
    if not truthy(value):
        raise TemplateError(message)
    return value


def _quote(value: Any) -> str:
    """Go's %q of the string, as Sprig's quote: escapes keep it one YAML scalar."""
    text = "" if value is None else _scalar(value)
    for raw, esc in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\t", "\\t")):
        text = text.replace(raw, esc)
    return f'"{text}"'


def _printf(fmt: str, *args: Any) -> str:
    return re.sub(r"%[sd]", "{}", fmt).format(*args)


FUNCS: dict[str, Callable[..., Any]] = {
    "quote": _quote,
    "toYaml": _yaml,
    "indent": lambda n, s: "\n".join(" " * n + line for line in str(s).split("\n")),
    "nindent": lambda n, s: "\n" + "\n".join(" " * n + line for line in str(s).split("\n")),
    "b64enc": lambda s: base64.b64encode(str(s).encode()).decode(),
    "required": _required,
    "default": lambda d, v: v if truthy(v) else d,
    "gt": lambda a, b: a > b, "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "not": lambda v: not truthy(v),
    "and": lambda *v: next((x for x in v if not truthy(x)), v[-1]),
    "or": lambda *v: next((x for x in v if truthy(x)), v[-1]),
    "int": lambda v: int(v or 0), "list": lambda *v: list(v),
    "trunc": lambda n, s: str(s)[:n], "printf": _printf,
}


class _Eval:
    def __init__(self, dot: dict[str, Any]) -> None:
        self.dot = dot
        self.vars: dict[str, Any] = {"$": dot}

    def pipeline(self, text: str) -> Any:
        tokens = [t for t in _TOKEN.findall(text) if t]
        value, rest = self._pipe(tokens)
        if rest:
            raise TemplateError(f"unexpected {rest[0]!r} in {{{{ {text} }}}}")
        return value

    def _pipe(self, tokens: list[str]) -> tuple[Any, list[str]]:
        value, tokens = self._command(tokens, None, piped=False)
        while tokens and tokens[0] == "|":
            value, tokens = self._command(tokens[1:], value, piped=True)
        return value, tokens

    def _command(self, tokens: list[str], prev: Any, piped: bool) -> tuple[Any, list[str]]:
        if not tokens:
            raise TemplateError("an empty command")
        head = tokens[0]
        if head in FUNCS:
            args, tokens = [], tokens[1:]
            while tokens and tokens[0] not in ("|", ")"):
                arg, tokens = self._operand(tokens)
                args.append(arg)
            if piped:
                args.append(prev)
            return FUNCS[head](*args), tokens
        if piped:
            raise TemplateError(f"{head!r} is not a function of the subset")
        return self._operand(tokens)

    def _operand(self, tokens: list[str]) -> tuple[Any, list[str]]:
        tok, rest = tokens[0], tokens[1:]
        if tok == "(":
            value, rest = self._pipe(rest)
            if not rest or rest[0] != ")":
                raise TemplateError("a ( without its )")
            return value, rest[1:]
        if tok.startswith('"'):
            return tok[1:-1].encode().decode("unicode_escape"), rest
        if re.fullmatch(r"-?\d+", tok):
            return int(tok), rest
        if tok in ("true", "false"):
            return tok == "true", rest
        if tok.startswith((".", "$")):
            return self._path(tok), rest
        raise TemplateError(f"{tok!r} is not a function or value of the subset")

    def _path(self, tok: str) -> Any:
        if tok.startswith("$"):
            name, _, tail = tok.partition(".")
            if name not in self.vars:
                raise TemplateError(f"undefined variable {name}")
            value = self.vars[name]
        else:
            value, tail = self.dot, tok[1:]
        for part in filter(None, tail.split(".")):
            value = value.get(part) if isinstance(value, dict) else None
        return value


def execute(nodes: list[_Node], ev: _Eval, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "expr":
            value = ev.pipeline(node.text)
            out.append("" if value is None else _scalar(value))
        elif node.kind == "set":
            ev.vars[node.var] = ev.pipeline(node.text)
        elif node.kind == "if":
            execute(node.body if truthy(ev.pipeline(node.text)) else node.orelse, ev, out)
        else:
            items = ev.pipeline(node.text)
            for item in items or ():
                if node.var:
                    ev.vars[node.var] = item
                execute(node.body, ev, out)
            if not items:
                execute(node.orelse, ev, out)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise TemplateError("a map or list printed without toYaml")
    return str(value)


def render(source: str, dot: dict[str, Any]) -> str:
    out: list[str] = []
    execute(parse(source), _Eval(dot), out)
    return "".join(out)
