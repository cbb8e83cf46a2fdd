"""`agentrm report RESULTS.jsonl`: a markdown table and test-time-scaling plots from eval rows.

Table rows are methods with their sizes ("greedy", "best_of_n N=4", "beam 2x2")
plus two rows per Best-of-N size taken from the same samples' baselines:
"random pick N=4" (what N samples give without an RM) and "pass@N=4 (oracle)"
(any of the N succeeded: the ceiling of any scorer). Columns are envs, held-in
ones first, then held-out (the env registry's `role`), then averages. A cell
is the success rate with its 95% Wilson interval and the mean progress with
its 95% t interval, over task seeds.

Best-of-N rows also carry figures for their first n samples (n = powers of
two below N; `search.best_of_n`), which are distributed as a Best-of-n run's.
A Best-of-N size with no run of its own in an env is filled from those
figures (the cell is marked †), so one run at N=8 gives the N=1, 2, 4 rows.

Everything is sorted before it is summed, so the same rows in any file order
give the same table and plots.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Cell", "RowKey", "Summary", "summarize", "render_markdown", "plot_scaling", "wilson_interval",
           "t_interval", "write_report"]

Z95 = 1.959963984540054
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # Student t 0.975 quantiles, df = 1..30
KINDS = ("greedy", "best_of_n", "random_pick", "pass", "beam")
DERIVED_MARK = "†"


# ------------------------------------------------------------------------------------------ statistics


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (fractions in [0, 1]); (nan, nan) for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def t_quantile_975(df: int) -> float:
    """Student t 0.975 quantile: a table to df 30, a Cornish-Fisher expansion beyond (error < 1e-3)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df * df)


def t_interval(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of its 95% t interval); half-width nan for fewer than two values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, t_quantile_975(n - 1) * math.sqrt(var / n)


# --------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True, order=True)
class RowKey:
    """One table row. context: "policy / split" when the file holds more than one, else "".

    kind: one of KINDS; size: (N,) for best_of_n / random_pick / pass, (W, K) for beam, () for greedy;
    rm: the scorer ("" where none is involved); temperature: -1 for greedy.
    """

    context: str
    kind_order: int
    rm: str
    temperature: float
    size: tuple[int, ...]

    @property
    def kind(self) -> str:
        return KINDS[self.kind_order]

    def label(self, *, show_rm: bool, show_temperature: bool) -> str:
        kind, size = self.kind, self.size
        text = {"greedy": "greedy",
                "best_of_n": f"best_of_n N={size[0]}" if size else "best_of_n",
                "random_pick": f"random pick N={size[0]}" if size else "random pick",
                "pass": f"pass@N={size[0]} (oracle)" if size else "pass@N (oracle)",
                "beam": f"beam {size[0]}x{size[1]}" if len(size) == 2 else "beam"}[kind]
        if show_rm and self.rm:
            text += f" [{self.rm}]"
        if show_temperature and kind != "greedy":
            text += f" T={self.temperature:g}"
        return f"{self.context}: {text}" if self.context else text


@dataclass(frozen=True)
class Cell:
    """Figures of one (row, env or average) over task seeds: n seeds, successes, progress values.

    derived: some figures come from the first-n-samples baselines of a larger Best-of-N run.
    """

    successes: int
    progress: tuple[float, ...]
    derived: bool = False

    @property
    def n(self) -> int:
        return len(self.progress)

    @property
    def success_rate(self) -> float:
        return self.successes / self.n if self.n else math.nan

    @property
    def success_ci(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n)

    @property
    def progress_mean(self) -> float:
        return t_interval(list(self.progress))[0]

    @property
    def progress_half_width(self) -> float:
        return t_interval(list(self.progress))[1]


@dataclass(frozen=True)
class Summary:
    """Everything the table and plots show.

    envs: column order (held-in first, then held-out, then envs the registry does not know).
    roles: env -> "held_in" | "held_out" | "unknown". rows: row order.
    cells: (row, column) -> Cell, column an env name or one of the averages in `averages`.
    averages: average columns, e.g. ("held-in mean", "held-out mean", "mean") (pooled episodes of
      a row over those envs; only for rows that have every env of the group).
    """

    source: str
    envs: tuple[str, ...]
    roles: dict[str, str]
    rows: tuple[RowKey, ...]
    cells: dict[tuple[RowKey, str], Cell]
    averages: tuple[str, ...]
    labels: dict[RowKey, str] = field(default_factory=dict)
    derived_from: dict[RowKey, tuple[int, ...]] = field(default_factory=dict)


def _role(env: str) -> str:
    from agentrm_jax.envs import REGISTRY

    spec = REGISTRY.get(env)
    return spec.role if spec is not None else "unknown"


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return 0.0


def _sort_key(row: dict[str, Any]) -> tuple:
    return (str(row.get("env")), str(row.get("split", "")), int(row.get("seed", 0)), str(row.get("method")),
            json.dumps(row.get("params", {}), sort_keys=True), str(row.get("rm") or ""), str(row.get("policy", "")),
            str(row.get("key", "")))


def summarize(rows: list[dict[str, Any]], *, source: str = "") -> Summary:
    """Group eval rows into table rows x env columns (see the module docstring)."""
    rows = sorted((r for r in rows if r.get("method") in ("greedy", "best_of_n", "beam")), key=_sort_key)
    contexts = sorted({(str(r.get("policy", "")), str(r.get("split", ""))) for r in rows})
    multi_context = len(contexts) > 1
    # direct[(row, env)][seed] = (success, progress); derived[(row, env)][N][seed] = ...
    direct: dict[tuple[RowKey, str], dict[int, tuple[bool, float]]] = defaultdict(dict)
    derived: dict[tuple[RowKey, str], dict[int, dict[int, tuple[bool, float]]]] = defaultdict(lambda: defaultdict(dict))

    def put(key: RowKey, env: str, seed: int, success: Any, progress: Any):
        direct[(key, env)].setdefault(seed, (bool(_num(success)), _num(progress)))  # first row (sorted) wins

    for r in rows:
        env, seed, params = str(r["env"]), int(r.get("seed", 0)), r.get("params") or {}
        context = f"{r.get('policy', '')} / {r.get('split', '')}" if multi_context else ""
        rm = "" if r["method"] == "greedy" or r.get("rm") in (None, "none") else str(r["rm"])
        temp = -1.0 if r["method"] == "greedy" else _num(params.get("temperature", math.nan))
        if r["method"] == "greedy":
            put(RowKey(context, 0, "", -1.0, ()), env, seed, r.get("success"), r.get("progress"))
        elif r["method"] == "beam":
            size = (int(params.get("beam_width", 0)), int(params.get("expansions", 0)))
            put(RowKey(context, 4, rm, temp, size), env, seed, r.get("success"), r.get("progress"))
        else:
            n, b = int(params.get("n", 0)), r.get("baselines") or {}
            put(RowKey(context, 1, rm, temp, (n,)), env, seed, r.get("success"), r.get("progress"))
            if "random_pick_success" in b:
                put(RowKey(context, 2, "", temp, (n,)), env, seed, b["random_pick_success"],
                    b.get("random_pick_progress"))
            if "oracle_pass" in b:
                put(RowKey(context, 3, "", temp, (n,)), env, seed, b["oracle_pass"], b.get("oracle_progress"))
            for name, value in b.items():
                if not name.startswith("rm_pick_success@"):
                    continue
                m = int(name.split("@")[1])
                figures = ((1, value, b.get(f"rm_pick_progress@{m}")),
                           (2, b.get(f"random_pick_success@{m}"), b.get(f"random_pick_progress@{m}")),
                           (3, b.get(f"oracle_pass@{m}"), b.get(f"oracle_progress@{m}")))
                for kind, success, progress in figures:
                    if success is None:
                        continue
                    key = RowKey(context, kind, rm if kind == 1 else "", temp, (m,))
                    derived[(key, env)][n].setdefault(
                        seed, (bool(_num(success)), math.nan if progress is None else _num(progress)))

    cells: dict[tuple[RowKey, str], Cell] = {}
    derived_from: dict[RowKey, set[int]] = defaultdict(set)
    for (key, env), by_seed in direct.items():
        values = [by_seed[s] for s in sorted(by_seed)]
        cells[(key, env)] = Cell(sum(v[0] for v in values), tuple(v[1] for v in values))
    for (key, env), by_n in derived.items():
        if (key, env) in cells:
            continue  # a run of its own wins
        n = min(by_n)  # the smallest run that holds these figures
        by_seed = by_n[n]
        values = [by_seed[s] for s in sorted(by_seed)]
        progress = tuple(v[1] for v in values)  # nan where an older row lacks oracle_progress@m
        cells[(key, env)] = Cell(sum(v[0] for v in values), progress, derived=True)
        derived_from[key].add(n)

    envs_present = {env for _, env in cells}
    roles = {env: _role(env) for env in envs_present}
    order = {"held_in": 0, "held_out": 1, "unknown": 2}
    envs = tuple(sorted(envs_present, key=lambda e: (order[roles[e]], e)))
    groups = [("held-in mean", [e for e in envs if roles[e] == "held_in"]),
              ("held-out mean", [e for e in envs if roles[e] == "held_out"])]
    nonempty = [g for g in groups if g[1]]
    averages = []
    if len(nonempty) > 1:
        averages += [name for name, _ in nonempty]
    if len(envs) > 1:
        averages.append("mean")
    members = {name: es for name, es in groups} | {"mean": list(envs)}
    row_keys = tuple(sorted({key for key, _ in cells}))
    for key in row_keys:
        for name in averages:
            parts = [cells.get((key, e)) for e in members[name]]
            if all(p is not None for p in parts):
                cells[(key, name)] = Cell(sum(p.successes for p in parts), tuple(x for p in parts for x in p.progress),
                                          derived=any(p.derived for p in parts))
    show_rm = len({k.rm for k in row_keys if k.rm}) > 1
    show_temperature = len({k.temperature for k in row_keys if k.kind != "greedy"}) > 1
    labels = {k: k.label(show_rm=show_rm, show_temperature=show_temperature) for k in row_keys}
    return Summary(source=source, envs=envs, roles=roles, rows=row_keys, cells=cells, averages=tuple(averages),
                   labels=labels, derived_from={k: tuple(sorted(v)) for k, v in derived_from.items()})


# -------------------------------------------------------------------------------------------- markdown


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


# ----------------------------------------------------------------------------------------------- plots


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


def write_report(results: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> tuple[Path, list[Path], str]:
    """Read eval rows, write DIR/results.md and the scaling PNGs; returns (markdown path, PNG paths, markdown).

    out_dir: default: the results file's directory.
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
    summary = summarize(rows, source=results.name)
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
