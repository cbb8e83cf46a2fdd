"""The pddl environments: `PddlEnv` (`pddl`, domain by seed or `domain=`) and its single-domain subclasses
(`pddl_blocksworld`, `pddl_gripper`, `pddl_logistics`), registered here at import. The task family is described in
the `agentrm_jax.envs.pddl` package docstring.
"""

from __future__ import annotations

import random
from typing import Any

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register, task_seed
from agentrm_jax.envs.pddl.domains import DOMAINS
from agentrm_jax.envs.pddl.planning import shortest_plan
from agentrm_jax.envs.pddl.strips import Atom, PddlTask
from agentrm_jax.envs.pddl.tasks import generate_problem
from agentrm_jax.envs.pddl.text import RULES, TEMPLATES, parse_action

__all__ = ["MAX_PLAN", "BlocksworldEnv", "GripperEnv", "LogisticsEnv", "PddlEnv"]

MAX_PLAN = 20


class PddlEnv(ReplayEnv):
    """A PDDL planning task as a text environment (see the package docstring)."""

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
