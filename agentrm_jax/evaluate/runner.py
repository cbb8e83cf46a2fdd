"""Run an evaluation: envs x methods x seeds, one JSONL row per episode, resumable, optionally in worker processes.

    plan_episodes(cfg)    every (env, method, seed) episode of the config, keyed (see `Episode.key`)
    run_eval(cfg)         plays the episodes whose key is not in cfg.output yet; appends one row each
    read_rows(path)       the rows of a results file (a torn last line is dropped, or cut with repair=True)

Resume: a row is appended (and fsynced) as soon as its episode ends, so a run
killed at any point loses at most the episodes in flight; rerunning skips
every key already written and cuts a torn last line first. Duplicates are
never written (the parent process is the only writer and checks keys).
Two runs appending to one file at the same time are not supported.

Lockstep: greedy episodes of one env with a model or served policy are played in
groups of up to `cfg.lockstep` (`search.greedy_many`: one batched policy call per
turn for the whole group); a group's rows are appended when the group ends, so a
kill loses at most the groups in flight.

Eval row (DESIGN.md): env, seed, method, params, trajectory, success,
progress, score, costs, plus rm (null for greedy, which uses none), split,
policy, baselines, candidate_scores and key.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrm_jax.records import append_jsonl, read_object_lines
from agentrm_jax.evaluate.config import MODEL_POLICIES, TASK_POLICIES, EvalConfig, Method

__all__ = ["Episode", "EpisodeRunner", "build_rm", "check_paths", "lockstep_groups", "plan_episodes", "read_rows",
           "run_eval"]


@dataclass(frozen=True)
class Episode:
    """One search on one task: what a row records and what its key identifies.

    rm: the RM label (None for greedy, which uses no RM, so greedy rows are shared by runs with different RMs).
    policy: the policy label (`EvalConfig.policy_label`).
    max_turns: the config's limit (None: the env's own).
    """

    env: str
    split: str
    seed: int
    method: Method
    rm: str | None
    policy: str
    temperature: float
    max_turns: int | None

    @property
    def key(self) -> str:
        """A string naming exactly this episode, e.g. `maze|test|3|best_of_n=4|T=0.7|turns=8|rm=oracle|policy=bundled`.

        Greedy keys carry no temperature (greedy always decodes at 0) and no RM.
        """
        temp = "T=-" if self.method.name == "greedy" else f"T={self.temperature:g}"
        turns = f"turns={self.max_turns if self.max_turns is not None else 'env'}"
        return "|".join([self.env, self.split, str(self.seed), self.method.spec, temp, turns,
                         f"rm={self.rm or '-'}", f"policy={self.policy}"])


def plan_episodes(cfg: EvalConfig) -> list[Episode]:
    """Every episode of `cfg`, ordered env, then method, then seed (the order a single worker plays them)."""
    return [Episode(env=env, split=cfg.split, seed=seed, method=m, rm=None if m.name == "greedy" else cfg.rm_label,
                    policy=cfg.policy_label, temperature=cfg.temperature, max_turns=cfg.max_turns)
            for env in cfg.envs for m in cfg.methods for seed in cfg.task_seeds]


def lockstep_groups(cfg: EvalConfig, episodes: Sequence[Episode]) -> list[list[Episode]]:
    """`episodes` cut into the groups the runner plays together, in order: runs of consecutive greedy
    episodes of one env (a model or served policy: task policies belong to one task) of at most
    `cfg.lockstep` each; every other episode alone. With several workers a group holds at most
    ceil(episodes / workers), so grouping never leaves a worker idle that one-at-a-time play would use."""
    groups: list[list[Episode]] = []
    shared_policy = cfg.policy not in TASK_POLICIES
    size = cfg.lockstep if cfg.workers == 1 else max(1, min(cfg.lockstep, -(-len(episodes) // cfg.workers)))
    for ep in episodes:
        last = groups[-1] if groups else None
        if (shared_policy and ep.method.name == "greedy" and last is not None and len(last) < size
                and last[0].method.name == "greedy" and last[0].env == ep.env):
            last.append(ep)
        else:
            groups.append([ep])
    return groups


# ----------------------------------------------------------------------------------------------- file


def read_rows(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """The rows of a results JSONL file ([] if it does not exist); a torn last line is kept when it is a
    complete object, else dropped (`repair=True` fixes the file): see `records.read_object_lines`."""
    return [row for _, row in read_object_lines(path, repair=repair)]


def _model_path_ok(spec: str, what: str) -> None:
    if not Path(spec).expanduser().exists():
        raise FileNotFoundError(f"{what} {spec!r}: no such file or directory (expected an HF model directory "
                                f"or a .gguf file)")


def check_paths(cfg: EvalConfig, *, policy: bool = True, rm: bool = True) -> None:
    """Check that every file the policy (if `policy`) and RM (if `rm`) specs name exists.

    Cheap: run before loading anything, so a typo fails in a second, not after a model load.
    """
    served = cfg.policy.startswith(("http://", "https://"))
    if policy and cfg.policy not in TASK_POLICIES + MODEL_POLICIES and not served:
        _model_path_ok(cfg.policy, "policy")
    if not rm or not any(m.name != "greedy" for m in cfg.methods):
        return  # no RM is built
    kind, sep, rest = cfg.rm.partition(":")
    if cfg.rm == "oracle" or kind == "random":
        return
    if kind == "judge":
        if rest != "bundled" and not rest.startswith(("http://", "https://")):
            _model_path_ok(rest, "rm judge model")
    elif kind == "implicit":
        for p in rest.split(","):
            _model_path_ok(p.strip(), "rm implicit model")
    else:
        from agentrm_jax.runs import is_training_run

        directory = Path(rest if kind == "explicit" else cfg.rm).expanduser()
        # an `agentrm train` run directory is scored at its latest checkpoint (build_rm loads it)
        if not (directory / "config.json").exists() and not is_training_run(directory):
            raise FileNotFoundError(f"rm {cfg.rm!r}: {directory} is not an RM directory (no config.json) nor an "
                                    "`agentrm train` run; give a run, its export or an HF sequence classifier "
                                    "directory")


def build_rm(spec: str, *, batch_size: int = 8):
    """A reward model from its spec (see `EvalConfig.rm`); learned RMs load their weights here (slow)."""
    from agentrm_jax.rewards.commands import build_reward_model
    from agentrm_jax.search import OracleScorer, RandomScorer

    kind, _, rest = spec.partition(":")
    if spec == "oracle":
        return OracleScorer()
    if kind == "random":
        return RandomScorer(seed=int(rest or 0))
    if kind == "judge":
        return build_reward_model("judge", judge=rest, batch_size=batch_size)
    if kind == "implicit":
        policy, reference = (p.strip() for p in rest.split(","))
        return build_reward_model("implicit", policy=policy, reference=reference, batch_size=batch_size)
    return build_reward_model("explicit", rm=rest if kind == "explicit" else spec, batch_size=batch_size)


def _new_env(name: str, split: str):
    """A fresh, un-reset env (what search functions want from their factory)."""
    from agentrm_jax.envs import REGISTRY

    return REGISTRY[name].factory(split=split)


class EpisodeRunner:
    """Plays episodes of one config, building the policy and the RM once (lazily) and reusing them.

    policy / rm: ready objects to use instead of building them from the config's specs (the config's
    labels still name them in rows and keys). The expert and random policies belong to one task, so
    unless a policy object is given they are rebuilt for every episode (cheap).
    """

    def __init__(self, cfg: EvalConfig, *, policy=None, rm=None):
        self.cfg = cfg
        self._policy, self._rm = policy, rm

    def policy_for(self, env: str, seed: int):
        from agentrm_jax.agents.factory import make_policy

        cfg = self.cfg
        if self._policy is not None:
            return self._policy
        if cfg.policy in TASK_POLICIES:
            probe = _new_env(env, cfg.split)
            probe.reset(seed)
            return make_policy(cfg.policy, probe, seed=cfg.policy_seed, noise=cfg.noise)
        self._policy = make_policy(cfg.policy, None, max_new_tokens=cfg.max_new_tokens, kv_cache_mb=cfg.kv_cache_mb,
                                   concurrency=cfg.concurrency, drop_tokens=cfg.drop_tokens)
        return self._policy

    @property
    def rm(self):
        if self._rm is None:
            self._rm = build_rm(self.cfg.rm, batch_size=self.cfg.rm_batch_size)
        return self._rm

    def run(self, episode: Episode) -> dict[str, Any]:
        """Play one episode; returns its eval row."""
        from agentrm_jax.search import SearchConfig, beam_search, best_of_n, greedy

        m = episode.method
        search_cfg = SearchConfig(seed=episode.seed, max_turns=episode.max_turns, temperature=episode.temperature,
                                  n=max(m.n, 1), beam_width=max(m.width, 1), expansions=max(m.expansions, 1))
        policy = self.policy_for(episode.env, episode.seed)
        name, split = episode.env, episode.split

        def factory():
            return _new_env(name, split)

        if m.name == "greedy":
            result = greedy(policy, factory, search_cfg)
        elif m.name == "best_of_n":
            result = best_of_n(policy, self.rm, factory, search_cfg)
        else:
            result = beam_search(policy, self.rm, factory, search_cfg)
        return self._row(episode, result)

    def run_group(self, episodes: Sequence[Episode], *,
                  on_turn: Callable[[int, int, int], None] | None = None) -> list[dict[str, Any]]:
        """Rows of a `lockstep_groups` group: one episode played alone, or greedy episodes of one env
        played together (`search.greedy_many`; each row's `costs.lockstep` says how many shared them).
        on_turn(turns played, turn limit, episodes still live): told after each turn of a group."""
        from agentrm_jax.search import SearchConfig, greedy_many

        if len(episodes) == 1:
            return [self.run(episodes[0])]
        first = episodes[0]
        if any(ep.method.name != "greedy" or ep.env != first.env for ep in episodes):
            raise ValueError("run_group: a lockstep group holds greedy episodes of one env only")
        policy = self.policy_for(first.env, first.seed)
        name, split = first.env, first.split
        cfgs = [SearchConfig(seed=ep.seed, max_turns=ep.max_turns, temperature=ep.temperature) for ep in episodes]
        results = greedy_many(policy, lambda: _new_env(name, split), cfgs, on_turn=on_turn)
        rows = [self._row(ep, result) for ep, result in zip(episodes, results)]
        for row in rows:
            row["costs"]["lockstep"] = len(episodes)
        return rows

    @staticmethod
    def _row(episode: Episode, result) -> dict[str, Any]:
        d = result.to_dict()
        return {"env": episode.env, "seed": episode.seed, "method": d["method"], "params": d["params"],
                "trajectory": d["trajectory"], "success": d["success"], "progress": d["progress"],
                "score": d["score"], "costs": d["costs"], "rm": episode.rm, "split": episode.split,
                "policy": episode.policy, "baselines": d["baselines"], "candidate_scores": d["candidate_scores"],
                "key": episode.key}


# ------------------------------------------------------------------------------------------- workers

# Set in worker processes only (by `_init_worker`): each worker builds its policy and RM once.
_WORKER_RUNNER: EpisodeRunner | None = None


def _exit_with_parent(parent: int) -> None:
    """Exit when the parent process is gone (a killed `agentrm eval` must not leave workers playing on)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(cfg: EvalConfig, parent: int) -> None:
    global _WORKER_RUNNER
    _WORKER_RUNNER = EpisodeRunner(cfg)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _work(group: Sequence[Episode], release_memory: bool) -> list[dict[str, Any]]:
    assert _WORKER_RUNNER is not None, "worker not initialised"
    return _WORKER_RUNNER.run_group(group, on_turn=_turn_callback(None, [], group, release_memory))


def _results_in_pool(cfg: EvalConfig, todo: Sequence[Sequence[Episode]], workers: int, release_memory: bool = False
                     ) -> Iterator[list[dict[str, Any]]]:
    """Rows of each group of `todo` as workers finish them (any order); pending groups are cancelled on
    error or close."""
    ctx = multiprocessing.get_context("spawn")  # fork after JAX has started threads can deadlock
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(cfg, os.getpid()))
    try:
        pending = {pool.submit(_work, group, release_memory) for group in todo}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                yield fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------- driver


def _success_postfix(wins: list[bool]) -> dict[str, str]:
    """The bar's running success rate ({} before any episode has ended)."""
    return {"success": f"{sum(wins) / len(wins):.0%}"} if wins else {}


def _turn_callback(bar, wins: list[bool], group: Sequence[Episode], release_memory: bool
                   ) -> Callable[[int, int, int], None] | None:
    """An on_turn for `run_group`: shows in `bar` how far a lockstep group has got, and with
    release_memory drops compiled programs and trims the heap after each turn (models/host_memory.py).
    None when there is nothing to do."""
    show = bar is not None and len(group) > 1
    if not show and not (release_memory and len(group) > 1):
        return None
    env = group[0].env

    def on_turn(turn: int, limit: int, live: int) -> None:
        if release_memory:
            from agentrm_jax.models.host_memory import release_compiled_programs

            release_compiled_programs()
        if show:
            bar.set_postfix(**_success_postfix(wins), group=f"{len(group)} {env}", turn=f"{turn}/{limit}", live=live)

    return on_turn


def run_eval(cfg: EvalConfig, *, policy=None, rm=None, progress: bool = True, release_memory: bool = False) -> Path:
    """Play every episode of `cfg` not yet in `cfg.output`, appending one row each; returns the output path.

    policy / rm: ready objects to use instead of building them from the specs (single worker only;
    the config's labels name them in rows). With `cfg.workers > 1` episodes run in a pool of spawned
    processes, each building its own policy and RM once; rows are the same as with one worker (search
    is deterministic given the task seed) but are written in the order episodes finish.
    A progress bar (stderr) shows episodes done and the running success rate, and with one worker
    the turn a lockstep group has reached (a group's rows arrive only when all its episodes end).
    release_memory: after each lockstep turn, drop every compiled jax program of the process and trim
    its heap (`models.host_memory.release_compiled_programs`), so a long group's memory stays flat;
    process-wide, so for callers that own their process (`agentrm eval` passes it).
    """
    if cfg.workers > 1 and (policy is not None or rm is not None):
        raise ValueError("run_eval: policy/rm objects cannot be shipped to worker processes; pass specs in the "
                         "config (policy, rm) or use workers=1")
    check_paths(cfg, policy=policy is None, rm=rm is None)
    out = Path(cfg.output)
    episodes = plan_episodes(cfg)
    existing = {row.get("key"): row for row in read_rows(out, repair=True)}
    todo = [ep for ep in episodes if ep.key not in existing]
    wins = [bool(existing[ep.key].get("success")) for ep in episodes if ep.key in existing]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(episodes), initial=len(episodes) - len(todo), desc=f"eval -> {out.name}",
                   unit="ep", file=sys.stderr, dynamic_ncols=True)
        if wins:
            bar.set_postfix(**_success_postfix(wins))
    written = set(existing)
    if not todo:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch()
    groups = lockstep_groups(cfg, todo)
    workers = min(cfg.workers, len(groups))
    if workers > 1:
        batches = _results_in_pool(cfg, groups, workers, release_memory)
    else:
        runner = EpisodeRunner(cfg, policy=policy, rm=rm)
        batches = (runner.run_group(group, on_turn=_turn_callback(bar, wins, group, release_memory))
                   for group in groups)
    try:
        for batch in batches:
            # a key written already cannot occur (keys are unique); guards the file all the same
            batch = [row for row in batch if row["key"] not in written]
            append_jsonl(out, batch)
            for row in batch:
                written.add(row["key"])
                wins.append(bool(row["success"]))
            if bar is not None and batch:
                bar.update(len(batch))
                bar.set_postfix(**_success_postfix(wins), last=f"{batch[-1]['env']}/{batch[-1]['seed']}")
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        if bar is not None:
            bar.close()
    return out
