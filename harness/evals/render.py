"""Render a Report: report.md, plots/*.png (matplotlib's Agg canvas), report.html.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas directly, never through
pyplot, so no global backend state is touched.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from harness.evals.report import Report
from harness.report import dollars

PLOTS = ("scaling.png", "statuses.png", "stages.png")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _speculation_lines(spec: dict[str, Any]) -> list[str]:
    lines = [
        "## Draft/target decoding",
        "",
        f"{spec['runs']} solve(s) speculated ({', '.join(spec['modes'])}). Output tokens: "
        f"{spec['draft_tokens']:,} by the draft, {spec['target_tokens']:,} by the target "
        f"({_pct(spec['draft_share'])} drafted).",
    ]
    if spec["drafted"]:
        lines.append(
            f"Token level: {spec['accepted']:,} of {spec['drafted']:,} drafts accepted "
            f"({_pct(spec['acceptance_rate'])})."
        )
    if spec["steps_scored"]:
        alphas = ", ".join(str(a) for a in spec["alphas"]) or "-"
        lines.append(
            f"Step level: {spec['steps_scored']:,} steps scored, {spec['steps_rejected']:,} "
            f"rejected (realized rate {spec['rejection_rate']:.3f}; alpha {alphas}), "
            f"{spec['resamples']:,} resampled."
        )
    return lines


def markdown(r: Report) -> str:
    acc = r.selection_accuracy
    lines = [
        f"# Evaluation report: {r.title}",
        "",
        f"- data set: `{r.meta.get('dataset', '?')}` ({r.meta.get('split', '')})",
        f"- instances: {r.total}",
        f"- **resolved: {r.resolved} ({_pct(r.rate(r.resolved))})**",
        f"- coverage (any candidate resolves): {r.covered} ({_pct(r.rate(r.covered))})",
        f"- selection accuracy (resolved / covered): {_pct(acc) if acc is not None else 'n/a'}",
        f"- tokens: {r.tokens:,}; cost: {dollars(r.cost_usd, r.unpriced, places=2)}",
        "",
        "## Final status",
        "",
        "| status | instances |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in r.statuses.items()),
        "",
    ]
    if r.solve_statuses:
        lines += [
            "## Solver outcome",
            "",
            "| status | instances |",
            "|---|---:|",
            *(f"| {k} | {v} |" for k, v in r.solve_statuses.items()),
            "",
        ]
    if r.scaling:
        lines += [
            "## Scaling with the number of samples",
            "",
            "Over every subset of k of an instance's samples (exact averages, the unbiased "
            "estimator): coverage@k, the chance that one of them resolves (pass@k); "
            "selected@k, the chance that the most-voted of their patches resolves.",
            "",
            "| samples | coverage@k | selected@k |",
            "|---:|---:|---:|",
            *(f"| {p.samples} | {_pct(p.coverage)} | {_pct(p.selected)} |" for p in r.scaling),
            "",
        ]
    if r.speculation:
        lines += [*_speculation_lines(r.speculation), ""]
    total = sum(r.stage_s.values()) or 1.0
    lines += [
        "## Time per stage",
        "",
        "| stage | seconds | share |",
        "|---|---:|---:|",
        *(f"| {k} | {v:,.1f} | {_pct(v / total)} |" for k, v in r.stage_s.items()),
        "",
        "## Instances",
        "",
        "| instance | final | resolving / samples | tokens | cost | solve s |",
        "|---|---|---:|---:|---:|---:|",
        *(
            f"| {i.instance_id} | {i.status} | {i.resolving} / {i.samples} | {i.tokens:,} | "
            f"{'unknown' if i.cost_usd is None else f'${i.cost_usd:.2f}'} | {i.solve_s:.0f} |"
            for i in r.instances
        ),
        "",
        "![scaling](plots/scaling.png)",
        "![statuses](plots/statuses.png)",
        "![stages](plots/stages.png)",
        "",
    ]
    return "\n".join(lines)


def plots(r: Report, folder: Path) -> list[Path]:
    """Draw the three PNGs; returns their paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        out.append(folder / name)

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ks = [p.samples for p in r.scaling]
    ax.plot(ks, [100 * p.coverage for p in r.scaling], "o-", label="coverage@k")
    ax.plot(ks, [100 * p.selected for p in r.scaling], "s-", label="selected@k")
    ax.axhline(100 * r.rate(r.resolved), color="gray", ls="--", label="final (resolved)")
    ax.set(xlabel="samples per instance", ylabel="% of instances", ylim=(0, 100))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Scaling with samples")
    ax.legend(loc="lower right")
    save(fig, "scaling.png")

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    names = list(r.statuses)
    ax.barh(names, [r.statuses[n] for n in names], color="tab:blue")
    ax.invert_yaxis()
    ax.set(xlabel="instances")
    ax.set_title("Final status")
    save(fig, "statuses.png")

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    stages = list(r.stage_s)
    ax.bar(stages, [r.stage_s[s] / 60 for s in stages], color="tab:orange")
    ax.set(ylabel="minutes (all instances)")
    ax.set_title("Time per stage")
    save(fig, "stages.png")
    return out


def html_page(r: Report, folder: Path) -> str:
    """One self-contained page: the Markdown's numbers as tables, the plots inlined."""
    md = markdown(r)
    body: list[str] = []
    table: list[list[str]] = []
    items: list[str] = []

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)

    def flush_items() -> None:
        if items:
            body.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
            items.clear()

    def flush_table() -> None:
        if table:
            head, *rows = table
            body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>")
            body.extend("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
            body.append("</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            cells = [inline(c.strip()) for c in line.strip("|").split("|")]
            if not set("".join(cells)) <= set("-:"):
                table.append(cells)
            continue
        flush_table()
        if line.startswith("- "):
            items.append(inline(line[2:]))
            continue
        flush_items()
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            name = line.split("(", 1)[1].rstrip(")")
            data = base64.b64encode((folder / name).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush_table()
    flush_items()
    style = (
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:left}img{max-width:100%;display:block;margin:1em 0}"
    )
    title = html.escape(r.title)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(r: Report, folder: Path) -> dict[str, Path]:
    """report.md, plots/*.png and report.html in `folder`; returns their paths."""
    paths = {"markdown": folder / "report.md", "html": folder / "report.html"}
    plots(r, folder / "plots")
    paths["markdown"].write_text(markdown(r))
    paths["html"].write_text(html_page(r, folder))
    return paths
