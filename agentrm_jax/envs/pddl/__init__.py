"""`pddl`: classical planning problems (blocksworld, gripper, logistics) as text, standing in for AgentBoard PDDL.

Design (why this base): the domains are ordinary PDDL files shipped in
`agentrm_jax/envs/pddl_domains/` (written for this package). Each task's
problem is generated as PDDL text from `task_seed`, both are parsed with the
`pddl` package (a maintained, pure-Python PDDL 3.1 parser), and the parsed
typed STRIPS actions are grounded by our own small simulator (strips.py: applicable
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

Layout: `domains.py` (the shipped domain files), `strips.py` (the grounded STRIPS model, `PddlTask`), `tasks.py`
(problem generation), `planning.py` (BFS expert, pyperplan cross-check), `text.py` (sentences, rules,
`parse_action`), `env.py` (the envs and their registration).
"""

from agentrm_jax.envs.pddl.domains import DOMAIN_DIR, DOMAINS
from agentrm_jax.envs.pddl.env import MAX_PLAN, BlocksworldEnv, GripperEnv, LogisticsEnv, PddlEnv
from agentrm_jax.envs.pddl.planning import MAX_STATES, plan_with_pyperplan, shortest_plan
from agentrm_jax.envs.pddl.strips import Atom, GroundAction, PddlTask
from agentrm_jax.envs.pddl.tasks import generate_problem
from agentrm_jax.envs.pddl.text import RULES, TEMPLATES, parse_action

__all__ = ["DOMAINS", "DOMAIN_DIR", "MAX_PLAN", "MAX_STATES", "RULES", "TEMPLATES", "Atom", "BlocksworldEnv",
           "GripperEnv", "GroundAction", "LogisticsEnv", "PddlEnv", "PddlTask", "generate_problem", "parse_action",
           "plan_with_pyperplan", "shortest_plan"]

