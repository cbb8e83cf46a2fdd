"""`agentrm report RESULTS.jsonl`: a markdown table and test-time-scaling plots from eval rows.

`write_report` reads the rows and writes DIR/results.md and DIR/scaling_*.png.
The parts live beside it, one concept a file, and their public names are
re-exported here:

    evaluate/summary.py      rows -> Summary (table rows x env columns of Cells; RowKey, summarize)
    evaluate/statistics.py   Wilson interval of a success rate, t interval of a mean (scipy.stats)
    evaluate/tables.py       the markdown table (render_markdown)
    evaluate/plots.py        the scaling PNGs (plot_scaling; matplotlib imported only there)

Everything is sorted before it is summed, so the same rows in any file order
give the same table and plots.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agentrm_jax.evaluate.plots import plot_scaling
from agentrm_jax.evaluate.statistics import t_interval, t_quantile_975, wilson_interval
from agentrm_jax.evaluate.summary import Cell, RowKey, Summary, summarize
from agentrm_jax.evaluate.tables import render_markdown

__all__ = ["Cell", "RowKey", "Summary", "summarize", "render_markdown", "plot_scaling", "wilson_interval",
           "t_interval", "t_quantile_975", "write_report"]


def write_report(results: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                 split=None) -> tuple[Path, list[Path], str]:
    """Read eval rows, write DIR/results.md and the scaling PNGs; returns (markdown path, PNG paths, markdown).

    out_dir: default: the results file's directory. split: the `TaskSplit` whose roles make the held-in /
    held-out columns (default: configs/tasks/agentrm_split.yaml's).
    """
    from agentrm_jax.evaluate.runner import read_rows

    results = Path(results)
    if not results.exists():
        raise FileNotFoundError(f"{results}: no such results file (write one with `agentrm eval`)")
    rows = read_rows(results)
    if not rows:
        raise ValueError(f"{results}: no eval rows yet (run `agentrm eval` first)")
    missing = [i for i, r in enumerate(rows, 1) if not {"env", "method", "success"} <= set(r)]
    if missing:
        raise ValueError(f"{results}: row {missing[0]} is not an eval row (needs env, method, success, ...)")
    summary = summarize(rows, source=results.name, split=split)
    if not summary.rows:
        raise ValueError(f"{results}: no rows of a known method (greedy, best_of_n, beam)")
    out_dir = Path(out_dir) if out_dir is not None else results.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(summary)
    md_path = out_dir / "results.md"
    md_path.write_text(markdown, encoding="utf-8")
    pngs = plot_scaling(summary, out_dir)
    if not pngs:
        print("report: no Best-of-N or beam rows, so no scaling plots", file=sys.stderr)
    return md_path, pngs, markdown
