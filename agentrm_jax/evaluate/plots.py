"""The report's test-time-scaling plots: `plot_scaling(summary, dir)` writes one PNG per env and the mean.

Each PNG has success rate (top) and mean progress (bottom) against N for
Best-of-N, random pick and pass@N (left) and against the beam width for beam
search (right), with 95% bands and greedy as a horizontal line. `plot_heatmap`
draws a rows x columns grid of values (the transfer study's policy-FT and RM-FT
maps). matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from agentrm_jax.evaluate.summary import Cell, Summary

__all__ = ["plot_heatmap", "plot_scaling"]


def _series(summary: Summary, column: str, kind: str) -> dict[tuple[str, str, float, int], list[tuple[int, Cell]]]:
    """Scaling series of one column: (context, rm, temperature, K) -> [(N or W, cell)], sorted by x."""
    out: dict[tuple[str, str, float, int], list[tuple[int, Cell]]] = defaultdict(list)
    for key in summary.rows:
        if key.kind != kind or (key, column) not in summary.cells:
            continue
        x, k = (key.size[0], key.size[1]) if kind == "beam" else (key.size[0], 0)
        out[(key.context, key.rm, key.temperature, k)].append((x, summary.cells[(key, column)]))
    return {s: sorted(points, key=lambda p: p[0]) for s, points in sorted(out.items())}


def _metric(cell: Cell, metric: str) -> tuple[float, float, float]:
    """(value, band low, band high) of a cell: success rate with its Wilson interval, or mean progress +- t."""
    if metric == "success":
        lo, hi = cell.success_ci
        return cell.success_rate, lo, hi
    mean, half = cell.progress_mean, cell.progress_half_width
    half = 0.0 if math.isnan(half) else half
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def _plot_column(summary: Summary, column: str, path: Path) -> Path:
    """Two rows of panels: success rate (top) and mean progress (bottom) vs N (left) and beam width (right)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.0))
    greedy = [(k, summary.cells[(k, column)]) for k in summary.rows
              if k.kind == "greedy" and (k, column) in summary.cells]
    styles = {"best_of_n": ("o", "-"), "random_pick": ("s", "--"), "pass": ("^", ":")}
    names = {"best_of_n": "RM pick", "random_pick": "random pick", "pass": "pass@N (oracle)"}
    for row, (metric, ylabel) in enumerate((("success", "success rate"), ("progress", "mean progress"))):
        ax_n, ax_w = axes[row]
        xticks: dict[Any, set[int]] = {ax_n: set(), ax_w: set()}
        for kind in ("best_of_n", "random_pick", "pass"):
            for (context, rm, temp, _), points in _series(summary, column, kind).items():
                xs = [x for x, _ in points]
                figures = [_metric(c, metric) for _, c in points]
                if all(math.isnan(f[0]) for f in figures):
                    continue
                xticks[ax_n].update(xs)
                label = names[kind] + (f" [{rm}]" if rm else "") + (f" ({context})" if context else "")
                marker, line = styles[kind]
                lines = ax_n.plot(xs, [f[0] for f in figures], marker=marker, linestyle=line, label=label)
                if kind == "best_of_n":
                    ax_n.fill_between(xs, [f[1] for f in figures], [f[2] for f in figures], alpha=0.15,
                                      color=lines[0].get_color(), linewidth=0)
        for (context, rm, temp, k), points in _series(summary, column, "beam").items():
            xs = [x for x, _ in points]
            figures = [_metric(c, metric) for _, c in points]
            xticks[ax_w].update(xs)
            lines = ax_w.plot(xs, [f[0] for f in figures], marker="o", label=f"beam, K={k}" +
                              (f" [{rm}]" if rm else "") + (f" ({context})" if context else ""))
            ax_w.fill_between(xs, [f[1] for f in figures], [f[2] for f in figures], alpha=0.15,
                              color=lines[0].get_color(), linewidth=0)
        for ax, xlabel in ((ax_n, "N (samples)"), (ax_w, "beam width W")):
            for key, cell in greedy:
                ax.axhline(_metric(cell, metric)[0], color="0.4", linestyle="-.", linewidth=1,
                           label="greedy" + (f" ({key.context})" if key.context else ""))
            ax.set_xscale("log", base=2)
            ticks = sorted(xticks[ax])
            if ticks:
                ax.set_xticks(ticks)
                ax.set_xlim(ticks[0] / 1.3, ticks[-1] * 1.3)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc="best")
        ax_n.set_title(f"Best-of-N: {ylabel}")
        ax_w.set_title(f"step-level beam search: {ylabel}")
    where = column if column in summary.envs else f"{column} over {', '.join(summary.envs)}"
    count = max((c.n for (_, col), c in summary.cells.items() if col == column), default=0)
    fig.suptitle(f"test-time scaling: {where} ({count} {'task seeds' if column in summary.envs else 'episodes'}; "
                 f"bands: 95% Wilson for success, t for progress)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def plot_scaling(summary: Summary, out_dir: str | os.PathLike) -> list[Path]:
    """scaling_<env>.png per env and scaling_mean.png (pooled over envs); [] if no Best-of-N or beam rows."""
    if not any(k.kind in ("best_of_n", "beam") for k in summary.rows):
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_plot_column(summary, env, out_dir / f"scaling_{env}.png") for env in summary.envs]
    if "mean" in summary.averages:
        paths.append(_plot_column(summary, "mean", out_dir / "scaling_mean.png"))
    elif summary.envs:  # one env: its plot is the mean
        paths.append(_plot_column(summary, summary.envs[0], out_dir / "scaling_mean.png"))
    return paths


def plot_heatmap(values, row_labels, column_labels, path: str | os.PathLike, *, title: str, value_label: str,
                 notes=None, vmin: float = 0.0, vmax: float = 1.0) -> Path:
    """One heat map PNG: `values[i][j]` (floats, nan = not run, drawn blank) for row i, column j.

    values: [R, C] nested sequences; row_labels: R names; column_labels: C names; notes: optional [R, C]
    strings printed in the cells (default: the value to two decimals); vmin / vmax: the colour scale.
    Raises ValueError when the shapes disagree. Returns the path written.
    """
    rows = [list(map(float, r)) for r in values]
    if len(rows) != len(row_labels) or any(len(r) != len(column_labels) for r in rows):
        raise ValueError(f"plot_heatmap: values are {len(rows)} x {[len(r) for r in rows]}, labels "
                         f"{len(row_labels)} x {len(column_labels)}")
    if notes is not None and (len(notes) != len(rows) or any(len(n) != len(column_labels) for n in notes)):
        raise ValueError("plot_heatmap: notes must have the shape of values")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.ma.masked_invalid(np.asarray(rows, dtype=float).reshape(len(row_labels), len(column_labels)))
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(column_labels), 1.6 + 0.6 * len(row_labels)))
    image = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(column_labels)), labels=list(column_labels), rotation=35, ha="right")
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels))
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            text = notes[i][j] if notes is not None else ("" if math.isnan(value) else f"{value:.2f}")
            shade = 0.0 if math.isnan(value) else (value - vmin) / ((vmax - vmin) or 1.0)
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if shade > 0.6 else "white")
    fig.colorbar(image, ax=ax, label=value_label)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
