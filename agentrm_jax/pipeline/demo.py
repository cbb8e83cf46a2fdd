"""`agentrm demo`'s stages: the AgentRM pipeline in miniature on the bundled SmolLM2-135M, offline.

    demo_stages(cfg) -> [Stage]     demos -> sft -> explore -> samples -> rm -> eval -> report
    verdict(rows, cfg) -> str       the RM's Best-of-N pick against random pick on the held-out seeds

Each stage is a plain function of its config section and the directories of the stages before it,
calling the stage packages' own functions (agents.collect, sft.run_sft, explore.run_explore and
samples, training.train, evaluate.run_eval and write_report); `pipeline.stages` caches and resumes
them. What the stages cannot show at this size is said where it happens (see `SFT_CAVEAT`,
`EXPLORE_CHOICE`, `verdict`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentrm_jax.pipeline.demo_config import DemoConfig
from agentrm_jax.pipeline.stages import Stage, StageContext
from agentrm_jax.records import read_objects

__all__ = ["EXPLORE_CHOICE", "SFT_CAVEAT", "demo_stages", "next_steps", "verdict"]

SFT_CAVEAT = ("a few LoRA steps on CPU teach the 135M model the reply format, not the task: do not expect it to "
              "solve tasks (docs/RESULTS.md, 'Policy SFT on this CPU')")
EXPLORE_CHOICE = ("explored with the env's noisy expert, not the SFT policy: AgentRM explores with its SFT agent, but "
                  "ours (135M, a few CPU steps) finds almost no successes in minutes, and trees without successes "
                  "teach an RM nothing; the noisy expert's trees hold both outcomes (as in docs/RESULTS.md's "
                  "held-in measurement). explore.policy: sft in the config explores with the SFT policy instead")
SFT_RUN, POLICY_DIR, RM_RUN = "run", "run/policy", "run"


# ------------------------------------------------------------------------------------------- stages


def _demos(cfg: DemoConfig, ctx: StageContext) -> str:
    from agentrm_jax.agents.collect import collect
    from agentrm_jax.agents.seeds import parse_seeds

    section = cfg.demos
    report = collect(section.envs, seeds=parse_seeds(section.seeds, what="demos.seeds"), out=ctx.dir / "demos.jsonl", split="train")
    rows = read_objects(ctx.dir / "demos.jsonl")
    won = sum(bool(r.get("success")) for r in rows)
    return (f"{len(rows)} expert demos of {', '.join(section.envs)} (train seeds {section.seeds}), {won} successful "
            f"({report.written} new)")


def _sft(cfg: DemoConfig, ctx: StageContext) -> str:
    from agentrm_jax.sft.config import SFTSection as SFTRunSection
    from agentrm_jax.sft.run import run_sft
    from agentrm_jax.training.config import TrainConfig

    s = cfg.sft
    config = TrainConfig.from_dict({
        "model": "bundled", "kind": "sft", "finetune": "lora", "steps": s.steps, "seed": 0,
        "out": str(ctx.dir / SFT_RUN),
        "data": {"train": str(ctx.inputs["demos"] / "demos.jsonl"), "batch_size": s.batch_size,
                 "max_length": s.max_length},
        "lora": {"rank": s.lora_rank, "alpha": 2.0 * s.lora_rank},
        "optimizer": {"lr": s.lr, "warmup_steps": min(1, s.steps - 1)},
        "outputs": {"save_every": s.steps, "eval_every": 0, "log_every": 1},
        "compute": {"remat": "full", "scan_layers": True},
    }, source="the demo's sft section")
    ctx.log(f"sft: note: {SFT_CAVEAT}")
    result = run_sft(config, SFTRunSection(max_new_tokens=cfg.eval.max_new_tokens))
    trend = result.loss_trend(2)
    return (f"LoRA r{s.lora_rank} SFT policy, {result.step} steps of {s.batch_size} demo(s) ({trend}) -> "
            f"{ctx.dir / POLICY_DIR}; {SFT_CAVEAT}")


def _explore(cfg: DemoConfig, ctx: StageContext) -> str:
    from agentrm_jax.explore.config import ExploreConfig
    from agentrm_jax.explore.runner import read_trees, run_explore
    from agentrm_jax.explore.stats import tree_stats

    e = cfg.explore
    if e.policy == "expert":
        ctx.log(f"explore: {EXPLORE_CHOICE}")
        (ctx.dir / "policy_choice.txt").write_text(EXPLORE_CHOICE + "\n", encoding="utf-8")
        policy = {"policy": "expert", "noise": e.noise}
    else:
        (ctx.dir / "policy_choice.txt").write_text("explored with the demo's SFT policy\n", encoding="utf-8")
        policy = {"policy": str(ctx.inputs["sft"] / SFT_RUN), "max_new_tokens": cfg.eval.max_new_tokens}
    explore_cfg = ExploreConfig.from_dict({"env": e.env, "split": "train", "seeds": e.seeds, **policy,
                                           "simulations": e.simulations, "k": e.k, "rollouts": e.rollouts,
                                           "output": str(ctx.dir / "trees.jsonl")}, source="the demo's explore section")
    run_explore(explore_cfg)
    stats = tree_stats(read_trees(ctx.dir / "trees.jsonl"))
    total = next(iter(stats.values()), {})
    solved = total.get("solved_roots")
    return (f"{total.get('trees', '?')} MCTS trees of {e.env} train tasks with the "
            f"{'noisy expert (noise ' + format(e.noise, 'g') + ')' if e.policy == 'expert' else 'SFT policy'}, "
            f"{e.simulations} simulations each, {total.get('nodes', '?')} nodes"
            + (f", {solved:.0%} with a success" if isinstance(solved, (int, float)) else ""))


def _samples(cfg: DemoConfig, ctx: StageContext) -> str:
    from agentrm_jax.explore.runner import read_trees
    from agentrm_jax.explore.samples import regression_records
    from agentrm_jax.records import write_jsonl

    s = cfg.samples
    trees = read_trees(ctx.inputs["explore"] / "trees.jsonl")
    seeds = sorted({t.seed for t in trees})
    held = set(seeds[len(seeds) - s.eval_trees:]) if s.eval_trees and len(seeds) > s.eval_trees else set()
    train = regression_records([t for t in trees if t.seed not in held], min_visits=s.min_visits)
    evals = regression_records([t for t in trees if t.seed in held], min_visits=s.min_visits)
    if not train:
        raise ValueError(f"samples: no state of the trees has >= {s.min_visits} visits; lower samples.min_visits "
                         "or raise explore.simulations")
    write_jsonl(ctx.dir / "train.jsonl", train)
    write_jsonl(ctx.dir / "eval.jsonl", evals)
    mean = sum(r.value for r in train) / len(train)
    return (f"{len(train)} regression records (states with >= {s.min_visits} visits, mean value {mean:.2f}) to train "
            f"on, {len(evals)} from {len(held)} other task(s) to evaluate the RM")


def _rm(cfg: DemoConfig, ctx: StageContext) -> str:
    from agentrm_jax.pipeline.train_configs import explicit_rm_config
    from agentrm_jax.training.trainer import train

    r = cfg.rm
    evals = ctx.inputs["samples"] / "eval.jsonl"
    has_eval = evals.is_file() and evals.stat().st_size > 0
    config = explicit_rm_config(model="bundled", section=r, train=ctx.inputs["samples"] / "train.jsonl",
                                out=ctx.dir / RM_RUN, eval=evals if has_eval else None,
                                source="the demo's rm section")
    result = train(config)
    trend = result.loss_trend(3)
    ev, quality = result.eval, ""
    if "eval_mse" in ev:
        quality = f"; on the held-back tasks' records MSE {ev['eval_mse']:.3f}"
        auroc = ev.get("eval_auroc")
        if isinstance(auroc, float) and auroc == auroc:  # NaN when the eval values hold one class only
            quality += f", AUROC {auroc:.2f}"
    return (f"explicit RM ({r.finetune} on the bundled backbone, MSE to MCTS values), {result.step} steps of "
            f"{r.batch_size} ({trend}){quality}")


def _eval_config(cfg: DemoConfig, ctx: StageContext):
    from agentrm_jax.evaluate.config import EvalConfig

    e = cfg.eval
    return EvalConfig.from_dict({
        "policy": str(ctx.inputs["sft"] / SFT_RUN), "rm": f"explicit:{ctx.inputs['rm'] / RM_RUN}",
        "max_new_tokens": e.max_new_tokens, "envs": [*e.held_in, *e.held_out], "split": "test", "seeds": e.seeds,
        "methods": ["greedy", f"best_of_n={e.best_of_n}", f"beam={e.beam}"], "temperature": e.temperature,
        "max_turns": e.max_turns, "output": str(ctx.dir / "rows.jsonl")}, source="the demo's eval section")


def _eval(cfg: DemoConfig, ctx: StageContext) -> str:
    from agentrm_jax.agents.factory import make_policy
    from agentrm_jax.evaluate.runner import build_rm, plan_episodes, read_rows, run_eval

    eval_cfg = _eval_config(cfg, ctx)
    policy = make_policy(eval_cfg.policy, max_new_tokens=eval_cfg.max_new_tokens)
    rm = build_rm(eval_cfg.rm, batch_size=eval_cfg.rm_batch_size)
    run_eval(eval_cfg, policy=policy, rm=rm)
    keys = {ep.key for ep in plan_episodes(eval_cfg)}
    rows = [r for r in read_rows(eval_cfg.output) if r.get("key") in keys]
    wins = sum(bool(r.get("success")) for r in rows)
    return (f"{len(rows)} episodes with the SFT policy ({', '.join(eval_cfg.envs)} x {eval_cfg.seeds} test seeds x "
            f"greedy / Best-of-{cfg.eval.best_of_n} / beam {cfg.eval.beam}, <= {eval_cfg.max_turns} turns), "
            f"{wins} successful")


def _report(cfg: DemoConfig, ctx: StageContext) -> str:
    from agentrm_jax.evaluate.report import write_report

    rows_path = ctx.inputs["eval"] / "rows.jsonl"
    from agentrm_jax.envs.split import DEFAULT_SPLIT, load_split

    # the table's role columns are the config's (an env moved to eval.held_in is not averaged as held-out)
    split = load_split().with_roles(cfg.eval.held_in, cfg.eval.held_out, source="the demo's eval section") \
        if DEFAULT_SPLIT.exists() else None
    md_path, pngs, markdown = write_report(rows_path, ctx.dir, split=split)
    said = verdict(read_objects(rows_path), cfg)
    choice = (ctx.inputs["explore"] / "policy_choice.txt").read_text(encoding="utf-8").strip()
    notes = ["", "## What this demo ran", "",
             f"- Policy: the bundled SmolLM2-135M-Instruct after a short LoRA SFT on expert demos; {SFT_CAVEAT}.",
             f"- Exploration: {choice}.",
             "- RM: an explicit value model on the bundled backbone, trained a short while on the MCTS values.",
             f"- Eval: test seeds of held-in {', '.join(cfg.eval.held_in)} and held-out "
             f"{', '.join(cfg.eval.held_out)}, at most {cfg.eval.max_turns} turns, temperature "
             f"{cfg.eval.temperature:g} for the search candidates.",
             f"- RM vs random pick (held-out): {said}", ""]
    md_path.write_text(markdown + "\n".join(notes), encoding="utf-8")
    print(markdown, flush=True)
    ctx.log(f"report: RM vs random pick on the held-out seeds: {said}")
    plot = next((p for p in pngs if p.name == "scaling_mean.png"), pngs[0] if pngs else None)
    return f"table -> {md_path}" + (f", scaling plot -> {plot}" if plot else "") + f"; {said}"


def verdict(rows: list[dict[str, Any]], cfg: DemoConfig) -> str:
    """One sentence: Best-of-N with the RM against random pick from the same samples, pooled over the
    held-out test seeds (success first, then mean progress); says plainly when the RM did not beat it."""
    n = cfg.eval.best_of_n
    picked = [r for r in rows if r.get("method") == "best_of_n" and (r.get("params") or {}).get("n") == n
              and r.get("env") in cfg.eval.held_out]
    if not picked:
        return "no held-out Best-of-N episodes to compare"
    rm_s = sum(float(bool(r["success"])) for r in picked) / len(picked)
    rm_p = sum(float(r.get("progress") or 0.0) for r in picked) / len(picked)
    rnd_s = sum(r["baselines"]["random_pick_success"] for r in picked) / len(picked)
    rnd_p = sum(r["baselines"]["random_pick_progress"] for r in picked) / len(picked)
    figures = (f"Best-of-{n} with the RM: success {rm_s:.0%}, progress {rm_p:.2f}; random pick of the same "
               f"samples: success {rnd_s:.0%}, progress {rnd_p:.2f} ({len(picked)} episodes)")
    if (rm_s, rm_p) > (rnd_s, rnd_p):
        return f"the RM beat random pick at this scale: {figures} (a few seeds: within noise unless the gap is large)"
    return f"the RM did NOT beat random pick at this scale: {figures}"


def next_steps(out: Path) -> list[str]:
    """What to run after the demo (printed at its end)."""
    return [f"look at a tree:        agentrm tree show {out}/explore/trees.jsonl --html tree.html",
            f"play the SFT policy:   agentrm play --env maze --seed 7 --policy {out}/sft/{SFT_RUN}",
            "more seeds and turns:  agentrm eval --config configs/eval_bundled.yaml --rm "
            f"explicit:{out}/rm/{RM_RUN}",
            "the paper's tables:    agentrm reproduce --config configs/reproduce_mini.yaml",
            "a stronger policy:     agentrm serve (or any OpenAI-compatible server) and --policy http://HOST:PORT/v1"]


def demo_stages(cfg: DemoConfig) -> list[Stage]:
    """The demo's stages, in order, each fingerprinted by its own section (eval also by max_new_tokens's
    use in sft's policy, which is why sft's params include it)."""
    def bind(fn):
        return lambda ctx: fn(cfg, ctx)

    sft_params = {**cfg.sft.to_dict(), "max_new_tokens": cfg.eval.max_new_tokens}
    explore_needs = ("sft",) if cfg.explore.policy == "sft" else ()
    return [
        Stage("demos", bind(_demos), cfg.demos.to_dict(), ("demos.jsonl",)),
        Stage("sft", bind(_sft), sft_params, (POLICY_DIR,), needs=("demos",)),
        Stage("explore", bind(_explore), cfg.explore.to_dict(), ("trees.jsonl", "policy_choice.txt"),
              needs=explore_needs),
        Stage("samples", bind(_samples), cfg.samples.to_dict(), ("train.jsonl", "eval.jsonl"), needs=("explore",)),
        Stage("rm", bind(_rm), cfg.rm.to_dict(), (f"{RM_RUN}/train_config.json", f"{RM_RUN}/checkpoints"),
              needs=("samples",)),
        Stage("eval", bind(_eval), cfg.eval.to_dict(), ("rows.jsonl",), needs=("sft", "rm")),
        Stage("report", bind(_report), {}, ("results.md",), needs=("eval", "explore")),
    ]
