"""Expert thoughts: one short sentence or two per step that say WHY the expert's action is right, read
from the env's state before the action (for demonstrations: `agents.collect`).

    explain(env, action, *, recovering=False) -> str
    deviation_thought(action) -> str

Per family: maze states the position, the goal's direction and the open ways (the observation made
easy to use: the first SFT probe in ../shared/FACTS.md ignored the walls); shop names the page and
why the click (the option the request asks for, the item that matches); pddl lists the goal facts
still missing; babyai names the mission's object; tools say what the call finds out or changes; the
walkthrough envs (twx / alfworld, sciworld, textworld) explain the action by its verb. `recovering`
(the previous step was a noisy one) starts the thought with a note that the plan resumes.
Read-only: nothing here changes the env.
"""

from __future__ import annotations

import re

__all__ = ["deviation_thought", "explain"]


def _family(env) -> str:
    name = str(getattr(env, "name", "")).lower()
    for family in ("maze", "shop", "webshop", "pddl", "babyai", "tool"):
        if name.startswith(family):
            return "shop" if family == "webshop" else family
    return "walkthrough"


def explain(env, action: str, *, recovering: bool = False) -> str:
    """Why `action` is the right next step in `env`'s current state (before it is taken)."""
    try:
        thought = _EXPLAINERS[_family(env)](env, action)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        thought = _walkthrough(env, action)  # an env without the state a family explainer reads
    if recovering:
        thought = "That did not get me closer to the goal; back to the plan. " + thought
    return thought


def deviation_thought(action: str) -> str:
    """The thought written before a noisy (non-expert) action; such steps are not SFT targets."""
    return f"I try {action}."


# ---------------------------------------------------------------------------------------------- maze

_OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}


def _relation(here: tuple[int, int], goal: tuple[int, int]) -> str:
    parts = []
    if goal[1] != here[1]:
        parts.append("south" if goal[1] > here[1] else "north")
    if goal[0] != here[0]:
        parts.append("east" if goal[0] > here[0] else "west")
    return "-".join(parts) if parts else "here"


def _maze(env, action: str) -> str:
    from agentrm_jax.envs.maze import DIRECTIONS, parse_move

    task, here = env.task, tuple(env.position)
    direction = parse_move(action)
    open_ways = [d for d in DIRECTIONS if task.is_open(here, d)]
    head = (f"I am at {here} and the goal is at {task.goal}, to the {_relation(here, task.goal)}. "
            f"Open: {', '.join(open_ways) or 'nothing'}.")
    if direction is None:
        return f"{head} I {action}."
    dx, dy = DIRECTIONS[direction]
    if (here[0] + dx, here[1] + dy) == task.goal:
        return f"{head} The goal is right to the {direction}, so I move {direction}."
    toward = direction in _relation(here, task.goal).split("-")
    if toward:
        return f"{head} {direction.capitalize()} is open and leads toward the goal, so I move {direction}."
    others = [d for d in open_ways if d != direction]
    toward_open = [d for d in others if d in _relation(here, task.goal).split("-")]
    if not others:
        why = "the only open way"
    elif toward_open:
        why = f"where the path continues: {' and '.join(toward_open)} lead{'s' * (len(toward_open) == 1)} to a dead end"
    else:
        why = "where the path continues, since the ways toward the goal are walled"
    return f"{head} {direction.capitalize()} is {why}, so I move {direction}."


# ---------------------------------------------------------------------------------------------- shop

_CLICK = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.I | re.S)


def _shop(env, action: str) -> str:
    match = _CLICK.match(action)
    goal = env.goal
    if match is None:
        return f"I {action}."
    verb, arg = match.group(1).lower(), match.group(2).strip()
    if verb == "search":
        return f"I am on the search page, so I search for what the instruction describes: {arg}."
    page = env._page
    if arg == "Next >":
        return "The product I want is not on this page of results, so I go to the next page."
    if arg == "< Prev":
        return "I go back to the previous page, where the product I want is."
    if arg == "Back to Search":
        return "This page does not have the product I want, so I go back to search."
    if arg == "Buy Now":
        return (f"This item matches the request and costs less than ${goal.price_upper:.2f}, and every option "
                "the request asks for is selected, so I buy it.")
    if page.kind == "results":
        product = env.catalogue.products[arg]
        return (f"{arg} is {product.name} at ${product.price:.2f}: it matches the request and is under "
                f"${goal.price_upper:.2f}, so I open it.")
    return f"The request asks for {arg}, and it is not selected yet, so I click it."


# ---------------------------------------------------------------------------------------------- pddl

def _pddl(env, action: str) -> str:
    missing = [env._sentence(a) for a in sorted(env.task.goal) if a not in env.state]
    done = len(env.task.goal) - len(missing)
    todo = "; ".join(missing[:3]) + ("; ..." if len(missing) > 3 else "")
    return (f"{done} of {len(env.task.goal)} goal facts hold; still missing: {todo}. "
            f"{action} is the first step of a shortest plan from here.")


# -------------------------------------------------------------------------------------------- babyai

_MISSION = re.compile(r"[Yy]our mission: (.*?)\.(?:\s|$)")


def _babyai(env, action: str) -> str:
    found = _MISSION.search(env.instruction)
    mission = found.group(1) if found else "the mission"
    why = {
        "move forward": "the way ahead is open and brings me closer to where I need to be",
        "turn left": "the way I need to go is to my left",
        "turn right": "the way I need to go is to my right",
        "pick up": "the object I need is right in front of me",
        "drop": "I carry what I need and this is where it goes",
        "toggle": "the door or box in front of me must be opened",
    }.get(action.strip().lower(), "it is the next step of the plan")
    return f"My mission: {mission}. I {action}, because {why}."


# --------------------------------------------------------------------------------------------- tools

_CALL = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.S)


def _tools(env, action: str) -> str:
    match = _CALL.match(action)
    if match is None:
        return f"I call {action}."
    tool, args = match.group(1).lower(), match.group(2).strip()
    why = {
        "search": f"I need the id of the row with {args}, so I search for it.",
        "lookup": f"I read every field of row {args} to find what the question asks.",
        "calculate": f"I compute {args} with the calculator rather than by hand.",
        "answer": f"The observations so far give the answer, {args}, so I answer.",
        "view": "I look at the whole table first.",
        "update": f"The goal asks for this change, and it is not made yet: update({args}).",
        "delete": f"The goal asks to remove row {args}, so I delete it.",
        "add_row": "The goal asks for this new row, so I add it.",
    }
    return why.get(tool, f"I call {tool} because the task needs it.")


# ------------------------------------------------------------------------------- walkthrough envs

_VERBS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^(?:take|pick up|get) (.+?)(?: from (.+))?$"), "I need the {0} for the task, so I take it."),
    (re.compile(r"^open (.+)$"), "The {0} is closed, and I need to get through it or at what is inside, so I open it."),
    (re.compile(r"^close (.+)$"), "I am done with the {0}, so I close it."),
    (re.compile(r"^(?:go to|move to|teleport to) (.+)$"), "What I need next is in the {0}, so I go there."),
    (re.compile(r"^go (.+)$"), "The next place I need is to the {0}, so I go {0}."),
    (re.compile(r"^(?:put|place|insert|move) (.+?) (?:in|on|into|onto|to) (.+)$"),
     "The {0} belongs in the {1} for this task, so I put it there."),
    (re.compile(r"^read (.+)$"), "The {0} should tell me what to do, so I read it."),
    (re.compile(r"^(cook|slice|chop|dice|heat|cool|clean) (.+?)(?: (?:in|with) .+)?$"),
     "The task needs the {1} {0}ed, so I {0} it."),
    (re.compile(r"^prepare meal$"), "Every ingredient is ready, so I prepare the meal."),
    (re.compile(r"^eat (.+)$"), "The {0} is ready, and eating it completes the task."),
    (re.compile(r"^focus on (.+)$"), "The task says to focus on the {0}, and it is here, so I focus on it."),
    (re.compile(r"^wait\d*$"), "The process needs time, so I wait."),
    (re.compile(r"^(activate|deactivate|turn on|turn off) (.+)$"), "The task needs the {1} switched, so I {0} it."),
    (re.compile(r"^(?:examine|look at|inspect) (.+)$"), "I look at the {0} to find what I need."),
    (re.compile(r"^(?:look|look around)$"), "I look around to see what is here."),
    (re.compile(r"^(?:unlock) (.+?) with (.+)$"), "The {0} is locked and the {1} opens it, so I unlock it."),
    (re.compile(r"^(?:pour|mix|use|connect|drop|toggle) (.+)$"), "The task needs this now: {0}."),
]


def _walkthrough(env, action: str) -> str:
    text = " ".join(action.strip().lower().split())
    for pattern, template in _VERBS:
        found = pattern.match(text)
        if found:
            return template.format(*[g or "" for g in found.groups()])
    return f"The next step toward the task is to {action}."


_EXPLAINERS = {"maze": _maze, "shop": _shop, "pddl": _pddl, "babyai": _babyai, "tool": _tools,
               "walkthrough": _walkthrough}
