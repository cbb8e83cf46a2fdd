"""`pddl`: classical planning problems (blocksworld, gripper, logistics) as text, standing in for AgentBoard PDDL.

Design (why this base): the domains are ordinary PDDL files shipped in
`agentrm_jax/envs/pddl_domains/` (written for this package). Each task's
problem is generated as PDDL text from `task_seed`, both are parsed with the
`pddl` package (a maintained, pure-Python PDDL 3.1 parser), and the parsed
typed STRIPS actions are grounded by our own small simulator here (applicable
actions, add/delete effects, readable rendering). The expert is an optimal
plan from a breadth-first search over our simulator's states (the instances
are small: at most a few thousand states), expanding actions in a fixed order
so the plan is the same in every process. pyperplan (A* with the admissible
LM-cut heuristic, an independent planner with its own PDDL parser) is kept
as a cross-check: `plan_with_pyperplan` finds plans of the same optimal
length, which the tests verify. pddlgym was not used: it depends on the
unmaintained `gym` package and renders no text. The `pddl` and `pyperplan`
packages are imported lazily, inside functions, never at module import.

Supported PDDL subset: `:strips` + `:typing` (flat types), conjunctive
preconditions of positive and negated atoms, conjunctive add/delete effects.
Grounding is injective (one object never fills two parameters of an action),
and groundings whose static preconditions (facts no action changes, e.g.
`in-city`) fail are dropped, so `available_actions()` only lists sensible
actions.

Domains and instance sizes (all sampled from the task seed):

- blocksworld: 3-5 blocks `b1..b5`, random towers; the goal is a set of
  `on` facts of another random configuration. Actions `pick-up X`,
  `put-down X`, `stack X Y`, `unstack X Y`.
- gripper: 2-3 rooms `rooma..`, 2-4 balls, grippers `left`/`right`.
  Actions `move FROM TO`, `pick BALL ROOM GRIPPER`, `drop BALL ROOM GRIPPER`.
- logistics: two cities, each with an airport and an office, one truck per
  city, one airplane, 1-2 packages. Actions `load-truck P T L`,
  `unload-truck P T L`, `drive-truck T FROM TO CITY`, `load-airplane P A L`,
  `unload-airplane P A L`, `fly-airplane A FROM TO`.

Instances whose optimal plan is longer than `MAX_PLAN` (20) steps are
rejected and redrawn, so the expert always fits in the default 30 turns.

Observation: the instruction (domain rules, static facts and the goal) and
then the current facts, e.g. "b1 is on b2. b3 is on the table. b1 is clear.
The hand is empty." Actions are matched case-insensitively with hyphens,
parentheses, commas and filler words ("from", "to", "on", "the", "gripper",
...) ignored, so `pick-up b1`, `(pick-up b1)`, `Pick up b1`, `pickup b1`,
`unstack b1 from b2`, `move from rooma to roomb` and `pick ball1 in rooma
with the left gripper` all work. An unknown action or one whose
preconditions fail is a wasted turn with an explanation and the list of
valid actions. Progress is the fraction of goal atoms true now (the base
class keeps the maximum over the episode); success is all goal atoms true.

Registered names: `pddl` (domain drawn from the task seed, or fixed with the
`domain=` kwarg), and `pddl_blocksworld`, `pddl_gripper`, `pddl_logistics`.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register, task_seed

__all__ = ["DOMAINS", "MAX_PLAN", "GroundAction", "PddlEnv", "PddlTask", "generate_problem", "parse_action",
           "plan_with_pyperplan", "shortest_plan"]

DOMAIN_DIR = Path(__file__).with_name("pddl_domains")
DOMAINS = ("blocksworld", "gripper", "logistics")
MAX_PLAN = 20
MAX_STATES = 200_000
Atom = tuple[str, ...]

# Sentence templates per predicate ({0}, {1}: the arguments in order).
TEMPLATES: dict[str, dict[str, str]] = {
    "blocksworld": {
        "on": "{0} is on {1}", "ontable": "{0} is on the table", "clear": "{0} is clear",
        "handempty": "The hand is empty", "holding": "You are holding {0}",
    },
    "gripper": {
        "at-robby": "The robot is in {0}", "at": "{0} is in {1}", "free": "The {0} gripper is free",
        "carry": "The {1} gripper is carrying {0}",
    },
    "logistics": {
        "in-city": "{0} is in {1}", "airport": "{0} is an airport", "pkg-at": "{0} is at {1}",
        "truck-at": "{0} is at {1}", "plane-at": "{0} is at {1}", "in-truck": "{0} is in {1}",
        "in-plane": "{0} is in {1}",
    },
}

RULES = {
    "blocksworld": (
        "You control a robot hand that can hold one block at a time. Actions: pick-up X (pick block X up from "
        "the table; X must be clear and the hand empty), put-down X (put the held block X on the table), "
        "stack X Y (put the held block X on the clear block Y), unstack X Y (take the clear block X off block Y; "
        "the hand must be empty)."),
    "gripper": (
        "You control a robot with two grippers (left and right), each holding at most one ball. Actions: "
        "move FROM TO (move the robot between rooms), pick BALL ROOM GRIPPER (pick up a ball in the robot's room "
        "with a free gripper), drop BALL ROOM GRIPPER (drop a carried ball in the robot's room)."),
    "logistics": (
        "You deliver packages. Trucks drive between locations of their own city; airplanes fly between airports. "
        "Actions: load-truck P T L, unload-truck P T L, drive-truck T FROM TO CITY, load-airplane P A L, "
        "unload-airplane P A L, fly-airplane A FROM TO (P: package, T: truck, A: airplane, L: the location "
        "where the vehicle is)."),
}

_FILLER = {"from", "to", "on", "onto", "top", "of", "the", "a", "an", "in", "into", "at", "with", "using", "and",
           "block", "gripper", "hand", "table", "room", "ball", "action", "i", "will", "please", "then", "off", "by",
           "city", "location", "package", "truck", "airplane", "plane", "its", "my"}


# ------------------------------------------------------------------------------------------------
# Grounded STRIPS model
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroundAction:
    """One grounded action: its name, arguments, preconditions and effects as atoms (tuples)."""

    name: str
    args: tuple[str, ...]
    pre_pos: frozenset[Atom]
    pre_neg: frozenset[Atom]
    add: frozenset[Atom]
    delete: frozenset[Atom]

    @property
    def text(self) -> str:
        """The canonical action string, e.g. "stack b1 b2"."""
        return " ".join((self.name, *self.args))

    def applicable(self, state: frozenset[Atom]) -> bool:
        """Whether all preconditions hold in `state`."""
        return self.pre_pos <= state and not (self.pre_neg & state)

    def apply(self, state: frozenset[Atom]) -> frozenset[Atom]:
        """The successor state (delete effects first, then add effects, as in PDDL)."""
        return (state - self.delete) | self.add


def _literals(formula) -> tuple[list, list]:
    """Split a conjunction of (possibly negated) atoms from the `pddl` package into (positive, negative)."""
    from pddl.logic.base import And, Not
    from pddl.logic.predicates import Predicate

    parts = formula.operands if isinstance(formula, And) else ([] if formula is None else [formula])
    pos, neg = [], []
    for part in parts:
        if isinstance(part, Predicate):
            pos.append(part)
        elif isinstance(part, Not) and isinstance(part.argument, Predicate):
            neg.append(part.argument)
        else:
            raise NotImplementedError(f"unsupported PDDL formula (only conjunctions of literals): {part}")
    return pos, neg


@dataclass(frozen=True)
class _Schema:
    name: str
    params: tuple[tuple[str, str | None], ...]  # (variable name, type)
    pre_pos: tuple[tuple[str, tuple[str, ...]], ...]  # (predicate, terms: "?var" or constant)
    pre_neg: tuple[tuple[str, tuple[str, ...]], ...]
    add: tuple[tuple[str, tuple[str, ...]], ...]
    delete: tuple[tuple[str, tuple[str, ...]], ...]

    def ground(self, args: tuple[str, ...]) -> GroundAction:
        binding = {f"?{v}": a for (v, _), a in zip(self.params, args)}

        def atoms(lits):
            return frozenset((p, *(binding.get(t, t) for t in terms)) for p, terms in lits)

        return GroundAction(self.name, args, atoms(self.pre_pos), atoms(self.pre_neg), atoms(self.add),
                            atoms(self.delete))


def _schemas(domain) -> list[_Schema]:
    def lits(preds):
        return tuple((str(p.name), tuple(f"?{t.name}" if t.__class__.__name__ == "Variable" else str(t.name)
                                         for t in p.terms)) for p in preds)

    out = []
    for action in sorted(domain.actions, key=lambda a: str(a.name)):
        params = tuple((str(v.name), (sorted(v.type_tags)[0] if v.type_tags else None)) for v in action.parameters)
        pre_pos, pre_neg = _literals(action.precondition)
        add, delete = _literals(action.effect)
        out.append(_Schema(str(action.name), params, lits(pre_pos), lits(pre_neg), lits(add), lits(delete)))
    return out


@functools.lru_cache(maxsize=None)
def _domain_text(domain: str) -> str:
    path = DOMAIN_DIR / f"{domain}.pddl"
    if not path.exists():
        raise ValueError(f"unknown PDDL domain {domain!r}; available: {', '.join(DOMAINS)}")
    return path.read_text()


@functools.lru_cache(maxsize=None)
def _problem_parser():
    """One lark-based problem parser per process (building it takes ~0.5 s)."""
    from pddl.parser.problem import ProblemParser

    return ProblemParser()


@functools.lru_cache(maxsize=None)
def _parsed_domain(domain: str):
    from pddl.parser.domain import DomainParser

    return DomainParser()(_domain_text(domain))


class PddlTask:
    """A parsed and grounded planning problem: objects, initial state, goal, and all sensible ground actions."""

    def __init__(self, domain: str, problem_text: str):
        self.domain = domain
        self.problem_text = problem_text
        parsed_domain = _parsed_domain(domain)
        problem = _problem_parser()(problem_text)
        self.schemas = {s.name: s for s in _schemas(parsed_domain)}
        self.objects: dict[str, str | None] = {
            str(o.name): (sorted(o.type_tags)[0] if o.type_tags else None)
            for o in sorted(problem.objects, key=lambda o: str(o.name))}
        self.init: frozenset[Atom] = frozenset((str(a.name), *(str(t.name) for t in a.terms)) for a in problem.init)
        goal_pos, goal_neg = _literals(problem.goal)
        if goal_neg:
            raise NotImplementedError("negative goals are not supported")
        self.goal: tuple[Atom, ...] = tuple(sorted((str(a.name), *(str(t.name) for t in a.terms)) for a in goal_pos))
        changed = {p for s in self.schemas.values() for p, _ in s.add + s.delete}
        self.static_predicates = {str(p.name) for p in parsed_domain.predicates} - changed
        self.static_facts = frozenset(a for a in self.init if a[0] in self.static_predicates)
        self.actions: dict[str, GroundAction] = {}
        for schema in self.schemas.values():
            pools = [[o for o, ty in self.objects.items() if t is None or ty == t] for _, t in schema.params]
            for args in itertools.product(*pools):
                if len(set(args)) < len(args):
                    continue
                ground = schema.ground(tuple(args))
                if all(a in self.static_facts for a in ground.pre_pos if a[0] in self.static_predicates):
                    self.actions[ground.text] = ground

    def instantiate(self, name: str, args: tuple[str, ...]) -> GroundAction | None:
        """The ground action `name args` if the names and types fit the schema (static facts not checked)."""
        schema = self.schemas.get(name)
        if schema is None or len(args) != len(schema.params):
            return None
        for a, (_, t) in zip(args, schema.params):
            if a not in self.objects or (t is not None and self.objects[a] != t):
                return None
        return schema.ground(args)

    def applicable(self, state: frozenset[Atom]) -> list[GroundAction]:
        """The ground actions applicable in `state`, in a fixed order."""
        return [a for a in self.actions.values() if a.applicable(state)]

    def goal_fraction(self, state: frozenset[Atom]) -> float:
        """The fraction of goal atoms true in `state`."""
        return sum(g in state for g in self.goal) / len(self.goal)


# ------------------------------------------------------------------------------------------------
# Problem generators (PDDL text from a seeded RNG)
# ------------------------------------------------------------------------------------------------
def _problem_text(domain: str, name: str, objects: dict[str, list[str]], init: set[Atom], goal: list[Atom]) -> str:
    def atom(a: Atom) -> str:
        return "(" + " ".join(a) + ")"

    objs = " ".join(f"{' '.join(names)} - {ty}" for ty, names in objects.items())
    return (f"(define (problem {name}) (:domain {domain})\n (:objects {objs})\n"
            f" (:init {' '.join(atom(a) for a in sorted(init))})\n"
            f" (:goal (and {' '.join(atom(a) for a in goal)})))\n")


def _random_towers(rng: random.Random, blocks: list[str]) -> list[list[str]]:
    order = blocks[:]
    rng.shuffle(order)
    towers: list[list[str]] = []
    for b in order:
        if not towers or rng.random() < 0.4:
            towers.append([b])
        else:
            rng.choice(towers).append(b)
    return towers


def _gen_blocksworld(rng: random.Random) -> tuple[dict[str, list[str]], set[Atom], list[Atom]]:
    blocks = [f"b{i}" for i in range(1, rng.randint(3, 5) + 1)]
    start = _random_towers(rng, blocks)
    init: set[Atom] = {("handempty",)}
    for tower in start:
        init.add(("ontable", tower[0]))
        init.add(("clear", tower[-1]))
        init.update(("on", up, down) for down, up in zip(tower, tower[1:]))
    while True:
        goal = sorted(("on", up, down) for tower in _random_towers(rng, blocks) for down, up in zip(tower, tower[1:]))
        if goal and not set(goal) <= init:
            return {"block": blocks}, init, goal


def _gen_gripper(rng: random.Random) -> tuple[dict[str, list[str]], set[Atom], list[Atom]]:
    rooms = [f"room{c}" for c in "abc"[: rng.randint(2, 3)]]
    balls = [f"ball{i}" for i in range(1, rng.randint(2, 4) + 1)]
    init: set[Atom] = {("at-robby", rng.choice(rooms)), ("free", "left"), ("free", "right")}
    where = {b: rng.choice(rooms) for b in balls}
    init.update(("at", b, r) for b, r in where.items())
    while True:
        goal = [("at", b, rng.choice(rooms)) for b in balls]
        if not set(goal) <= init:
            return {"room": rooms, "ball": balls, "gripper": ["left", "right"]}, init, goal


def _gen_logistics(rng: random.Random) -> tuple[dict[str, list[str]], set[Atom], list[Atom]]:
    cities = ["city1", "city2"]
    locations = {c: [f"airport{i}", f"office{i}"] for i, c in enumerate(cities, 1)}
    all_locs = [loc for c in cities for loc in locations[c]]
    packages = [f"p{i}" for i in range(1, rng.randint(1, 2) + 1)]
    init: set[Atom] = set()
    for i, c in enumerate(cities, 1):
        init.add(("airport", f"airport{i}"))
        init.update(("in-city", loc, c) for loc in locations[c])
        init.add(("truck-at", f"truck{i}", rng.choice(locations[c])))
    init.add(("plane-at", "plane1", rng.choice([f"airport{i}" for i in (1, 2)])))
    goal = []
    for p in packages:
        src = rng.choice(all_locs)
        init.add(("pkg-at", p, src))
        goal.append(("pkg-at", p, rng.choice([loc for loc in all_locs if loc != src])))
    objects = {"package": packages, "truck": ["truck1", "truck2"], "airplane": ["plane1"], "location": all_locs,
               "city": cities}
    return objects, init, goal


_GENERATORS = {"blocksworld": _gen_blocksworld, "gripper": _gen_gripper, "logistics": _gen_logistics}


def generate_problem(domain: str, rng: random.Random, name: str = "task") -> str:
    """A random problem of `domain` as PDDL text (drawn from `rng`)."""
    if domain not in _GENERATORS:
        raise ValueError(f"unknown PDDL domain {domain!r}; available: {', '.join(DOMAINS)}")
    objects, init, goal = _GENERATORS[domain](rng)
    return _problem_text(domain, name, objects, init, goal)


@functools.lru_cache(maxsize=256)
def plan_with_pyperplan(domain: str, problem_text: str) -> tuple[str, ...] | None:
    """An optimal plan (A* + LM-cut, by pyperplan) as action strings, or None if the problem is unsolvable."""
    import logging

    from pyperplan.heuristics.lm_cut import LmCutHeuristic
    from pyperplan.planner import search_plan
    from pyperplan.search import astar_search

    with tempfile.TemporaryDirectory(prefix="agentrm_pddl_") as tmp:
        dom, prob = os.path.join(tmp, "domain.pddl"), os.path.join(tmp, "problem.pddl")
        Path(dom).write_text(_domain_text(domain))
        Path(prob).write_text(problem_text)
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.WARNING)
        try:
            plan = search_plan(dom, prob, astar_search, LmCutHeuristic)
        finally:
            logging.getLogger().setLevel(level)
    if plan is None:
        return None
    return tuple(op.name.strip("()").strip() for op in plan)


def shortest_plan(task: PddlTask, max_states: int = MAX_STATES, *, start: frozenset | None = None
                  ) -> tuple[str, ...] | None:
    """An optimal plan by breadth-first search over `task`'s states (None if unsolvable or over `max_states`),
    from `start` (default: the task's initial state).

    Actions are expanded in the task's fixed order, so the same task always
    gets the same plan, whatever the process's hash seed.
    """
    from collections import deque

    start = task.init if start is None else frozenset(start)
    if task.goal_fraction(start) == 1.0:
        return ()
    parent: dict[frozenset[Atom], tuple[frozenset[Atom], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        for action in task.applicable(state):
            nxt = action.apply(state)
            if nxt in parent:
                continue
            parent[nxt] = (state, action.text)
            if task.goal_fraction(nxt) == 1.0:
                plan = []
                while parent[nxt] is not None:
                    nxt, step = parent[nxt]
                    plan.append(step)
                return tuple(reversed(plan))
            if len(parent) > max_states:
                return None
            queue.append(nxt)
    return None


# ------------------------------------------------------------------------------------------------
# Action parsing and rendering
# ------------------------------------------------------------------------------------------------
def parse_action(task: PddlTask, text: str) -> tuple[str, tuple[str, ...]] | None:
    """(schema name, argument objects) named by free text, or None if no schema/arity matches.

    Hyphens, brackets and punctuation are ignored, case too; a schema name may
    be written with spaces or hyphens or joined ("pick up", "pick-up",
    "pickup"); filler words that are not object names are dropped.
    """
    tokens = re.findall(r"[a-z0-9_]+", text.lower().replace("-", " "))
    if not tokens:
        return None
    for name in sorted(task.schemas, key=lambda n: -len(n)):
        joined = name.replace("-", "")
        for k in range(1, min(len(tokens), 3) + 1):
            if "".join(tokens[:k]) == joined:
                args = tuple(t for t in tokens[k:] if t in task.objects or t not in _FILLER)
                if len(args) == len(task.schemas[name].params):
                    return name, args
    return None


class PddlEnv(ReplayEnv):
    """A PDDL planning task as a text environment (see the module docstring)."""

    name = "pddl"
    DOMAIN: str | None = None

    def __init__(self, *, split: str = "train", max_turns: int = 30, domain: str | None = None):
        super().__init__(split=split, max_turns=max_turns)
        domain = domain or self.DOMAIN
        if domain is not None and domain not in DOMAINS:
            raise ValueError(f"unknown PDDL domain {domain!r}; available: {', '.join(DOMAINS)}")
        self.domain_choice = domain
        self.task: PddlTask | None = None
        self.state: frozenset[Atom] = frozenset()
        self._plan: tuple[str, ...] = ()

    # -- rendering --------------------------------------------------------------------------------
    def _sentence(self, atom: Atom) -> str:
        template = TEMPLATES.get(self.task.domain, {}).get(atom[0])
        if template is None:
            return "(" + " ".join(atom) + ")"
        return template.format(*atom[1:])

    def _sentences(self, atoms) -> str:
        return " ".join(self._sentence(a) + "." for a in atoms)

    def describe(self) -> str:
        """The current (non-static) facts as sentences, in a fixed order."""
        order = {p: i for i, p in enumerate(TEMPLATES.get(self.task.domain, {}))}
        facts = sorted((a for a in self.state if a[0] not in self.task.static_predicates),
                       key=lambda a: (order.get(a[0], 99), a))
        return "Current state: " + self._sentences(facts)

    # -- ReplayEnv hooks --------------------------------------------------------------------------
    def _reset(self, seed: int) -> str:
        rng = random.Random(task_seed(self.name, self.split, seed))
        domain = self.domain_choice or DOMAINS[rng.randrange(len(DOMAINS))]
        for _ in range(50):
            task = PddlTask(domain, generate_problem(domain, rng, name=f"{domain}-{self.split}-{seed}"))
            plan = shortest_plan(task)
            if plan is not None and 0 < len(plan) <= MAX_PLAN:
                break
        else:  # pragma: no cover - the generators are small enough that this does not happen
            raise RuntimeError(f"pddl: no solvable {domain} instance of at most {MAX_PLAN} steps for seed {seed}")
        self.task = task
        self._plan = plan
        self.state = self.task.init
        static = sorted(self.task.static_facts)
        self._instruction = (
            f"Domain: {domain}. {RULES[domain]} "
            + (f"Facts that never change: {self._sentences(static)} " if static else "")
            + f"Your goal is to reach a state where: {self._sentences(self.task.goal)}"
        )
        return f"{self._instruction}\n{self.describe()}"

    def _step(self, action: str) -> tuple[str, bool]:
        parsed = parse_action(self.task, action)
        valid = "Valid actions: " + ", ".join(self.available_actions()) + "."
        if parsed is None:
            return f"Nothing happens: {action!r} is not a valid action. {valid}\n{self.describe()}", False
        ground = self.task.instantiate(*parsed)
        if ground is None:
            return (f"Nothing happens: {' '.join((parsed[0], *parsed[1]))!r} does not name objects of the "
                    f"right kinds (objects: {', '.join(self.task.objects)}). {valid}\n{self.describe()}"), False
        if not ground.applicable(self.state) or ground.text not in self.task.actions:
            missing = [self._sentence(a) for a in sorted(ground.pre_pos - self.state)]
            missing += [f"not: {self._sentence(a)}" for a in sorted(ground.pre_neg & self.state)]
            return (f"Nothing happens: cannot {ground.text}, because these do not hold: {'; '.join(missing)}. "
                    f"{valid}\n{self.describe()}"), False
        self.state = ground.apply(self.state)
        if self._success():
            return f"You {ground.text}. {self.describe()}\nThe goal is reached! Task completed.", True
        return f"You {ground.text}. {self.describe()}", False

    def _success(self) -> bool:
        return self.task is not None and self.task.goal_fraction(self.state) == 1.0

    def _progress(self) -> float:
        return self.task.goal_fraction(self.state)

    def available_actions(self) -> list[str] | None:
        """The ground actions applicable in the current state (canonical strings, e.g. "stack b1 b2")."""
        if self.task is None:
            return None
        return [a.text for a in self.task.applicable(self.state)]

    def expert_actions(self) -> list[str]:
        """An optimal plan from the task's initial state (breadth-first search; see `shortest_plan`)."""
        if self.task is None:
            raise RuntimeError(f"{self.name}: call reset(seed) before expert_actions()")
        return list(self._plan)

    def expert_actions_from_here(self) -> list[str]:
        """An optimal plan from the current state ([] if the goal holds or none is found)."""
        if self.task is None:
            raise RuntimeError(f"{self.name}: call reset(seed) before expert_actions_from_here()")
        return list(shortest_plan(self.task, start=self.state) or ())

    # -- cheap snapshot: the set of true facts, no replay ------------------------------------------
    def _copy_state(self) -> Any:
        return tuple(sorted(self.state))

    def _set_state(self, state: Any) -> None:
        self.state = frozenset(tuple(a) for a in state)


class BlocksworldEnv(PddlEnv):
    """`pddl_blocksworld`: the pddl env restricted to blocksworld."""

    name = "pddl_blocksworld"
    DOMAIN = "blocksworld"


class GripperEnv(PddlEnv):
    """`pddl_gripper`: the pddl env restricted to gripper."""

    name = "pddl_gripper"
    DOMAIN = "gripper"


class LogisticsEnv(PddlEnv):
    """`pddl_logistics`: the pddl env restricted to logistics."""

    name = "pddl_logistics"
    DOMAIN = "logistics"


_SOURCE = "ours (pddl 0.5.1 parser + our STRIPS simulator and BFS expert; pyperplan 2.1 cross-check)"
register(EnvSpec(
    name="pddl", factory=PddlEnv, env_type="planning", role="held_out", stands_for="AgentBoard PDDL",
    source=_SOURCE,
    description="Small classical-planning tasks (blocksworld, gripper, logistics; domain drawn from the seed or "
                "set with domain=) as text; progress = fraction of goal atoms true.",
))
for _cls in (BlocksworldEnv, GripperEnv, LogisticsEnv):
    register(EnvSpec(
        name=_cls.name, factory=_cls, env_type="planning", role="held_out", stands_for="AgentBoard PDDL",
        source=_SOURCE,
        description=f"The pddl env restricted to the {_cls.DOMAIN} domain; progress = fraction of goal atoms true.",
    ))
