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
        import matplotlib  # type: ignore[import-not-found]  # optional extra "bench"
    except ImportError:
        return 'matplotlib is not installed (pip install "asyncore-rs[bench]")'
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found]

    scenarios = [s for s in report["scenarios"].values() if bars(report, s)]
    if not scenarios:
        return "no scenario has a result"
    cols = 2 if len(scenarios) > 1 else 1
    rows = math.ceil(len(scenarios) / cols)
    n_impls = max(len(bars(report, s)) for s in scenarios)
    # Same output for the same report: no timestamp, a fixed id salt, text kept as text.
    with plt.rc_context({"svg.hashsalt": "asyncore-rs", "svg.fonttype": "none", "font.size": 9}):
        fig, axes = plt.subplots(
            rows,
            cols,
            figsize=(11, 0.35 * n_impls * rows + 1.4 * rows + 0.6),
            squeeze=False,
            layout="constrained",
        )
        for ax, scn in zip(axes.flat, scenarios, strict=False):
            draw_panel(ax, report, scn)
        for ax in list(axes.flat)[len(scenarios) :]:
            ax.set_visible(False)
        m = report["machine"]
        fig.suptitle(
            f"Server CPU time per unit of work, µs (lower is better): CPython {m['python']}, "
            f"{m['cpus']} CPUs, {report['date'][:10]}",
            fontsize=11,
        )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="svg", metadata={"Date": None})
        plt.close(fig)
    return None


def axis_limit(values: list[float]) -> float:
    """Where a panel's axis ends: a bar far longer than the typical one (asyncio's, or
    the pure-Python asyncore's with thousands of idle connections) is clipped there, so
    that the differences between the others stay readable. A log scale would hide them.
    """
    ordered = sorted(values)
    typical = ordered[(len(ordered) - 1) // 2]
    shown = [v for v in ordered if v <= 3 * typical]
    return 1.5 * shown[-1] if len(shown) < len(ordered) else ordered[-1]


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
    limit = axis_limit(values)
    widths = [min(v, limit) for v in values]
    bars_ = ax.barh(list(ys), widths, color=colours)
    ax.set_xlim(0, limit * 1.25)
    for bar, y, v in zip(bars_, ys, values, strict=True):
        text = f"{v:,.0f}" if v >= 100 else f"{v:.2f}"
        if v > limit:
            # A clipped bar is hatched and says so, with its real value.
            bar.set_hatch("///")
            bar.set_edgecolor("white")
            text += " (clipped)"
        ax.text(min(v, limit) + limit * 0.01, y, text, va="center", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(axis="y", length=0)
