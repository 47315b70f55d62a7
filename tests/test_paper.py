"""The paper cites only numbers that are in the results files it names.

The document is built from the committed results files; every number in it is a
`<span class="num" data-cite="NAME:PATH" data-fmt="FMT">`. The tests re-read the results
files with their own reader (not the builder's) and compare; they check that the source
text types no number outside its placeholders (years and the reference list aside), and
that every claim of every results file is shown with the source's statement, ours and
the verdict, and every run's command in the appendix.
"""

import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("markdown", reason="the paper extra: pip install -e '.[paper]'")
pytest.importorskip("matplotlib", reason="the paper extra: pip install -e '.[paper]'")

from paper._build import SOURCE, build, check, cited_spans  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"


def _results(folder=RESULTS):
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        record = json.loads(path.read_text())
        if not record["quick"]:
            out[path.stem] = record
    return out


def _lookup(node, path):
    for seg in path.split("."):
        if seg.startswith("#"):
            key, want = seg[1:].split("=", 1)
            return len([x for x in node if str(x[key]) == want])
        if isinstance(node, dict):
            node = node[seg]
        elif seg.isdigit():
            node = node[int(seg)]
        else:
            (node,) = [x for x in node if x.get("id") == seg]
    return node


def _text(value, spec):
    if isinstance(value, list):
        return ", ".join(_text(v, spec) for v in value)
    if value is None:
        return "n/a"
    if isinstance(value, str | bool):
        return str(value)
    if isinstance(value, int) and spec == ".3g":
        return str(value)
    return format(value, spec)


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    path = build(RESULTS, out)
    return path, path.read_text()


def test_source_types_no_number_outside_placeholders():
    body = SOURCE.read_text().split("\n## References")[0]
    body = re.sub(r"\{\{.*?\}\}", " ", body, flags=re.S)
    body = re.sub(r"\b(19|20)\d\d\b", " ", body)  # publication years of the citations
    typed = re.findall(r"(?<![\w.#-])\d+(?:\.\d+)?(?:e[-+]?\d+)?%?", body)
    assert typed == [], f"numbers typed into paper/paper.md: {typed}"


def test_every_cited_number_is_the_one_in_its_results_file(document):
    _, text = document
    results = _results()
    spans = cited_spans(text)
    assert len(spans) > 200, len(spans)
    for ref, spec, shown in spans:
        name, path = ref.split(":", 1)
        assert shown == _text(_lookup(results[name], path), spec), ref


def test_every_claim_and_command_is_shown(document):
    path, text = document
    cited = {ref for ref, _, _ in cited_spans(text)}
    results = _results()
    assert len(results) >= 10, sorted(results)
    for name, record in results.items():
        assert f"{name}:command" in cited, name
        for c in record["claims"]:
            for field in ("claim", "source.value", "ours.value", "ours.low", "ours.high"):
                assert f"{name}:claims.{c['id']}.{field}" in cited, (name, c["id"], field)
            assert f"{name}:claims.{c['id']}.verdict" in cited, (name, c["id"])
        for fig in record.get("figures", []):
            assert (path.parent / "figures" / f"{name}-{fig['id']}.png").stat().st_size > 0


def test_check_reports_a_number_that_changed(document, tmp_path):
    path, text = document
    copy = tmp_path / "results"
    shutil.copytree(RESULTS, copy, ignore=shutil.ignore_patterns("quick"))
    assert check(path, copy) == []
    # Change one cited number in the copy: the built document no longer matches it.
    name = sorted(_results())[0]
    record = json.loads((copy / f"{name}.json").read_text())
    claim = record["claims"][0]
    claim["ours"]["value"] = claim["ours"]["value"] * 1.5 + 1.0
    (copy / f"{name}.json").write_text(json.dumps(record))
    problems = check(path, copy)
    assert any(f"{name}:claims.{claim['id']}.ours.value" in p for p in problems), problems
