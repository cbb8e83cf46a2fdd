"""Problem generation: a random blocksworld, gripper or logistics problem as PDDL text, drawn from a seeded RNG."""

from __future__ import annotations

import random

from agentrm_jax.envs.pddl.domains import DOMAINS
from agentrm_jax.envs.pddl.strips import Atom

__all__ = ["generate_problem"]

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
