"""`agentrm reproduce`'s results.md: every table from the eval stages' rows, the heat maps and plots, and a
Reading computed from the 95% intervals.

    write_results(cfg, ctx, command=) -> (results.md path, one-line verdict count)
    compare(a, b) -> "above" | "below" | "overlap"      two cells' success and progress intervals
    verdict(...)                                        a paper claim's reading from comparisons

Nothing here holds a number: every figure is computed from rows.jsonl files, and a claim whose intervals
overlap reads "not resolved at this scale".
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentrm_jax.evaluate.summary import Cell
from agentrm_jax.pipeline.reproduce import RM_LABELS, ROWS, family_rm_label, judge_label, sft_label
from agentrm_jax.pipeline.reproduce_config import ReproduceConfig
from agentrm_jax.pipeline.stages import MANIFEST, MARKER, StageContext

__all__ = ["NOT_RESOLVED", "compare", "table_names", "verdict", "write_results"]

NOT_RESOLVED = "not resolved at this scale"


# ------------------------------------------------------------------------------------------ cells


def _policy_is(row_policy: Any, label: str) -> bool:
    """Rows record `EvalConfig.policy_label`: the label, or the label with its settings in parentheses."""
    return isinstance(row_policy, str) and (row_policy == label or row_policy.startswith(label + "("))


def _one_setting(rows: Sequence[dict], policy: str) -> None:
    """ValueError when rows of one policy carry different settings (`bundled(max_new_tokens=64)` beside
    `bundled(max_new_tokens=96)`): their cells would mix two experiments, or silently show one of them."""
    labels = sorted({str(r.get("policy")) for r in rows})
    if len(labels) > 1:
        raise ValueError(f"rows of policy {policy!r} with different settings in one table cell: "
                         f"{', '.join(labels)}; a cell is one experiment: keep one setting's rows (or rerun with --fresh)")


def cells(rows: Sequence[dict], *, policy: str, method: str, rm: str | None = None, kind: str | None = None,
          size: tuple[int, ...] | None = None, envs: Sequence[str] | None = None, split=None) -> dict[str, Cell]:
    """column -> Cell of one table row: the rows of `policy` and `method` (and `rm`), summarized
    (`evaluate.summary`); kind picks a derived row (random_pick, pass) and size its N or WxK; split: the
    TaskSplit whose roles make the held-in / held-out columns (`config_split(cfg)`)."""
    from agentrm_jax.evaluate.summary import summarize

    chosen = [r for r in rows if _policy_is(r.get("policy"), policy) and r.get("method") == method
              and (rm is None or r.get("rm") == rm) and (envs is None or r.get("env") in envs)]
    if not chosen:
        return {}
    _one_setting(chosen, policy)
    summary = summarize(chosen, split=split)
    for key in summary.rows:
        if key.kind == (kind or method) and (size is None or key.size == size):
            return {c: summary.cells[(key, c)] for c in (*summary.envs, *summary.averages) if (key, c) in summary.cells}
    return {}


def _columns(rows: Sequence[dict], split=None) -> list[str]:
    from agentrm_jax.evaluate.summary import summarize

    if not rows:
        return []
    s = summarize(list(rows), split=split)
    return [*s.envs, *s.averages]


def config_split(cfg: ReproduceConfig):
    """The split file with the config's held-in / held-out families as the roles, so the tables' role
    columns are the families the RMs were (or were not) trained on."""
    from agentrm_jax.envs.split import load_split

    return load_split().with_roles(cfg.held_in, cfg.held_out, source=f"{cfg.source} (held_in / held_out)")


def cell_text(cell: Cell | None) -> str:
    """success % [95% Wilson] · mean progress ± 95% t half-width (n); "—" for a cell not run."""
    if cell is None or cell.n == 0:
        return "—"
    lo, hi = cell.success_ci
    text = f"{100 * cell.success_rate:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"
    half = cell.progress_half_width
    text += f" · {cell.progress_mean:.2f}" + ("" if math.isnan(half) else f" ± {half:.2f}")
    return text + (" †" if cell.derived else "")


def _table(title: str, columns: Sequence[str], named: Sequence[tuple[str, dict[str, Cell]]], caption: str) -> list[str]:
    lines = [f"### {title}", "", caption, "", "| row | " + " | ".join(columns) + " |",
             "|---|" + "|".join([":---:"] * len(columns)) + "|"]
    for name, by_column in named:
        lines.append(f"| {name} | " + " | ".join(cell_text(by_column.get(c)) for c in columns) + " |")
    return lines + [""]


def pooled(parts: Sequence[Cell | None]) -> Cell | None:
    """One cell of the episodes of several (None when any part is missing)."""
    if not parts or any(p is None for p in parts):
        return None
    return Cell(sum(p.successes for p in parts), tuple(x for p in parts for x in p.progress),
                derived=any(p.derived for p in parts))


# ------------------------------------------------------------------------------------------ reading


def compare(a: Cell | None, b: Cell | None) -> str:
    """"above" when a's interval lies above b's on success or progress and below on neither, "below" the
    other way round, else "overlap" (including a missing cell)."""
    if a is None or b is None or not a.n or not b.n:
        return "overlap"
    found = set()
    a_lo, a_hi = a.success_ci
    b_lo, b_hi = b.success_ci
    if a_lo > b_hi:
        found.add("above")
    if a_hi < b_lo:
        found.add("below")
    am, ah, bm, bh = a.progress_mean, a.progress_half_width, b.progress_mean, b.progress_half_width
    if not any(math.isnan(x) for x in (am, ah, bm, bh)):
        if am - ah > bm + bh:
            found.add("above")
        if am + ah < bm - bh:
            found.add("below")
    return found.pop() if len(found) == 1 else "overlap"


def verdict(result: str) -> str:
    """A comparison read as a claim: above = supported, below = contradicted, overlap = not resolved."""
    return {"above": "supported", "below": "contradicted"}.get(result, NOT_RESOLVED)


def _fig(cell: Cell | None) -> str:
    return "not run" if cell is None else cell_text(cell)


def table_names(cfg: ReproduceConfig) -> list[tuple[str, dict]]:
    """The rows of Tables 1 and 2: (name, `cells` selector)."""
    n, rm = cfg.eval.best_of_n, RM_LABELS["explicit"]
    w, k = (int(x) for x in cfg.eval.beam.lower().split("x"))
    return [("greedy", {"method": "greedy"}),
            (f"Best-of-{n} random pick", {"method": "best_of_n", "rm": rm, "kind": "random_pick", "size": (n,)}),
            (f"Best-of-{n} explicit RM", {"method": "best_of_n", "rm": rm, "size": (n,)}),
            (f"Best-of-{n} implicit PRM", {"method": "best_of_n", "rm": RM_LABELS["implicit"], "size": (n,)}),
            (f"Best-of-{n} LLM judge", {"method": "best_of_n", "rm": judge_label(cfg), "size": (n,)}),
            (f"beam {w}x{k} explicit RM", {"method": "beam", "rm": rm, "size": (w, k)}),
            (f"oracle pass@{n}", {"method": "best_of_n", "rm": rm, "kind": "pass", "size": (n,)})]


# ------------------------------------------------------------------------------------------ writer


def write_results(cfg: ReproduceConfig, ctx: StageContext, *, command: str = "") -> tuple[Path, str]:
    """Write ctx.dir/results.md (and the heat maps and scaling PNGs beside it); returns (path, summary)."""
    split = config_split(cfg)
    from agentrm_jax.evaluate.runner import read_rows

    rows = {name: read_rows(path / ROWS) for name, path in ctx.inputs.items()}
    n = cfg.eval.best_of_n
    caption = ("Each cell: success rate in % [95% Wilson interval] · mean progress ± 95% t interval, over "
               f"{cfg.eval.seeds} test seeds per family; averages pool the episodes of their families. "
               f"Random pick and pass@{n} come from the same {n} samples as the explicit RM's Best-of-{n} "
               "(one at random; any of them succeeded).")
    md = [f"# AgentRM reproduction at our scale ({Path(cfg.source).name or 'config'})", "",
          f"- Command: `{command or 'agentrm reproduce'}`",
          f"- Config: `{cfg.source}`, sha256 `{cfg.sha256}`",
          f"- Base policy `{cfg.policy}`; SFT and every learned RM on `{cfg.model}`; judge `{cfg.judge.model}`",
          f"- Held-in {', '.join(cfg.held_in)}; held-out {', '.join(cfg.held_out)}",
          f"- Seeds: test seeds 0-{cfg.eval.seeds - 1} of every family; demos on train seeds {cfg.demos.seeds}, "
          f"exploration on train seeds {cfg.explore.seeds} ({cfg.explore.policy} policy); training seed 0; "
          f"candidates sampled at temperature {cfg.eval.temperature:g}, seeded by the task seed",
          "- Turn limits: each family's own (configs/tasks/agentrm_split.yaml)"
          + (f", capped at {cfg.eval.max_turns}" if cfg.eval.max_turns else ""), ""]
    claims: list[tuple[str, str, str]] = []
    for stage, title, policy in (("table1", "Table 1: the base policy", cfg.policy),
                                 ("table2", "Table 2: the SFT policy", sft_label("sft"))):
        r = rows.get(stage, [])
        named = [(name, cells(r, policy=policy, **sel, split=split)) for name, sel in table_names(cfg)]
        md += _table(f"{title} (`{policy}`)", _columns(r, split), named, caption)
        got = dict(named)
        col = "held-out mean" if any("held-out mean" in c for _, c in named) else "mean"
        best, greedy, rand = got[f"Best-of-{n} explicit RM"], got["greedy"], got[f"Best-of-{n} random pick"]
        where = "held-out tasks" if col == "held-out mean" else "all tasks (no held-out column)"
        claims.append((f"RM-guided search beats greedy on {where} ({title.split(':')[0]})",
                       verdict(compare(best.get(col), greedy.get(col))),
                       f"{col}: Best-of-{n} explicit {_fig(best.get(col))} vs greedy {_fig(greedy.get(col))}"))
        claims.append((f"RM-guided search beats random pick on {where} ({title.split(':')[0]})",
                       verdict(compare(best.get(col), rand.get(col))),
                       f"{col}: explicit {_fig(best.get(col))} vs random pick {_fig(rand.get(col))}"))
        if stage == "table1":
            imp, judge = got[f"Best-of-{n} implicit PRM"], got[f"Best-of-{n} LLM judge"]
            for a, b, an, bn in ((best, imp, "explicit", "implicit"), (imp, judge, "implicit", "judge")):
                claims.append((f"{an} >= {bn} (Table 1, all families)", verdict(compare(a.get("mean"), b.get("mean"))),
                               f"mean: {an} {_fig(a.get('mean'))} vs {bn} {_fig(b.get('mean'))}"))
    pngs: list[str] = []
    if "transfer" in rows:
        md, claims, pngs = _transfer(cfg, ctx, rows["transfer"], md, claims, caption)
    if "weak_to_strong" in rows:
        md, claims = _weak_to_strong(cfg, rows, md, claims, caption)
    if "scaling" in rows:
        md, claims, more = _scaling(cfg, ctx, rows["scaling"], md, claims)
        pngs += more
    if "robustness" in rows:
        md, claims = _robustness(cfg, rows["robustness"], md, claims, caption)
    md += ["## Reading", "",
           "Each claim of the paper, read from the 95% intervals above: *supported* when ours lies above on "
           "success or progress (and below on neither), *contradicted* when below, *" + NOT_RESOLVED + "* when "
           "the intervals overlap. A claim that does not hold here is a result of this scale (policy size, task "
           "scale, seeds), not tuned away.", ""]
    md += [f"- {claim}: **{said}** ({why})" for claim, said, why in claims]
    md += ["", "## Wall time per stage", "", "| stage | seconds | summary |", "|---|---:|---|"]
    order = json.loads((ctx.dir.parent / MARKER).read_text(encoding="utf-8")).get("stages", [])
    for name in order:
        manifest = ctx.dir.parent / name / MANIFEST
        if name != ctx.name and manifest.is_file():
            m = json.loads(manifest.read_text(encoding="utf-8"))
            md.append(f"| {name} | {m.get('seconds', '—')} | {m.get('summary', '')} |")
    path = ctx.dir / "results.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    counts = {v: sum(1 for _, s, _ in claims if s == v) for v in ("supported", "contradicted", NOT_RESOLVED)}
    return path, (f"{len(claims)} claims read: {counts['supported']} supported, {counts['contradicted']} "
                  f"contradicted, {counts[NOT_RESOLVED]} not resolved; {len(pngs)} PNGs")


def _transfer(cfg, ctx, r, md, claims, caption):
    split = config_split(cfg)
    from agentrm_jax.evaluate.plots import plot_heatmap

    n, columns = cfg.transfer.best_of_n, _columns(r, split)
    base = cells(r, policy=cfg.policy, method="greedy", split=split)
    named = [("base policy, greedy", base)]
    maps = {"policy": [], "rm": []}
    for f in cfg.held_in:
        pol = cells(r, policy=sft_label(f"sft_{f}"), method="greedy", split=split)
        rmf = cells(r, policy=cfg.policy, method="best_of_n", rm=family_rm_label(f), size=(n,), split=split)
        named += [(f"policy FT on {f} (greedy)", pol), (f"RM FT on {f} (base policy, Best-of-{n})", rmf)]
        maps["policy"].append(pol)
        maps["rm"].append(rmf)
        others = [e for e in cfg.families if e != f]
        pol_o, rm_o, base_o = (pooled([c.get(e) for e in others]) for c in (pol, rmf, base))
        rm_res, pol_res = compare(rm_o, base_o), compare(pol_o, base_o)
        if rm_res == "above" and pol_res != "above":
            said = "supported"
        elif rm_res == "below" or (pol_res == "above" and rm_res != "above"):
            said = "contradicted"
        else:
            said = NOT_RESOLVED
        claims.append((f"RM fine-tuning on {f} transfers to the other families where policy fine-tuning does "
                       "not", said, f"other families pooled: RM FT {_fig(rm_o)} ({rm_res} base), policy FT "
                       f"{_fig(pol_o)} ({pol_res} base), base greedy {_fig(base_o)}"))
    md += _table("Policy FT vs RM FT (transfer)", columns, named, caption +
                 " Rows: the policy fine-tuned on one held-in family alone (greedy), and the base policy guided "
                 "by the explicit RM trained on that family's records alone.")
    pngs = []
    envs = list(cfg.families)
    for which, title in (("policy", "policy fine-tuned on one family (greedy)"),
                         ("rm", f"RM trained on one family (base policy, Best-of-{n})")):
        grid = [[c[e].progress_mean if e in c else math.nan for e in envs] for c in maps[which]]
        notes = [[f"{c[e].progress_mean:.2f}\n{100 * c[e].success_rate:.0f}%" if e in c else "" for e in envs]
                 for c in maps[which]]
        path = plot_heatmap(grid, [f"trained on {f}" for f in cfg.held_in], envs, ctx.dir / f"transfer_{which}.png",
                            title=f"{title}: mean progress (success %)", value_label="mean progress", notes=notes)
        pngs.append(path.name)
        md += [f"![{title}]({path.name})", ""]
    return md, claims, pngs


def _weak_to_strong(cfg, rows, md, claims, caption):
    split = config_split(cfg)
    w, n = cfg.weak_to_strong, cfg.eval.best_of_n
    r = rows["weak_to_strong"]
    envs = list(w.envs or cfg.families)
    strong_g = cells(r, policy=w.policy, method="greedy", split=split)
    strong_b = cells(r, policy=w.policy, method="best_of_n", rm=RM_LABELS["explicit"], size=(n,), split=split)
    weak = rows.get("table1", [])
    weak_g = cells(weak, policy=cfg.policy, method="greedy", envs=envs, split=split)
    weak_b = cells(weak, policy=cfg.policy, method="best_of_n", rm=RM_LABELS["explicit"], size=(n,), envs=envs,
                   split=split)
    md += _table(f"Weak-to-strong: the explicit RM guiding `{w.policy}`", _columns(r, split),
                 [(f"{w.policy} greedy", strong_g), (f"{w.policy} Best-of-{n} explicit RM", strong_b),
                  (f"{cfg.policy} greedy", weak_g), (f"{cfg.policy} Best-of-{n} explicit RM", weak_b)], caption)
    s_res, w_res = compare(strong_b.get("mean"), strong_g.get("mean")), compare(weak_b.get("mean"), weak_g.get("mean"))
    said = ("supported" if s_res == "above" and w_res != "above" else
            "contradicted" if w_res == "above" and s_res != "above" else NOT_RESOLVED)
    claims.append((f"the larger policy ({w.policy}) gains more from the RM than {cfg.policy}", said,
                   f"mean: {w.policy} Best-of-{n} {_fig(strong_b.get('mean'))} vs greedy {_fig(strong_g.get('mean'))} "
                   f"({s_res}); {cfg.policy} {_fig(weak_b.get('mean'))} vs {_fig(weak_g.get('mean'))} ({w_res}); "
                   "both or neither separating does not say which gains more"))
    return md, claims


def _scaling(cfg, ctx, r, md, claims):
    split = config_split(cfg)
    from agentrm_jax.evaluate.plots import plot_scaling
    from agentrm_jax.evaluate.summary import summarize
    from agentrm_jax.evaluate.tables import render_markdown

    s = cfg.scaling
    rm = RM_LABELS["explicit"]
    chosen = [x for x in r if _policy_is(x.get("policy"), cfg.policy)]
    if not chosen:
        return md, claims, []
    _one_setting(chosen, cfg.policy)
    summary = summarize(chosen, split=split)
    table = render_markdown(summary).splitlines()
    md += ["### Test-time scaling (explicit RM vs oracle pass@N vs random pick)", "", *table[2:], ""]
    pngs = [p.name for p in plot_scaling(summary, ctx.dir)]
    md += [f"![scaling]({p})" for p in pngs if p == "scaling_mean.png"] + [""]
    lo_n, hi_n = min(s.n), max(s.n)
    small = cells(r, policy=cfg.policy, method="best_of_n", rm=rm, size=(lo_n,), split=split)
    large = cells(r, policy=cfg.policy, method="best_of_n", rm=rm, size=(hi_n,), split=split)
    claims.append((f"gains grow with N (Best-of-{hi_n} vs Best-of-{lo_n}, explicit RM)",
                   verdict(compare(large.get("mean"), small.get("mean"))),
                   f"mean: N={hi_n} {_fig(large.get('mean'))} vs N={lo_n} {_fig(small.get('mean'))}"))
    shapes = sorted(tuple(int(v) for v in b.lower().split("x")) for b in s.beam)
    if len(shapes) > 1:
        narrow = cells(r, policy=cfg.policy, method="beam", rm=rm, size=shapes[0], split=split)
        wide = cells(r, policy=cfg.policy, method="beam", rm=rm, size=shapes[-1], split=split)
        claims.append((f"gains grow with beam width ({shapes[-1][0]}x{shapes[-1][1]} vs {shapes[0][0]}x{shapes[0][1]})",
                       verdict(compare(wide.get("mean"), narrow.get("mean"))),
                       f"mean: {_fig(wide.get('mean'))} vs {_fig(narrow.get('mean'))}"))
    return md, claims, pngs


def _robustness(cfg, r, md, claims, caption):
    split = config_split(cfg)
    n = cfg.eval.best_of_n
    guided = cells(r, policy=cfg.policy, method="best_of_n", rm=RM_LABELS["explicit"], size=(n,), split=split)
    sft = cells(r, policy=sft_label("sft"), method="greedy", split=split)
    md += _table("Robustness: paraphrased held-in families", _columns(r, split),
                 [(f"{cfg.policy} greedy", cells(r, policy=cfg.policy, method="greedy", split=split)),
                  (f"{cfg.policy} Best-of-{n} explicit RM", guided), ("SFT policy greedy", sft)], caption)
    col = "mean" if "mean" in guided else next(iter(guided), "mean")
    claims.append(("under paraphrased actions the RM-guided base policy beats the SFT policy",
                   verdict(compare(guided.get(col), sft.get(col))),
                   f"{col}: guided {_fig(guided.get(col))} vs SFT {_fig(sft.get(col))}"))
    return md, claims
