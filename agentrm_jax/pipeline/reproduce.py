"""`agentrm reproduce`'s stages: the paper's tables at our scale, each a cached, resumable stage.

    reproduce_stages(cfg, command="") -> [Stage]

    demos -> sft (all held-in), sft_<family> (each held-in family alone, for the transfer study)
    explore (MCTS per held-in family; sft or noisy expert policy) -> samples -> rm_explicit, rm_implicit,
      rm_<family> (each family's records alone)
    table1 (the base policy), table2 (the SFT policy): greedy, Best-of-N with the explicit / implicit RM /
      the judge (random pick and pass@N from the same samples), beam with the explicit RM
    transfer, weak_to_strong, scaling, robustness -> report (results.md, heat maps, plots, Reading)

Every stage calls the library's own functions in process (agents.collect, sft.run_sft, explore,
training.train / export_run, evaluate.run_eval); every eval stage is the eval runner appending one
row per episode to its rows.jsonl, so a killed stage resumes at the episode it stopped at. Each eval
plays one family at a time under that family's own turn limit (the split file's; `eval.max_turns`
caps it). Rows name RMs and policies by stage ("explicit:rm_explicit", "sft/run"), not by path, so
they do not change when --out moves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agentrm_jax.pipeline.reproduce_config import ReproduceConfig
from agentrm_jax.pipeline.stages import Stage, StageContext
from agentrm_jax.records import read_objects

__all__ = ["EVAL_STAGES", "RM_LABELS", "ROWS", "RUN", "reproduce_stages", "turn_limit"]

RUN, ROWS = "run", "rows.jsonl"
EVAL_STAGES = ("table1", "table2", "transfer", "weak_to_strong", "scaling", "robustness")
# how rows name each scorer (EvalConfig.rm labels; the objects are built from the stages' files)
RM_LABELS = {"explicit": "explicit:rm_explicit", "implicit": "implicit:rm_implicit,reference"}


def judge_label(cfg: ReproduceConfig) -> str:
    """The judge's rm label in rows."""
    model = cfg.judge.model
    return f"judge:{model if model == 'bundled' or model.startswith(('http://', 'https://')) else Path(model).name}"


def family_rm_label(family: str) -> str:
    """The rm label of the explicit RM trained on `family`'s records alone."""
    return f"explicit:rm_{family}"


def sft_label(stage: str) -> str:
    """The policy label in rows of the SFT policy made by stage `stage`."""
    return f"{stage}/{RUN}"


def turn_limit(cfg: ReproduceConfig, env: str) -> int | None:
    """`env`'s turn limit: the split file's (a paraphrased family takes its base family's), capped by
    eval.max_turns; None where neither gives one (the env's own)."""
    from agentrm_jax.envs.split import DEFAULT_SPLIT, load_split

    own = None
    if DEFAULT_SPLIT.exists():
        split = load_split()
        entry = split.entry(env) or split.entry(env.removesuffix("_paraphrased"))
        own = entry.max_turns if entry is not None else None
    cap = cfg.eval.max_turns
    if own is None:
        return cap
    return own if cap is None else min(own, cap)


# ------------------------------------------------------------------------------------------ training


def _demos(cfg: ReproduceConfig, ctx: StageContext) -> str:
    from agentrm_jax.agents.collect import collect
    from agentrm_jax.agents.seeds import parse_seeds

    report = collect(cfg.held_in, seeds=parse_seeds(cfg.demos.seeds, what="demos.seeds"), out=ctx.dir / "demos.jsonl",
                     split="train", noise=cfg.demos.noise)
    rows = read_objects(ctx.dir / "demos.jsonl")
    won = sum(bool(r.get("success")) for r in rows)
    return f"{len(rows)} expert demos of {', '.join(cfg.held_in)} ({won} successful, {report.written} new)"


def _sft(cfg: ReproduceConfig, ctx: StageContext, tasks: tuple[str, ...]) -> str:
    from agentrm_jax.sft.config import SFTSection
    from agentrm_jax.sft.run import run_sft
    from agentrm_jax.training.config import TrainConfig

    s = cfg.sft
    config = TrainConfig.from_dict({
        "model": cfg.model, "kind": "sft", "finetune": s.finetune, "steps": s.steps, "seed": 0,
        "out": str(ctx.dir / RUN),
        "data": {"train": str(ctx.inputs["demos"] / "demos.jsonl"), "batch_size": s.batch_size,
                 "max_length": s.max_length},
        "lora": {"rank": s.lora_rank, "alpha": 2.0 * s.lora_rank},
        "optimizer": {"lr": s.lr, "warmup_steps": min(2, s.steps - 1)},
        "outputs": {"save_every": max(1, min(s.steps, 2)), "eval_every": 0, "log_every": 1},
        "compute": {"remat": s.remat, "scan_layers": s.scan_layers},
    }, source=f"the reproduce config's sft part ({ctx.name})")
    result = run_sft(config, SFTSection(tasks=tasks, max_new_tokens=cfg.eval.max_new_tokens))
    trend = result.loss_trend(2)
    return f"{s.finetune} SFT of {cfg.model} on {', '.join(tasks) or 'every held-in'} demo(s), {result.step} steps ({trend})"


def _explore(cfg: ReproduceConfig, ctx: StageContext) -> str:
    from agentrm_jax.explore.config import ExploreConfig
    from agentrm_jax.explore.runner import read_trees, run_explore

    e = cfg.explore
    if e.policy == "expert":
        policy = {"policy": "expert", "noise": e.noise}
    else:
        policy = {"policy": str(ctx.inputs["sft"] / RUN), "max_new_tokens": cfg.eval.max_new_tokens}
    counts = []
    for family in cfg.held_in:
        explore_cfg = ExploreConfig.from_dict({
            "env": family, "split": "train", "seeds": e.seeds, **policy, "simulations": e.simulations, "k": e.k,
            "rollouts": e.rollouts, "value": e.value, "max_turns": e.max_turns,
            "output": str(ctx.dir / f"trees_{family}.jsonl")}, source=f"the reproduce config's explore part ({family})")
        run_explore(explore_cfg)
        counts.append(f"{len(read_trees(ctx.dir / f'trees_{family}.jsonl'))} {family}")
    who = f"the noisy expert (noise {e.noise:g})" if e.policy == "expert" else "the SFT policy"
    return f"MCTS trees grown by {who}, {e.simulations} simulations each: {', '.join(counts)}"


def _samples(cfg: ReproduceConfig, ctx: StageContext) -> str:
    from agentrm_jax.explore.runner import read_trees
    from agentrm_jax.explore.samples import regression_records
    from agentrm_jax.records import write_jsonl

    s, every, parts = cfg.samples, [], []
    for family in cfg.held_in:
        trees = read_trees(ctx.inputs["explore"] / f"trees_{family}.jsonl")
        records = regression_records(trees, min_visits=s.min_visits, balance=s.balance)
        if not records:
            raise ValueError(f"samples: no state of the {family} trees has >= {s.min_visits} visits; lower "
                             "samples.min_visits or raise explore.simulations")
        write_jsonl(ctx.dir / f"train_{family}.jsonl", records)
        every += records
        parts.append(f"{len(records)} {family}")
    write_jsonl(ctx.dir / "train.jsonl", every)
    return f"{len(every)} regression records (states with >= {s.min_visits} visits): {', '.join(parts)}"


def _explicit(cfg: ReproduceConfig, ctx: StageContext, records: str) -> str:
    from agentrm_jax.pipeline.train_configs import explicit_rm_config
    from agentrm_jax.training.trainer import train

    r = cfg.rm
    config = explicit_rm_config(model=cfg.model, section=r, train=ctx.inputs["samples"] / records, out=ctx.dir / RUN,
                                source=f"the reproduce config's rm part ({ctx.name})")
    result = train(config)
    trend = result.loss_trend(3)
    return f"explicit RM ({r.finetune} on {cfg.model}) on {records}, {result.step} steps ({trend})"


def _implicit(cfg: ReproduceConfig, ctx: StageContext) -> str:
    from agentrm_jax.training.config import TrainConfig
    from agentrm_jax.training.export import export_run
    from agentrm_jax.training.trainer import train

    p = cfg.implicit
    config = TrainConfig.from_dict({
        "model": cfg.model, "kind": "implicit", "finetune": "lora", "steps": p.steps, "seed": 0,
        "out": str(ctx.dir / RUN),
        "data": {"train": str(ctx.inputs["samples"] / "train.jsonl"), "target": "value", "batch_size": p.batch_size,
                 "max_length": p.max_length},
        "objective": {"beta": p.beta},
        "lora": {"rank": p.lora_rank, "alpha": 2.0 * p.lora_rank},
        "optimizer": {"lr": p.lr, "warmup_steps": min(2, p.steps - 1)},
        "outputs": {"save_every": p.steps, "eval_every": 0, "log_every": 1},
    }, source="the reproduce config's implicit part")
    result = train(config)
    export_run(ctx.dir / RUN, ctx.dir / "hf", overwrite=True)  # a rerun after a kill replaces a partial export
    return f"implicit PRM (LoRA r{p.lora_rank} on {cfg.model}, beta {p.beta:g}), {result.step} steps -> hf/"


# ------------------------------------------------------------------------------------------ eval


class _Scorers:
    """Builds each RM a stage uses once, from the stage directories, by its row label."""

    def __init__(self, cfg: ReproduceConfig, ctx: StageContext):
        self.cfg, self.ctx, self.built = cfg, ctx, {}

    def spec(self, label: str) -> str:
        kind, _, name = label.partition(":")
        if kind == "judge":
            return f"judge:{self.cfg.judge.model}"
        if kind == "implicit":
            from agentrm_jax.training.trainer import resolve_model_path

            return f"implicit:{self.ctx.inputs['rm_implicit'] / 'hf'},{resolve_model_path(self.cfg.model)}"
        return f"explicit:{self.ctx.inputs[name] / RUN}"

    def get(self, label: str):
        from agentrm_jax.evaluate.runner import build_rm

        if label not in self.built:
            self.built.clear()  # one learned RM in memory at a time
            self.built[label] = build_rm(self.spec(label), batch_size=self.cfg.eval.rm_batch_size)
        return self.built[label]


def _play(cfg: ReproduceConfig, ctx: StageContext, *, policy: str, policy_obj: Callable[[], Any] | None,
          envs: Sequence[str], methods: Sequence[str], rm: str | None = None, scorers: _Scorers | None = None,
          max_new_tokens: int | None = None) -> int:
    """Every (env, method, test seed) episode of one policy and one RM into ctx.dir/rows.jsonl, one env at
    a time under its own turn limit; returns the rows of these episodes in the file."""
    from agentrm_jax.evaluate.config import EvalConfig
    from agentrm_jax.evaluate.runner import plan_episodes, read_rows, run_eval

    e, keys = cfg.eval, set()
    for env in envs:
        eval_cfg = EvalConfig.from_dict({
            "policy": policy, "rm": rm or "oracle", "envs": [env], "split": "test", "seeds": e.seeds,
            "methods": list(methods), "temperature": e.temperature, "max_turns": turn_limit(cfg, env),
            "max_new_tokens": max_new_tokens or e.max_new_tokens, "lockstep": e.lockstep,
            "rm_batch_size": e.rm_batch_size, "output": str(ctx.dir / ROWS)}, source=f"{ctx.name} ({env})")
        todo = {ep.key for ep in plan_episodes(eval_cfg)}
        keys |= todo
        done = {r.get("key") for r in read_rows(eval_cfg.output)}
        if todo <= done:
            continue  # finished before a kill: build neither the policy nor the RM
        scorer = scorers.get(rm) if rm and any(not m.startswith("greedy") for m in methods) else None
        run_eval(eval_cfg, policy=policy_obj() if policy_obj else None, rm=scorer)
    return sum(1 for r in read_rows(ctx.dir / ROWS) if r.get("key") in keys)


class _Policies:
    """The model policies a stage plays, each loaded once; task policies (expert, random) are built per task
    by the eval runner itself (None)."""

    def __init__(self, cfg: ReproduceConfig):
        self.cfg, self.built = cfg, {}

    def maker(self, spec: str, label: str, max_new_tokens: int | None = None) -> Callable[[], Any] | None:
        from agentrm_jax.evaluate.config import TASK_POLICIES

        if spec in TASK_POLICIES:
            return None
        tokens = max_new_tokens or self.cfg.eval.max_new_tokens

        def build():
            from agentrm_jax.agents.factory import make_policy

            if label not in self.built:
                self.built.clear()  # one policy model in memory at a time
                self.built[label] = make_policy(spec, None, max_new_tokens=tokens)
            return self.built[label]

        return build


def _table(cfg: ReproduceConfig, ctx: StageContext, policy: str, label: str) -> str:
    """Table 1 / 2 rows of one policy on every family."""
    scorers, policies = _Scorers(cfg, ctx), _Policies(cfg)
    make = policies.maker(policy, label)
    n, envs = cfg.eval.best_of_n, cfg.families
    total = _play(cfg, ctx, policy=label, policy_obj=make, envs=envs, methods=["greedy"])
    for rm in (RM_LABELS["explicit"], RM_LABELS["implicit"], judge_label(cfg)):
        total += _play(cfg, ctx, policy=label, policy_obj=make, envs=envs, methods=[f"best_of_n={n}"], rm=rm,
                       scorers=scorers)
    total += _play(cfg, ctx, policy=label, policy_obj=make, envs=envs, methods=[f"beam={cfg.eval.beam}"],
                   rm=RM_LABELS["explicit"], scorers=scorers)
    return (f"{total} episodes of {label} on {len(envs)} families x {cfg.eval.seeds} test seeds: greedy, "
            f"Best-of-{n} (explicit, implicit, judge), beam {cfg.eval.beam} (explicit)")


def _table1(cfg: ReproduceConfig, ctx: StageContext) -> str:
    return _table(cfg, ctx, cfg.policy, cfg.policy)


def _table2(cfg: ReproduceConfig, ctx: StageContext) -> str:
    return _table(cfg, ctx, str(ctx.inputs["sft"] / RUN), sft_label("sft"))


def _transfer(cfg: ReproduceConfig, ctx: StageContext) -> str:
    scorers, policies = _Scorers(cfg, ctx), _Policies(cfg)
    base = policies.maker(cfg.policy, cfg.policy)
    total = _play(cfg, ctx, policy=cfg.policy, policy_obj=base, envs=cfg.families, methods=["greedy"])
    for family in cfg.held_in:
        stage = f"sft_{family}"
        total += _play(cfg, ctx, policy=sft_label(stage),
                       policy_obj=policies.maker(str(ctx.inputs[stage] / RUN), sft_label(stage)),
                       envs=cfg.families, methods=["greedy"])
        total += _play(cfg, ctx, policy=cfg.policy, policy_obj=base, envs=cfg.families,
                       methods=[f"best_of_n={cfg.transfer.best_of_n}"], rm=family_rm_label(family), scorers=scorers)
    return (f"{total} episodes: per held-in family, its SFT policy (greedy) and the base policy with its RM "
            f"(Best-of-{cfg.transfer.best_of_n}), on {len(cfg.families)} families")


def _weak_to_strong(cfg: ReproduceConfig, ctx: StageContext) -> str:
    w = cfg.weak_to_strong
    envs = w.envs or cfg.families
    make = _Policies(cfg).maker(w.policy, w.policy, w.max_new_tokens)
    scorers = _Scorers(cfg, ctx)
    total = _play(cfg, ctx, policy=w.policy, policy_obj=make, envs=envs, methods=["greedy"],
                  max_new_tokens=w.max_new_tokens)
    total += _play(cfg, ctx, policy=w.policy, policy_obj=make, envs=envs, methods=[f"best_of_n={cfg.eval.best_of_n}"],
                   rm=RM_LABELS["explicit"], scorers=scorers, max_new_tokens=w.max_new_tokens)
    return f"{total} episodes of {w.policy}: greedy vs Best-of-{cfg.eval.best_of_n} with the explicit RM"


def _scaling(cfg: ReproduceConfig, ctx: StageContext) -> str:
    s = cfg.scaling
    envs = s.envs or cfg.families
    make = _Policies(cfg).maker(cfg.policy, cfg.policy)
    scorers = _Scorers(cfg, ctx)
    # one Best-of-N run at the largest N: its first n samples give every smaller N (summary marks them)
    methods = [f"best_of_n={max(s.n)}", *(f"beam={b}" for b in s.beam)]
    total = _play(cfg, ctx, policy=cfg.policy, policy_obj=make, envs=envs, methods=["greedy"])
    total += _play(cfg, ctx, policy=cfg.policy, policy_obj=make, envs=envs, methods=methods,
                   rm=RM_LABELS["explicit"], scorers=scorers)
    return f"{total} episodes: Best-of-N up to N={max(s.n)} and beam {', '.join(s.beam)} with the explicit RM"


def _robustness(cfg: ReproduceConfig, ctx: StageContext) -> str:
    envs = cfg.robustness.envs
    policies, scorers = _Policies(cfg), _Scorers(cfg, ctx)
    base = policies.maker(cfg.policy, cfg.policy)
    total = _play(cfg, ctx, policy=cfg.policy, policy_obj=base, envs=envs, methods=["greedy"])
    total += _play(cfg, ctx, policy=cfg.policy, policy_obj=base, envs=envs,
                   methods=[f"best_of_n={cfg.eval.best_of_n}"], rm=RM_LABELS["explicit"], scorers=scorers)
    total += _play(cfg, ctx, policy=sft_label("sft"), policy_obj=policies.maker(str(ctx.inputs["sft"] / RUN),
                   sft_label("sft")), envs=envs, methods=["greedy"])
    return f"{total} episodes on {', '.join(envs)}: base greedy / Best-of-{cfg.eval.best_of_n} (explicit), SFT greedy"


def _report(cfg: ReproduceConfig, ctx: StageContext, command: str) -> str:
    from agentrm_jax.pipeline.reproduce_report import write_results

    path, said = write_results(cfg, ctx, command=command)
    return f"results -> {path}; {said}"


# ------------------------------------------------------------------------------------------ graph


def reproduce_stages(cfg: ReproduceConfig, *, command: str = "") -> list[Stage]:
    """The stages in order. Each is fingerprinted by the config parts that decide its outputs (and, through
    `needs`, by every stage above it); `command` is only written into results.md."""
    def bind(fn, *args):
        return lambda ctx: fn(cfg, ctx, *args)

    families = {"held_in": list(cfg.held_in), "held_out": list(cfg.held_out)}
    model = {"model": cfg.model}
    sft_params = {**model, **cfg.sft.to_dict(), "max_new_tokens": cfg.eval.max_new_tokens}
    rm_needs = ("samples",)
    stages = [Stage("demos", bind(_demos), {"held_in": list(cfg.held_in), **cfg.demos.to_dict()}, ("demos.jsonl",)),
              Stage("sft", bind(_sft, ()), sft_params, (f"{RUN}/policy",), needs=("demos",))]
    per_family = cfg.sft.per_family
    if per_family:
        stages += [Stage(f"sft_{f}", bind(_sft, (f,)), {**sft_params, "tasks": [f]}, (f"{RUN}/policy",),
                         needs=("demos",)) for f in cfg.held_in]
    stages += [
        Stage("explore", bind(_explore), {"held_in": list(cfg.held_in), **cfg.explore.to_dict()},
              tuple(f"trees_{f}.jsonl" for f in cfg.held_in), needs=("sft",) if cfg.explore.policy == "sft" else ()),
        Stage("samples", bind(_samples), cfg.samples.to_dict(),
              ("train.jsonl", *(f"train_{f}.jsonl" for f in cfg.held_in)), needs=("explore",)),
        Stage("rm_explicit", bind(_explicit, "train.jsonl"), {**model, **cfg.rm.to_dict()},
              (f"{RUN}/train_config.json", f"{RUN}/checkpoints"), needs=rm_needs),
        Stage("rm_implicit", bind(_implicit), {**model, **cfg.implicit.to_dict()}, ("hf/config.json",),
              needs=rm_needs),
    ]
    if cfg.transfer.enabled:
        stages += [Stage(f"rm_{f}", bind(_explicit, f"train_{f}.jsonl"), {**model, **cfg.rm.to_dict()},
                         (f"{RUN}/train_config.json", f"{RUN}/checkpoints"), needs=rm_needs) for f in cfg.held_in]
    # lockstep and rm_batch_size decide speed only (greedy lockstep and batched scoring are exact, tested):
    # left out, so retuning them on another machine keeps every finished table
    speed_only = ("lockstep", "rm_batch_size")
    table = {**families, "policy": cfg.policy, "judge": cfg.judge.to_dict(),
             **{k: v for k, v in cfg.eval.to_dict().items() if k not in speed_only}}
    rms = ("rm_explicit", "rm_implicit")
    stages += [Stage("table1", bind(_table1), table, (ROWS,), needs=rms),
               Stage("table2", bind(_table2), table, (ROWS,), needs=("sft", *rms))]
    evals = ["table1", "table2"]
    if cfg.transfer.enabled:
        stages.append(Stage("transfer", bind(_transfer), {**table, **cfg.transfer.to_dict()}, (ROWS,),
                            needs=(*(f"sft_{f}" for f in cfg.held_in), *(f"rm_{f}" for f in cfg.held_in))))
        evals.append("transfer")
    for name, fn, part, needs in (("weak_to_strong", _weak_to_strong, cfg.weak_to_strong, ("rm_explicit",)),
                                  ("scaling", _scaling, cfg.scaling, ("rm_explicit",)),
                                  ("robustness", _robustness, cfg.robustness, ("sft", "rm_explicit"))):
        if part.enabled:
            stages.append(Stage(name, bind(fn), {**table, **part.to_dict()}, (ROWS,), needs=needs))
            evals.append(name)
    stages.append(Stage("report", bind(_report, command), {}, ("results.md",), needs=tuple(evals)))
    return stages
