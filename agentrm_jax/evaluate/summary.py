"""Eval rows grouped into the report's table: `summarize(rows)` -> `Summary` of rows x columns of `Cell`s.

Table rows (`RowKey`) are methods with their sizes ("greedy", "best_of_n N=4",
"beam 2x2") plus two rows per Best-of-N size taken from the same samples'
baselines: "random pick N=4" (what N samples give without an RM) and
"pass@N=4 (oracle)" (any of the N succeeded: the ceiling of any scorer).
Columns are envs, held-in ones first, then held-out (the role the task split
gives them, configs/tasks/agentrm_split.yaml via `envs.split.load_split`, or
the env registry's `role` for an env the split does not name), then averages.
A cell holds the successes and progress values over task seeds; its success
rate has a 95% Wilson interval and its mean progress a 95% t interval
(`evaluate.statistics`).

Best-of-N rows also carry figures for their first n samples (n = powers of
two below N; `search.best_of_n`), which are distributed as a Best-of-n run's.
A Best-of-N size with no run of its own in an env is filled from those
figures (the cell is `derived`), so one run at N=8 gives the N=1, 2, 4 rows.

Everything is sorted before it is summed, so the same rows in any file order
give the same summary.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentrm_jax.evaluate.statistics import t_interval, wilson_interval

if TYPE_CHECKING:
    from agentrm_jax.envs.split import TaskSplit

__all__ = ["KINDS", "Cell", "RowKey", "Summary", "summarize"]

KINDS = ("greedy", "best_of_n", "random_pick", "pass", "beam")


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
        """The row's kind, one of KINDS."""
        return KINDS[self.kind_order]

    def label(self, *, show_rm: bool, show_temperature: bool) -> str:
        """The row's name in the table, e.g. "best_of_n N=4 [oracle] T=0.7" (RM and temperature when asked)."""
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
        """Number of task seeds (episodes) in the cell."""
        return len(self.progress)

    @property
    def success_rate(self) -> float:
        """Successes / n (nan for an empty cell)."""
        return self.successes / self.n if self.n else math.nan

    @property
    def success_ci(self) -> tuple[float, float]:
        """95% Wilson interval of the success rate."""
        return wilson_interval(self.successes, self.n)

    @property
    def progress_mean(self) -> float:
        """Mean progress over the seeds."""
        return t_interval(list(self.progress))[0]

    @property
    def progress_half_width(self) -> float:
        """Half-width of the 95% t interval of the mean progress (nan for fewer than two seeds)."""
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


def _roles(envs: set[str], split: TaskSplit | None) -> dict[str, str]:
    """Each env's role: the split's (the default split file where `split` is None and the file exists),
    else the registry's, else "unknown"."""
    from agentrm_jax.envs import REGISTRY
    from agentrm_jax.envs.split import DEFAULT_SPLIT, load_split

    if split is None and DEFAULT_SPLIT.exists():
        split = load_split()
    roles = {}
    for env in envs:
        spec = REGISTRY.get(env)
        roles[env] = (split.role(env) if split is not None else None) or (spec.role if spec else "unknown")
    return roles


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return 0.0


def _sort_key(row: dict[str, Any]) -> tuple:
    return (str(row.get("env")), str(row.get("split", "")), int(row.get("seed", 0)), str(row.get("method")),
            json.dumps(row.get("params", {}), sort_keys=True), str(row.get("rm") or ""), str(row.get("policy", "")),
            str(row.get("key", "")))


def summarize(rows: list[dict[str, Any]], *, source: str = "", split: TaskSplit | None = None) -> Summary:
    """Group eval rows into table rows x env columns (see the module docstring).

    split: where held-in / held-out roles come from (None: configs/tasks/agentrm_split.yaml if present).
    """
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
    roles = _roles(envs_present, split)
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
