"""Monte Carlo tree search over a text env, host-side (envs are Python programs), many trees in lockstep.

One tree per task seed, grown from the state after `reset(seed)` by `ExploreConfig.simulations`
simulations, each of which (AgentRM's adaptation of ReST-MCTS):

1. selects a leaf from the root by UCT (`uct.select_path`: value + c * sqrt(ln N_parent / n_child),
   times the child's sample frequency when `prior` is set);
2. if the leaf is terminal, backs its outcome up again; if it is shallower than `max_depth` and not yet
   expanded, expands it: k step texts sampled from the policy at `temperature` from the leaf's context,
   parsed (`prompts.parse_step`; samples without an action are dropped; when none has one, the root
   raises `ExploreError` (the policy cannot act) and any other node gets one child with the empty
   action, which the env answers as the episode loop's would), duplicate actions merged into one child with their count, each child made by
   restoring the leaf's env snapshot and stepping its action; otherwise (a leaf at `max_depth`) it
   is re-evaluated: m more rollouts from it;
3. evaluates each new child: a terminal child's value is the env's outcome; any other child runs
   `rollouts` rollouts (the policy at `rollout_temperature`, to a terminal state or `rollout_depth`
   steps) and its value is their mean outcome;
4. backs up: each new child adds one visit and its value to itself and every ancestor
   (`uct.backup`), so a node's visits and value sum are its own evaluations plus its children's.

An outcome is the env's success (1/0) or its progress rate, per `ExploreConfig.value`; a rollout cut
by `rollout_depth` scores the state it reached (success: 0 unless the task is already solved).

Batching: `grow_trees` runs the trees of a chunk (`batch_trees` seeds) as coroutines; every policy
call they need in one tick (an expansion's k samples, or one turn of all their live rollouts) goes to
the policy as one `sample_grouped` call per (policy, temperature), seeded by (run seed, tick, group).
Trees are thus a function of the config and the chunk's seeds only: rerunning a chunk gives the same
trees (what resume and worker processes rely on).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

from agentrm_jax.agents.loop import sample_grouped
from agentrm_jax.agents.prompts import build_messages, parse_step
from agentrm_jax.records import Step, Trajectory
from agentrm_jax.explore.config import ExploreConfig
from agentrm_jax.explore.tree import Node, Tree
from agentrm_jax.explore.uct import backup, select_path

__all__ = ["ExploreError", "TreeSearch", "grow_trees", "seed_chunks"]


class ExploreError(ValueError):
    """Exploration cannot go on (e.g. the policy proposes no parsable action); the message says why."""


@dataclass(frozen=True)
class Request:
    """Policy samples a search needs: one step text per context, at `temperature`."""

    contexts: list
    temperature: float


SIMULATION_DONE = "simulation done"  # yielded by a search after each simulation (progress accounting)


class _Rollout:
    __slots__ = ("start", "env", "trajectory", "steps")

    def __init__(self, start: int, env, trajectory: Trajectory):
        self.start, self.env, self.trajectory, self.steps = start, env, trajectory, 0


class TreeSearch:
    """The search of one task's tree; `run()` is a coroutine yielding `Request`s (answered with the step
    texts, in order) and `SIMULATION_DONE`, and returning the finished `Tree`.

    factory: a fresh env of the config's env and split (not reset); env_name names the task in
    prompts and records (default `cfg.env`).
    """

    def __init__(self, cfg: ExploreConfig, seed: int, factory: Callable[[], object], *,
                 env_name: str | None = None, fingerprint: str = ""):
        self.cfg, self.seed, self.factory = cfg, seed, factory
        self.env_name = env_name or cfg.env
        self.fingerprint = fingerprint
        self._pool: list = []
        self.nodes: list[dict] = []
        self.children: list[list[int]] = []
        self.visits: list[int] = []
        self.sums: list[float] = []
        self.priors: list[float] = []
        self._snapshots: list = []
        self._trajectories: list[Trajectory] = []
        self._expanded: list[bool] = []

    # -- envs ---------------------------------------------------------------------------------------
    def _env_at(self, snapshot):
        env = self._pool.pop() if self._pool else self.factory()
        env.restore(snapshot)
        return env

    def _outcome(self, env) -> float:
        if self.cfg.value == "progress":
            return min(max(float(env.progress), 0.0), 1.0)
        return 1.0 if env.success else 0.0

    def _add(self, parent: int | None, env, trajectory: Trajectory, *, thought="", action="", text="",
             observation="", count=1) -> int:
        node_id = len(self.nodes)
        terminal = bool(env.done)
        self.nodes.append({"parent": parent, "depth": len(trajectory.steps), "thought": thought, "action": action,
                           "text": text, "observation": observation, "count": count, "terminal": terminal,
                           "outcome": self._outcome(env) if terminal else None, "success": bool(env.success),
                           "progress": min(max(float(env.progress), 0.0), 1.0), "rollouts": []})
        self.children.append([])
        if parent is not None:
            self.children[parent].append(node_id)
        self.visits.append(0)
        self.sums.append(0.0)
        self.priors.append(count / self.cfg.k if parent is not None else 1.0)
        self._snapshots.append(env.snapshot())
        self._trajectories.append(trajectory)
        self._expanded.append(False)
        return node_id

    # -- the coroutine ------------------------------------------------------------------------------
    def run(self) -> Generator[Request | str, list[str] | None, Tree]:
        cfg = self.cfg
        env = self.factory()
        first = env.reset(self.seed)
        self._add(None, env, Trajectory(task=self.env_name, instruction=str(first)), observation=str(first))
        self._pool.append(env)
        max_depth = cfg.max_depth if cfg.max_depth is not None else float("inf")
        for _ in range(cfg.simulations):
            path = select_path(self.children, self.visits, self.sums, cfg.c, self.priors if cfg.prior else None)
            leaf = path[-1]
            node = self.nodes[leaf]
            if node["terminal"]:
                self.visits, self.sums = backup(self.visits, self.sums, path, node["outcome"])
            elif not self._expanded[leaf] and node["depth"] < max_depth:
                new = yield from self._expand(leaf)
                outcomes = yield from self._rollouts([n for n in new if not self.nodes[n]["terminal"]])
                for n in new:
                    if self.nodes[n]["terminal"]:
                        value = self.nodes[n]["outcome"]
                    else:
                        self.nodes[n]["rollouts"].extend(outcomes[n])
                        value = sum(outcomes[n]) / len(outcomes[n])
                    self.visits, self.sums = backup(self.visits, self.sums, path + [n], value)
            else:
                outcomes = yield from self._rollouts([leaf])
                node["rollouts"].extend(outcomes[leaf])
                self.visits, self.sums = backup(self.visits, self.sums, path,
                                                sum(outcomes[leaf]) / len(outcomes[leaf]))
            yield SIMULATION_DONE
        return self._tree()

    def _context(self, trajectory: Trajectory):
        return build_messages(trajectory, env_name=self.env_name, one_shot=self.cfg.one_shot)

    def _expand(self, leaf: int):
        cfg = self.cfg
        texts = yield Request([self._context(self._trajectories[leaf])] * cfg.k, cfg.temperature)
        merged: dict[str, list] = {}  # action -> [thought, text, count], in order of first appearance
        for text in texts:
            thought, action = parse_step(text)
            if not action:
                continue
            if action in merged:
                merged[action][2] += 1
            else:
                merged[action] = [thought, text, 1]
        if not merged and leaf == 0:
            shown = (texts[0] if texts else "")[:80]
            raise ExploreError(f"{self.env_name}/{cfg.split}/{self.seed}: the policy returned no parsable action "
                               f"in {cfg.k} samples at the root; first reply {shown!r}; a step must contain a "
                               "line 'Action: ...'")
        if not merged:  # as in the episode loop, unparsable text is the empty action, which the env answers
            merged[""] = [parse_step(texts[0])[0] if texts else "", texts[0] if texts else "", len(texts)]
        self._expanded[leaf] = True
        new = []
        for action, (thought, text, count) in merged.items():
            env = self._env_at(self._snapshots[leaf])
            observation, _ = env.step(action)
            trajectory = self._trajectories[leaf].append(Step(thought, action, str(observation)))
            new.append(self._add(leaf, env, trajectory, thought=thought, action=action, text=text,
                                 observation=str(observation), count=count))
            self._pool.append(env)
        return new

    def _rollouts(self, starts: Sequence[int]):
        """{start: [outcome of each of the m rollouts from it]} (a coroutine, like `run`)."""
        cfg = self.cfg
        runs = [_Rollout(s, self._env_at(self._snapshots[s]), self._trajectories[s])
                for s in starts for _ in range(cfg.rollouts)]
        limit = cfg.rollout_depth if cfg.rollout_depth is not None else float("inf")
        while True:
            live = [r for r in runs if not r.env.done and r.steps < limit]
            if not live:
                break
            texts = yield Request([self._context(r.trajectory) for r in live], cfg.roll_temperature)
            for r, text in zip(live, texts):
                thought, action = parse_step(text)
                observation, _ = r.env.step(action)
                r.trajectory = r.trajectory.append(Step(thought, action, str(observation)))
                r.steps += 1
        outcomes: dict[int, list[float]] = {s: [] for s in starts}
        for r in runs:
            outcomes[r.start].append(self._outcome(r.env))
            self._pool.append(r.env)
        return outcomes

    def _tree(self) -> Tree:
        nodes = tuple(Node(id=i, visits=self.visits[i], value_sum=self.sums[i],
                           **{**n, "rollouts": tuple(n["rollouts"])}) for i, n in enumerate(self.nodes))
        return Tree(env=self.env_name, split=self.cfg.split, seed=self.seed,
                    instruction=self._trajectories[0].instruction, nodes=nodes, fingerprint=self.fingerprint,
                    simulations=self.cfg.simulations)


def seed_chunks(cfg: ExploreConfig, seeds: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """The config's seeds (or `seeds`, a subset in config order) cut into lockstep chunks of `batch_trees`.

    Chunks are fixed by the config's full seed list, so a chunk holds the same seeds on every run.
    """
    chunks = [tuple(cfg.seeds[i:i + cfg.batch_trees]) for i in range(0, len(cfg.seeds), cfg.batch_trees)]
    if seeds is None:
        return chunks
    wanted = set(seeds)
    return [c for c in chunks if wanted.intersection(c)]


def _call_seed(run_seed: int, tick: int, group: int) -> int:
    return (int(run_seed) * 1_000_003 + tick * 7_919 + group * 104_729 + 1) % (2**31 - 1)


def grow_trees(cfg: ExploreConfig, seeds: Sequence[int], *, policy_for: Callable[[int], object],
               factory: Callable[[], object], env_name: str | None = None,
               on_simulation: Callable[[], None] | None = None) -> Iterator[Tree]:
    """Grow the trees of `seeds` (one lockstep chunk) together; yield each tree as it finishes.

    policy_for(seed): the task's policy (the same object for every seed where one policy serves all,
    so one batched call per tick serves every tree); factory(): a fresh env (not reset).
    on_simulation() is called after every simulation of any tree.
    """
    fingerprint = cfg.fingerprint()
    policies = [policy_for(s) for s in seeds]
    runs = [TreeSearch(cfg, s, factory, env_name=env_name, fingerprint=fingerprint).run() for s in seeds]
    pending: dict[int, Request] = {}
    finished: list[Tree] = []

    def advance(i: int, answer):
        while True:
            try:
                item = runs[i].send(answer)
            except StopIteration as stop:
                finished.append(stop.value)
                return
            if item is SIMULATION_DONE:
                if on_simulation is not None:
                    on_simulation()
                answer = None
                continue
            pending[i] = item
            return

    for i in range(len(runs)):
        advance(i, None)
        yield from finished
        finished.clear()
    tick = 0
    while pending:
        groups: dict[tuple[int, float], list[int]] = {}
        for i in sorted(pending):
            groups.setdefault((id(policies[i]), pending[i].temperature), []).append(i)
        answers: dict[int, list[str]] = {}
        for g, ((_, temperature), members) in enumerate(groups.items()):
            contexts = [c for i in members for c in pending[i].contexts]
            texts = sample_grouped(policies[members[0]], contexts, temperature=temperature,
                                   seed=_call_seed(cfg.seed, tick, g))
            at = 0
            for i in members:
                answers[i] = texts[at:at + len(pending[i].contexts)]
                at += len(pending[i].contexts)
        pending.clear()
        for i in sorted(answers):
            advance(i, answers[i])
        yield from finished
        finished.clear()
        tick += 1
