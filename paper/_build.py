"""Build the paper from its Markdown source and the experiments' results files.

Interface: `build(results_dir, out_dir) -> path of paper.html`; `check(html, results_dir)
-> list of mismatches`. Invariant: every number in the built document enters through a
placeholder and is rendered as `<span class="num" data-cite="NAME:PATH" data-fmt="FMT">`
holding `format_value(resolve(results[NAME], PATH), FMT)`; `check` re-reads the results
files and compares each such span.

Placeholders in `paper/paper.md` (each `{{ ... }}`):

- `{{ NAME:PATH }}` or `{{ NAME:PATH | FMT }}`: a value of `experiments/results/NAME.json`.
  `PATH` is dot-separated keys; in a list, a segment is an index or the `id` of an item
  (`claims.pes_unbiased.ours.value`); `#KEY=VALUE` counts the items whose KEY is VALUE.
  `FMT` is a Python format spec (default `.3g`); a list is formatted item by item.
- `{{ claims NAME }}`: the table of NAME's claims (sentence, source, the source's number,
  ours with its interval, verdict, reason).
- `{{ figures NAME }}`: NAME's figures, drawn from the results file's `figures` entries.
- `{{ summary }}`: the verdicts of every experiment; `{{ appendix }}`: each run's command,
  date, duration and machine; `{{ others }}`: a section for every results file the text
  does not cite (claims and figures), so that no experiment is left out.
"""

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "experiments" / "results"
BUILD_DIR = Path(__file__).resolve().parent / "build"
SOURCE = Path(__file__).resolve().parent / "paper.md"

VERDICT_CLASS = {"holds": "holds", "does not hold": "fails", "not comparable": "nc"}
_PLACEHOLDER = re.compile(r"\{\{\s*(.+?)\s*\}\}")
_PACKAGES = ("jax", "jaxlib", "numpy", "optax", "optuna", "scikit-learn")


# --- values ---------------------------------------------------------------------------------


def load_results(results_dir, *, allow_quick: bool = False) -> dict:
    """`{name: record}` for every `NAME.json` in `results_dir`; quick (smoke) runs are
    refused unless `allow_quick` (a draft built from smoke runs)."""
    out = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("quick") and not allow_quick:
            continue
        out[path.stem] = record
    return out


def resolve(node, path: str):
    """The value at `path` (see the module docstring) in a results record."""
    for seg in path.split("."):
        if seg.startswith("#"):
            key, _, want = seg[1:].partition("=")
            return sum(1 for item in node if str(item.get(key)) == want)
        if isinstance(node, list):
            if seg.lstrip("-").isdigit():
                node = node[int(seg)]
                continue
            matches = [item for item in node if isinstance(item, dict) and item.get("id") == seg]
            if not matches:
                raise KeyError(f"no item with id {seg!r} in path {path!r}")
            node = matches[0]
        else:
            if seg not in node:
                raise KeyError(f"no key {seg!r} in path {path!r}")
            node = node[seg]
    return node


def format_value(value, spec: str = ".3g") -> str:
    """A value as the document prints it: numbers by `spec`, lists item by item."""
    if isinstance(value, list):
        return ", ".join(format_value(v, spec) for v in value)
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int) and spec == ".3g":
        return str(value)
    return format(value, spec)


def cite(results, name: str, path: str, spec: str = ".3g") -> str:
    if name not in results:
        raise KeyError(f"the paper cites {name!r}, which has no results file")
    text = format_value(resolve(results[name], path), spec)
    return (
        f'<span class="num" data-cite="{html.escape(name)}:{html.escape(path)}" '
        f'data-fmt="{html.escape(spec)}">{html.escape(text)}</span>'
    )


# --- blocks ---------------------------------------------------------------------------------


def claims_table(results, name: str) -> str:
    record = results[name]
    rows = []
    for c in record["claims"]:
        cid = c["id"]
        base = f"claims.{cid}"
        src = c["source"]
        figure = cite(results, name, f"{base}.source.figure") if src.get("figure") else ""
        unit = c["ours"].get("unit") or ""
        ours = (
            f"{cite(results, name, f'{base}.ours.value', '.4g')} "
            f"[{cite(results, name, f'{base}.ours.low', '.3g')}, "
            f"{cite(results, name, f'{base}.ours.high', '.3g')}]"
            f"{' ' + html.escape(unit) if unit else ''}"
            f"<br><small>{cite(results, name, f'{base}.ours.interval')}</small>"
        )
        verdict = c["verdict"]
        rows.append(
            "<tr>"
            f"<td>{cite(results, name, f'{base}.claim')}</td>"
            f"<td>{cite(results, name, f'{base}.source.paper')}"
            f"{'<br><small>' + figure + '</small>' if figure else ''}</td>"
            f"<td>{cite(results, name, f'{base}.source.value')}</td>"
            f"<td>{ours}</td>"
            f'<td class="verdict {VERDICT_CLASS[verdict]}">'
            f"{cite(results, name, f'{base}.verdict')}</td>"
            f"<td><small>{cite(results, name, f'{base}.reason')}</small></td>"
            "</tr>"
        )
    return (
        '<table class="claims"><thead><tr><th>claim</th><th>source</th>'
        "<th>the source says</th><th>ours [interval]</th><th>verdict</th><th>how judged</th>"
        "</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"
    )


def summary_table(results) -> str:
    rows = []
    for name in sorted(results):
        cells = "".join(
            f'<td class="{cls}">{cite(results, name, f"claims.#verdict={verdict}")}</td>'
            for verdict, cls in VERDICT_CLASS.items()
        )
        rows.append(
            f'<tr><td><a href="#{name}">{html.escape(name)}</a></td>'
            f"<td>{cite(results, name, 'title')}</td>{cells}</tr>"
        )
    return (
        '<table class="summary"><thead><tr><th>experiment</th><th>title</th><th>holds</th>'
        "<th>does not hold</th><th>not comparable</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def appendix_table(results) -> str:
    rows = []
    for name in sorted(results):
        versions = ", ".join(
            f"{p} {cite(results, name, f'machine.versions.{p}')}"
            for p in _PACKAGES
            if results[name]["machine"]["versions"].get(p)
        )
        rows.append(
            "<tr>"
            f"<td><code>{cite(results, name, 'command')}</code></td>"
            f"<td>{cite(results, name, 'date')}</td>"
            f"<td>{cite(results, name, 'wall_seconds', '.0f')} s</td>"
            f"<td>{cite(results, name, 'seeds')}</td>"
            f"<td>{cite(results, name, 'machine.cpu_model')}, "
            f"{cite(results, name, 'machine.cpu_cores')} cores; python "
            f"{cite(results, name, 'machine.python')}; {versions}</td>"
            "</tr>"
        )
    return (
        '<table class="appendix"><thead><tr><th>command</th><th>date (UTC)</th>'
        "<th>wall time</th><th>seeds</th><th>machine</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def _clean(values):
    return [float("nan") if v is None else v for v in values]


def draw_figure(spec: dict, path: Path) -> None:
    """Draw one `figure(...)` entry of a results file with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kind = spec["kind"]
    series = spec["series"]
    many = kind == "bar" and len(series[0]["x"]) > 8  # many categories: horizontal bars
    height = 3.8 if not many else 0.9 + 0.22 * len(series[0]["x"]) * len(series)
    fig, ax = plt.subplots(figsize=(6.4, height))
    if kind == "bar":
        labels = [str(x) for x in series[0]["x"]]
        width = 0.8 / len(series)
        pos = np.arange(len(labels))
        for i, s in enumerate(series):
            y = np.asarray(_clean(s["y"]), float)
            err = None
            if "low" in s:
                lo, hi = np.asarray(_clean(s["low"]), float), np.asarray(_clean(s["high"]), float)
                err = np.abs(np.vstack([y - lo, hi - y]))
            if many:
                ax.barh(pos + i * width, y, width, xerr=err, label=s["label"], capsize=2)
            else:
                ax.bar(pos + i * width, y, width, yerr=err, label=s["label"], capsize=3)
        ticks = pos + width * (len(series) - 1) / 2
        if many:
            ax.set_yticks(ticks)
            ax.set_yticklabels(labels, fontsize=7)
            ax.invert_yaxis()
        else:
            ax.set_xticks(ticks)
            ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=7)
    else:
        for s in series:
            x = np.asarray(_clean(s["x"]), float)
            y = np.asarray(_clean(s["y"]), float)
            # A "line" series whose x do not increase (one point per seed, say) is drawn as
            # points: a line through them would suggest an order that is not there.
            ordered = bool(np.all(np.diff(x[np.isfinite(x)]) >= 0))
            if kind == "line" and not ordered:
                ax.scatter(x, y, s=18, label=s["label"], zorder=3)
            elif kind == "line":
                (line,) = ax.plot(x, y, marker="o", markersize=3, label=s["label"])
                if "low" in s:
                    ax.fill_between(
                        x, _clean(s["low"]), _clean(s["high"]), alpha=0.2, color=line.get_color()
                    )
            else:
                if "low" in s:
                    lo, hi = (
                        np.asarray(_clean(s["low"]), float),
                        np.asarray(_clean(s["high"]), float),
                    )
                    ax.errorbar(
                        x,
                        y,
                        yerr=np.abs(np.vstack([y - lo, hi - y])),
                        fmt="o",
                        capsize=3,
                        label=s["label"],
                    )
                else:
                    ax.scatter(x, y, s=14, label=s["label"])
        ax.set_xscale(spec["xscale"])
    xlabel, ylabel = spec["xlabel"], spec["ylabel"]
    if many:  # the value axis is horizontal
        ax.set_xscale(spec["yscale"])
        xlabel, ylabel = ylabel, xlabel
    else:
        ax.set_yscale(spec["yscale"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(spec["title"], fontsize=10)
    ax.grid(alpha=0.3)
    if len(series) > 1 or kind != "bar":
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figures_html(results, name: str, out_dir: Path, draw: bool) -> str:
    parts = []
    for i, spec in enumerate(results[name].get("figures", [])):
        fname = f"{name}-{spec['id']}.png"
        if draw:
            (out_dir / "figures").mkdir(parents=True, exist_ok=True)
            draw_figure(spec, out_dir / "figures" / fname)
        caption = cite(results, name, f"figures.{i}.title")
        if spec.get("caption"):
            caption += " " + cite(results, name, f"figures.{i}.caption")
        parts.append(
            f'<figure><img src="figures/{fname}" alt="{html.escape(spec["title"])}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return "\n".join(parts)


# --- the document ---------------------------------------------------------------------------

_CSS = """
body { font-family: Georgia, serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.5; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.5rem; vertical-align: top; }
th { background: #f3f3f3; }
td.holds, .verdict.holds { background: #e3f4e3; }
td.fails, .verdict.fails { background: #f8e0e0; }
td.nc, .verdict.nc { background: #eeeeee; }
figure { margin: 1rem 0; } figure img { max-width: 100%; }
figcaption { font-size: 0.85rem; color: #555; }
code { font-size: 0.85rem; }
"""


def _cited_names(text: str) -> set:
    names = set()
    for m in _PLACEHOLDER.finditer(text):
        body = m.group(1)
        if ":" in body.split("|")[0] and not body.startswith(("claims ", "figures ")):
            names.add(body.split(":", 1)[0].strip())
        elif body.startswith(("claims ", "figures ")):
            names.add(body.split()[1])
    return names


def render(text: str, results: dict, out_dir: Path, draw: bool) -> str:
    """Substitute every placeholder of `text`."""
    cited = _cited_names(text)

    def sub(m):
        body = m.group(1)
        words = body.split()
        if words[0] == "claims":
            return "\n\n" + claims_table(results, words[1]) + "\n\n"
        if words[0] == "figures":
            return "\n\n" + figures_html(results, words[1], out_dir, draw) + "\n\n"
        if body == "summary":
            return "\n\n" + summary_table(results) + "\n\n"
        if body == "appendix":
            return "\n\n" + appendix_table(results) + "\n\n"
        if body == "others":
            sections = []
            for name in sorted(set(results) - cited):
                sections.append(
                    f"\n\n### {html.escape(results[name]['title'])} {{#{name}}}\n\n"
                    + claims_table(results, name)
                    + "\n\n"
                    + figures_html(results, name, out_dir, draw)
                )
            return "".join(sections) or "\n\nNone.\n\n"
        ref, _, spec = body.partition("|")
        name, _, path = ref.strip().partition(":")
        return cite(results, name.strip(), path.strip(), spec.strip() or ".3g")

    return _PLACEHOLDER.sub(sub, text)


def build(
    results_dir=RESULTS_DIR, out_dir=BUILD_DIR, *, figures: bool = True, allow_quick=False
) -> Path:
    """Render `paper/paper.md` with the results in `results_dir` into `out_dir/paper.html`."""
    import markdown

    results = load_results(results_dir, allow_quick=allow_quick)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = render(SOURCE.read_text(), results, out_dir, figures)
    content = markdown.markdown(body, extensions=["extra", "toc"])
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>hypergrad: the field's claims, reproduced</title>"
        f"<style>{_CSS}</style></head><body>\n{content}\n</body></html>\n"
    )
    path = out_dir / "paper.html"
    path.write_text(page)
    return path


class _Spans(HTMLParser):
    """Collects `(cite, fmt, text)` of every `<span class="num">` of a document."""

    def __init__(self):
        super().__init__()
        self.spans, self._open = [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "span" and a.get("class") == "num":
            self._open = [a["data-cite"], a["data-fmt"], ""]

    def handle_data(self, data):
        if self._open is not None:
            self._open[2] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.spans.append(tuple(self._open))
            self._open = None


def cited_spans(html_text: str) -> list:
    parser = _Spans()
    parser.feed(html_text)
    return parser.spans


def check(html_path, results_dir=RESULTS_DIR, *, allow_quick: bool = False) -> list:
    """Every cited number of a built document that is not the one in its results file."""
    results = load_results(results_dir, allow_quick=allow_quick)
    problems = []
    for ref, spec, text in cited_spans(Path(html_path).read_text()):
        name, _, path = ref.partition(":")
        try:
            want = format_value(resolve(results[name], path), spec)
        except KeyError as e:
            problems.append(f"{ref}: {e}")
            continue
        if text != want:
            problems.append(f"{ref}: the paper says {text!r}, the results file {want!r}")
    return problems
