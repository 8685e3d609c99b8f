"""k8s/gotemplate.py: the subset of Helm's template language the chart uses, with
the outputs Go's text/template and Sprig give for the same templates."""

from __future__ import annotations

import pytest

from gossamer.k8s.gotemplate import TemplateError, render

DOT = {"Values": {"n": 2, "name": "web", "empty": "", "list": ["a", "b"],
                  "map": {"k": "v", "n": {"x": 1}}, "text": 'a "b"\nc'},
       "Release": {"Namespace": "ns"}}


@pytest.mark.parametrize(("source", "want"), [
    ("x: {{ .Values.name }}", "x: web"),
    ("x:\n  {{- .Values.name }}", "x:web"),
    ("{{ .Values.name -}}\n  y", "weby"),
    ("{{ if gt (int .Values.n) 1 }}many{{ else }}one{{ end }}", "many"),
    ("{{ if .Values.empty }}a{{ else if .Values.name }}b{{ else }}c{{ end }}", "b"),
    ("{{ range $x := .Values.list }}[{{ $x }}]{{ end }}", "[a][b]"),
    ("{{ range $x := .Values.missing }}x{{ else }}none{{ end }}", "none"),
    ("{{ .Values.text | quote }}", '"a \\"b\\"\\nc"'),
    ("{{ .Values.name | b64enc }}", "d2Vi"),
    ("m:{{ toYaml .Values.map | nindent 2 }}", "m:\n  k: v\n  n:\n    x: 1"),
    ("{{ printf \"%s.%s.svc\" .Values.name .Release.Namespace }}", "web.ns.svc"),
    ("{{ .Values.empty | default \"d\" }}", "d"),
    ("{{ and (eq (int .Values.n) 2) .Values.name }}", "web"),
    ("{{ $v := .Values.map }}{{ $v.k }}", "v"),
    ("{{ range $x := .Values.list }}{{ $.Release.Namespace }}{{ end }}", "nsns"),
    ("{{- /* a comment */ -}}\nx", "x"),
])
def test_renders_as_go_does(source: str, want: str) -> None:
    assert render(source, DOT) == want


@pytest.mark.parametrize(("source", "message"), [
    ('{{ required "name it" .Values.empty }}', "name it"),
    ("{{ lookup .Values.name }}", "not a function or value of the subset"),
    ("{{ if .Values.n }}x", "without its end"),
    ("{{ end }}", "without an if or range"),
    ("{{ .Values.map }}", "without toYaml"),
    ("{{ $nope }}", "undefined variable"),
])
def test_outside_the_subset_fails_loudly(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        render(source, DOT)
