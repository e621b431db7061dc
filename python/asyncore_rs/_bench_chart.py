"""The benchmark chart: server CPU per unit by implementation, one panel per scenario.

Needs matplotlib (``pip install "asyncore-rs[bench]"``); the bench works without it
and says why there is no chart.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

# One colour per implementation, the same in every panel and every chart.
COLOURS = {
    "asyncore_rs": "#c0392b",
    "asyncore_rs_unbatched": "#e6837a",
    "pure_python": "#2e6da4",
    "uvloop": "#3c9a5f",
    "asyncio": "#8fbf9f",
    "ceiling": "#7f7f7f",
}


def bars(report: dict, scenario: dict) -> list[tuple[str, str, float]]:
    """[(implementation key, label, CPU us per unit), ...] for the runs that gave a figure."""
    out = []
    for key, result in scenario["results"].items():
        cpu = result.get("median", {}).get("cpu_us_per_unit")
        if cpu is not None:
            out.append((key, report["implementations"][key]["label"], cpu))
    return out


def write_chart(report: dict, path: Path) -> str | None:
    """Writes the chart as SVG to `path`; returns None, or why there is no chart."""
    try:
        import matplotlib
    except ImportError:
        return 'matplotlib is not installed (pip install "asyncore-rs[bench]")'
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [s for s in report["scenarios"].values() if bars(report, s)]
    if not scenarios:
        return "no scenario has a result"
    cols = 2 if len(scenarios) > 1 else 1
    rows = math.ceil(len(scenarios) / cols)
    n_impls = max(len(bars(report, s)) for s in scenarios)
    # Same output for the same report: no timestamp, a fixed id salt, text kept as text.
    with plt.rc_context({"svg.hashsalt": "asyncore-rs", "svg.fonttype": "none", "font.size": 9}):
        fig, axes = plt.subplots(
            rows, cols, figsize=(11, 0.35 * n_impls * rows + 1.4 * rows + 0.6), squeeze=False
        )
        for ax, scn in zip(axes.flat, scenarios):
            draw_panel(ax, report, scn)
        for ax in list(axes.flat)[len(scenarios) :]:
            ax.set_visible(False)
        m = report["machine"]
        fig.suptitle(
            f"Server CPU time per unit of work, µs (lower is better): CPython {m['python']}, "
            f"{m['cpus']} CPUs, {report['date'][:10]}",
            fontsize=11,
        )
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="svg", metadata={"Date": None})
        plt.close(fig)
    return None


def draw_panel(ax, report: dict, scn: dict) -> None:
    data = bars(report, scn)
    labels = [label for _, label, _ in data]
    values = [cpu for _, _, cpu in data]
    colours = [COLOURS.get(key, "#555555") for key, _, _ in data]
    ys = range(len(data))
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    title = textwrap.fill(f"{scn['title']} (per {scn['unit']})", 52)
    ax.set_title(title, fontsize=9.5, loc="left")
    top = max(values)
    # A log scale would hide the differences that matter; an idle-scenario bar hundreds
    # of times longer than the others is clipped and labelled with its value instead.
    rest = sorted(values)[:-1]
    limit = top
    if rest and top > 20 * max(rest):
        limit = 4 * max(rest)
    ax.barh(list(ys), [min(v, limit) for v in values], color=colours)
    ax.set_xlim(0, limit * 1.18)
    for y, v in zip(ys, values):
        shown = min(v, limit)
        text = f"{v:,.0f}" if v >= 100 else f"{v:.2f}"
        if v > limit:
            text += " (clipped)"
        ax.text(shown + limit * 0.01, y, text, va="center", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(axis="y", length=0)
