"""The grounded STRIPS model: `GroundAction` (preconditions, add/delete effects as atoms) and `PddlTask` (a problem
parsed with the `pddl` package and grounded against its domain's typed action schemas).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

from agentrm_jax.envs.pddl.domains import _parsed_domain

__all__ = ["Atom", "GroundAction", "PddlTask"]

Atom = tuple[str, ...]


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
def _problem_parser():
    """One lark-based problem parser per process (building it takes ~0.5 s)."""
    from pddl.parser.problem import ProblemParser

    return ProblemParser()


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
