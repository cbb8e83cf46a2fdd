"""The tasks as language: sentence templates per predicate, each domain's rules, and `parse_action`, which reads a
schema name and its objects out of free text.
"""

from __future__ import annotations

import re

from agentrm_jax.envs.pddl.strips import PddlTask

__all__ = ["RULES", "TEMPLATES", "parse_action"]

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
