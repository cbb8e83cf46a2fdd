"""Planning: the expert's optimal plan by breadth-first search over our STRIPS states (`shortest_plan`), and
pyperplan's A* + LM-cut (`plan_with_pyperplan`, imported lazily) as an independent cross-check.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from agentrm_jax.envs.pddl.domains import _domain_text
from agentrm_jax.envs.pddl.strips import Atom, PddlTask

__all__ = ["MAX_STATES", "plan_with_pyperplan", "shortest_plan"]

MAX_STATES = 200_000


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
