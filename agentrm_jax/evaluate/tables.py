"""The report's markdown table: `render_markdown(summary)`.

A cell is the success rate in % with its 95% Wilson interval, then the mean
progress with its 95% t interval, over task seeds; "(n=...)" where a cell has
fewer seeds than its column, and a † where its figures come from the first
samples of a larger Best-of-N run.
"""

from __future__ import annotations

import math

from agentrm_jax.evaluate.summary import Cell, Summary

__all__ = ["DERIVED_MARK", "render_markdown"]

DERIVED_MARK = "†"


def _fmt_cell(cell: Cell | None, full_n: int) -> str:
    if cell is None:
        return "—"
    lo, hi = cell.success_ci
    text = f"{100 * cell.success_rate:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"  # percent (the caption says so)
    mean, half = cell.progress_mean, cell.progress_half_width
    if not math.isnan(mean):
        text += f" · {mean:.2f}" + (f" ± {half:.2f}" if not math.isnan(half) else "")
    if cell.n != full_n:
        text += f" (n={cell.n})"
    if cell.derived:
        text += f" {DERIVED_MARK}"
    return text


def render_markdown(summary: Summary) -> str:
    """The results table as markdown, with a caption saying what the numbers are."""
    columns = list(summary.envs) + list(summary.averages)
    full_n = {c: max((summary.cells[(k, c)].n for k in summary.rows if (k, c) in summary.cells), default=0)
              for c in columns}
    role_name = {"held_in": "held-in", "held_out": "held-out", "unknown": "unregistered"}
    header = ["method"] + [f"{e} ({role_name[summary.roles[e]]}, n={full_n[e]})" for e in summary.envs] + \
             [f"{a} (n={full_n[a]})" for a in summary.averages]
    lines = [f"# Results: {summary.source}" if summary.source else "# Results", "",
             "Each cell: success rate in % [95% Wilson interval] · mean progress ± 95% t interval, over task "
             "seeds (n seeds per column unless marked). Averages pool the episodes of every env in the group "
             "(only for rows that ran on all of them). `random pick` and `pass@N` come from the same samples as "
             "the Best-of-N row of that N: one of the N at random, and whether any of the N succeeded.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(columns)) + "|"]
    for key in summary.rows:
        cells = [_fmt_cell(summary.cells.get((key, c)), full_n[c]) for c in columns]
        lines.append("| " + " | ".join([summary.labels[key]] + cells) + " |")
    if summary.derived_from:
        notes = sorted({n for ns in summary.derived_from.values() for n in ns})
        lines += ["", f"{DERIVED_MARK} from the first N samples of the Best-of-N runs at N = "
                      f"{', '.join(map(str, notes))} (no run of that N; they are distributed as its samples)."]
    return "\n".join(lines) + "\n"
