"""ReAct-style prompts for text-environment agents, and a forgiving parser for the model's reply.

The agent answers every turn with

    Thought: <one or two sentences of reasoning>
    Action: <exactly one action>

`build_messages` turns a (partial) trajectory into chat messages for a chat
template: a system turn with the answer format, an optional worked example for
the environment as earlier chat turns, a user turn with the task's first
observation, then for each step an assistant turn (`format_step(thought,
action)`) followed by the observation as a user turn.

`parse_step` reads a model reply back into (thought, action) without ever
raising: it tolerates a missing "Thought:", "action :"/"ACTION:"/"**Action:**"
spellings, markdown fences and backticks, several lines (the first action line
wins), text after the action, and empty output (action "", which an
environment answers with an informative "Nothing happens").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from agentrm_jax.records import Trajectory, format_step

__all__ = [
    "EXAMPLE_END", "OMITTED_NOTE", "ONE_SHOT", "SYSTEM_PROMPT", "STOP_STRINGS", "action_line_complete", "build_messages",
    "count_steps", "cut_after_action", "example_messages", "one_shot_example", "parse_step", "shorten_context",
    "omitted_steps", "shortened_contexts", "stable_drop_counts", "task_actions", "task_message",
]

SYSTEM_PROMPT = (
    "You are an agent acting in a text environment to complete a task. Each turn you read what the "
    "environment tells you and answer in exactly this format, with nothing else:\n"
    "Thought: <brief reasoning about the current situation and what to do next>\n"
    "Action: <exactly one action, written as the environment expects it>\n"
    "Write one action per turn. The environment will reply with an observation, and then it is your "
    "turn again. Do not write the observation yourself."
)

# Appended to the task turn when `build_messages(max_steps=...)` drops the oldest steps.
OMITTED_NOTE = "\n({count} earlier turns are omitted.)"
_OMITTED = re.compile(r"\((\d+) earlier turns are omitted\.\)\s*$")

# Strings that mean the model started writing the environment's part or a second step.
STOP_STRINGS: tuple[str, ...] = ("\nObservation", "\nThought")

# One worked example per environment family: (first observation, [(thought, action, observation), ...]).
# They only show the answer format and the flavour of the actions; the task text always comes from the env.
ONE_SHOT: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "maze": (
        "You are in a 3x3 grid maze. Coordinates are (x, y): x grows to the east, y grows to the south. "
        "The goal is at (2, 1). You start at (0, 0). Actions: move north, move south, move east, move west.\n"
        "You are at (0, 0). North: wall. South: open. East: wall. West: wall.",
        [("East is a wall, and the only open way is south, which also brings me to row 1 of the goal.",
          "move south",
          "You move south. You are at (0, 1). North: open. South: wall. East: open. West: wall."),
         ("The goal is at (2, 1), to the east on this row, and east is open.", "move east",
          "You move east. You are at (1, 1). North: wall. South: open. East: the goal. West: open."),
         ("East is the goal.", "move east", "You move east and reach the goal at (2, 1)! Task completed.")],
    ),
    "babyai": (
        "Your mission: pick up the red ball. You see a wall 3 steps forward, a red ball 1 step left and "
        "1 step forward. Actions: turn left, turn right, go forward, pick up, drop, toggle.",
        [("The ball is ahead and to my left; I first step forward.", "go forward",
          "You see a red ball 1 step left."),
         ("The ball is now directly to my left, so I turn to face it.", "turn left",
          "You see a red ball right in front of you."),
         ("The ball is in front of me.", "pick up", "You picked up the red ball. Mission complete.")],
    ),
    "pddl": (
        "Goal: b1 is on b2. Blocks b1 and b2 are both on the table and clear; your hand is empty. "
        "Actions: pick up X, put down X, stack X on Y, unstack X from Y.",
        [("To put b1 on b2 I must hold b1 first.", "pick up b1", "You pick up b1."),
         ("Now I stack it on b2, which is clear.", "stack b1 on b2",
          "You stack b1 on b2. The goal is satisfied.")],
    ),
    # The tool envs' own tools and answer formats, on a table no task uses (recipes, meetings).
    "tool_query": (
        "Answer a question using tools over a local table of 6 recipes (ids like R01; fields: name (text), "
        "cuisine (text), minutes (number), servings (number)).\nAvailable tools:\n"
        "  search(field=value, ...): ids and names of the rows whose fields equal all the given values\n"
        "  lookup(id): every field of the row with that id\n"
        "  calculate(expression): evaluate arithmetic such as calculate(\"120 - 45\")\n"
        "  answer(text): give your final answer (ends the task)\n"
        "Call exactly one tool per turn, written as tool_name(arg1, key=value).\n"
        "Question: How many minutes do the Thai recipes take in total?",
        [("I first find the Thai recipes.", 'search(cuisine="Thai")',
          "Found 2 matching rows: R02 (Green Curry), R05 (Pad See Ew)."),
         ("I read the first one's minutes.", 'lookup("R02")',
          "R02: name: Green Curry; cuisine: Thai; minutes: 40; servings: 4."),
         ("Now the second one.", 'lookup("R05")', "R05: name: Pad See Ew; cuisine: Thai; minutes: 25; servings: 2."),
         ("I add the two times.", 'calculate("40 + 25")', "Result: 65"),
         ("Together they take 65 minutes.", 'answer("65")',
          "You answered '65'. The answer is correct. The task is over.")],
    ),
    "tool_operation": (
        "Edit a local meeting table of 3 rows (ids like M01; fields: room (text), day (text), host (text)) with "
        "tools.\nAvailable tools:\n"
        "  view(): show the whole table\n"
        "  add_row(field=value, ...): add a row (every field is required; the id is assigned)\n"
        "  update(id, field, value): set one field of a row\n"
        "  delete(id): remove a row\n"
        "Call exactly one tool per turn, written as tool_name(arg1, key=value).\n"
        "Goal: set the day of M02 (Blue room) to 'Friday'; delete M03 (Red room). Leave every other row unchanged.",
        [("I look at the table first.", "view()",
          "The meeting table has 3 rows:\nid | room | day | host\nM01 | Green room | Monday | Lena\n"
          "M02 | Blue room | Tuesday | Omar\nM03 | Red room | Thursday | Lena"),
         ("M02 must move to Friday.", 'update("M02", "day", "Friday")',
          "Updated M02: day changed from Tuesday to Friday."),
         ("Last, M03 goes.", 'delete("M03")', "Deleted row M03.")],
    ),
    "textworld": (
        "You are in a kitchen. There is a closed fridge and a table with a knife on it. "
        "Your task: put the apple on the table.",
        [("The apple is probably in the closed fridge.", "open fridge",
          "You open the fridge. Inside it you see an apple."),
         ("I take the apple out.", "take apple from fridge", "You take the apple from the fridge."),
         ("Now I put it on the table.", "put apple on table", "You put the apple on the table. You win!")],
    ),
    "sciworld": (
        "Task: boil water. You are in the kitchen. You see a stove (off), a pot, and a sink.",
        [("I need water in a container; the pot can hold it, so I move it to the sink.", "move pot to sink",
          "You move the pot to the sink."),
         ("Now I fill it.", "activate sink", "The sink is now on. The pot fills with water."),
         ("The pot goes on the stove, which I then turn on.", "move pot to stove",
          "You move the pot to the stove."),
         ("Heat the water.", "activate stove", "The stove is now on. After a while the water boils.")],
    ),
    "shop": (
        "WebShop\nInstruction: I need a waterproof hiking jacket in size large, and price lower than 80.00 "
        "dollars\nActions: search[your query] on this page; then click[X] for any button [X] a page shows.\n[Search]",
        [("I search with the words of the request.", "search[waterproof hiking jacket]",
          "[Back to Search]\nPage 1 (Total results: 20)\n[B07TRAIL01]\nNorthpeak Waterproof Hiking Jacket\n$64.00\n"
          "[B07TRAIL02]\nNorthpeak Insulated Parka\n$120.00"),
         ("The first item is a waterproof hiking jacket under $80, so I open it.", "click[B07TRAIL01]",
          "[Back to Search]\n[< Prev]\nsize: [small] [medium] [large]\nNorthpeak Waterproof Hiking Jacket\n"
          "Price: $64.00\n[Description]\n[Features]\n[Buy Now]"),
         ("The request asks for size large.", "click[large]", "You have clicked large."),
         ("Type, size and price all match, so I buy it.", "click[Buy Now]",
          "Thank you for shopping with us! Your purchase scored 1.00.")],
    ),
    "twx": (
        "Your task is to pick up objects, then place them in their usual locations in the environment.\n\n"
        "You are in the bathroom. You see a towel rack, that has nothing on it, and a cabinet that is closed. "
        "On the floor you see a wet towel.",
        [("A towel belongs on the towel rack; first I pick it up.", "take wet towel", "You take the wet towel."),
         ("Now I put it where it belongs.", "put wet towel on towel rack",
          "You put the wet towel on the towel rack.\nThe task is completed.")],
    ),
}
# Env names whose worked example is another family's (members of a family use the family's: pddl_gripper -> pddl).
# `tools` mixes query and operation tasks by seed; its example is the query one.
_EXAMPLE_ALIASES = {"tools": "tool_query", "webshop": "shop", "alfworld": "twx"}

_GENERIC_ONE_SHOT = (
    "You are in a small room with a locked door. There is a key on the floor. Your task: leave the room.",
    [("The door is locked, and the key on the floor probably opens it.", "take key", "You take the key."),
     ("With the key I can unlock the door.", "unlock door with key", "The door is now unlocked."),
     ("Now I can go through the door.", "open door", "You open the door and leave the room. Task completed.")],
)


def _example(env_name: str | None) -> tuple[str, list[tuple[str, str, str]]]:
    """The worked example of an env: its own, its alias's, its family's (the name before "_"), else generic."""
    key = (env_name or "").split("/")[0].lower()
    if key.endswith("_paraphrased"):  # the robustness study's envs: their family's example in their wording
        from agentrm_jax.envs.paraphrase import PARAPHRASED, paraphrased_example

        if key in PARAPHRASED:
            return paraphrased_example(key, _example(PARAPHRASED[key]))
    key = _EXAMPLE_ALIASES.get(key, key)
    if key not in ONE_SHOT:
        key = key.split("_")[0]
    return ONE_SHOT.get(key, _GENERIC_ONE_SHOT)


def one_shot_example(env_name: str | None) -> str:
    """A worked example in the answer format for `env_name` (a generic one for unknown names)."""
    first, steps = _example(env_name)
    lines = ["Here is an example of a complete episode in a similar task:", f"Observation: {first}"]
    for thought, action, observation in steps:
        lines.append(format_step(thought, action))
        lines.append(f"Observation: {observation}")
    return "\n".join(lines)


def example_messages(env_name: str | None) -> list[dict[str, str]]:
    """The worked example for `env_name` as chat turns (user observation, assistant step, ...).

    Shown as real turns rather than quoted text: small models copy the format of
    earlier assistant turns far more reliably than a format described in prose.
    """
    first, steps = _example(env_name)
    messages = [{"role": "user", "content": f"(Example task)\n{first}"}]
    for thought, action, observation in steps:
        messages.append({"role": "assistant", "content": format_step(thought, action)})
        messages.append({"role": "user", "content": observation})
    return messages


EXAMPLE_END = "The example is over."


def task_message(instruction: str, *, after_example: bool = False) -> str:
    """The user text that starts the real task (after the example's last observation, if any)."""
    head = f"{EXAMPLE_END} Now a new task, unrelated to the example; follow only this one.\n" if after_example else ""
    return f"{head}{instruction.strip()}\nAnswer with one Thought line and one Action line."


def count_steps(messages: list[dict[str, str]]) -> int:
    """How many steps of the real task a context holds: its assistant turns after the worked example."""
    start = 0
    for i, m in enumerate(messages):
        if m.get("role") == "user" and EXAMPLE_END in str(m.get("content", "")):
            start = i
    return sum(1 for m in messages[start:] if m.get("role") == "assistant")


def omitted_steps(messages: list[dict[str, str]]) -> int:
    """How many of the task's earliest steps `build_messages(max_steps=...)` left out of a context."""
    if not messages:
        return 0
    found = _OMITTED.search(str(messages[_task_index(messages)].get("content", "")))
    return int(found.group(1)) if found else 0


def task_actions(messages: list[dict[str, str]]) -> list[str]:
    """The actions a context's assistant turns took on the real task (the worked example excluded)."""
    start = _task_index(messages)
    return [parse_step(str(m.get("content", "")))[1] for m in messages[start:] if m.get("role") == "assistant"]


def _task_index(messages: list[dict[str, str]]) -> int:
    """Index of the user turn that starts the real task."""
    marked = [i for i, m in enumerate(messages) if m.get("role") == "user" and EXAMPLE_END in str(m.get("content"))]
    if marked:
        return marked[-1]
    return next((i for i, m in enumerate(messages) if m.get("role") == "user"), 0)


def shorten_context(messages: list[dict[str, str]], steps: int = 1) -> list[dict[str, str]] | None:
    """A shorter copy of a context for a model with too few positions, or None when nothing can go.

    Drops the `steps` oldest steps of the task (each its assistant turn and
    observation; at least one, at most all but the latest one); when only the
    latest step is left, the worked example instead. The task's first
    observation and the latest step are always kept (for a context that ends
    with an assistant turn, that turn alone).
    """
    messages = [dict(m) for m in messages]
    t = _task_index(messages)
    droppable = (len(messages) - (t + 1) - 1) // 2
    if droppable >= 1:
        del messages[t + 1:t + 1 + 2 * min(max(1, steps), droppable)]
        return messages
    content = str(messages[t].get("content", ""))
    if EXAMPLE_END in content and any(m.get("role") != "system" for m in messages[:t]):
        head = [m for m in messages[:t] if m.get("role") == "system"][:1]
        task = {"role": "user", "content": content[content.index(EXAMPLE_END):]}
        return head + [task] + messages[t + 1:]
    return None


def stable_drop_counts(step_tokens: Sequence[int], quantum: int) -> list[int]:
    """How many of the oldest steps to drop from a context that is too long, in the order to try them.

    step_tokens: [steps] the size of each step of the task (assistant turn and
    observation), oldest first, in tokens; quantum: tokens, >= 1.

    The counts are those at which the oldest steps' sizes first add up to
    another multiple of quantum (one count when a big step passes several),
    then the count that keeps only the latest step. Earlier steps' sizes do
    not change as an episode grows, so a longer history's counts begin with
    a shorter one's but its last: turn after turn the same count is chosen and
    each context extends the previous one (a prefix-cache hit) until about
    `quantum` more tokens have arrived, instead of a different cut, and a full
    prefill, on every turn. quantum=1 drops one step at a time.
    """
    if quantum < 1:
        raise ValueError(f"quantum must be >= 1 token, got {quantum}")
    droppable = len(step_tokens) - 1
    counts: list[int] = []
    total, crossing = 0, quantum
    for count, size in enumerate(step_tokens[:droppable], start=1):
        total += size
        if total >= crossing:
            counts.append(count)
            crossing = (total // quantum + 1) * quantum
    if droppable >= 1 and counts[-1:] != [droppable]:
        counts.append(droppable)
    return counts


def shortened_contexts(messages: list[dict[str, str]], count_tokens: Callable[[str], int],
                       quantum: int) -> Iterator[list[dict[str, str]]]:
    """Ever shorter copies of a context too long for a model, to try in order until one fits.

    First the oldest steps go, in `stable_drop_counts` (sizes measured with
    `count_tokens(text) -> tokens`); then, with only the latest step left,
    the worked example (`shorten_context`). The input is not modified.
    """
    t = _task_index(messages)
    after = messages[t + 1:]
    # the steps `shorten_context` can drop, then its "latest" (an observation's step, or a lone last turn)
    droppable = (len(after) - 1) // 2
    sizes = [count_tokens(str(after[i].get("content", ""))) + count_tokens(str(after[i + 1].get("content", "")))
             for i in range(0, 2 * droppable, 2)] + ([0] if after else [])
    latest_only = messages
    for count in stable_drop_counts(sizes, quantum):
        latest_only = shorten_context(messages, steps=count)
        yield latest_only
    without_example = shorten_context(latest_only)
    if without_example is not None:
        yield without_example


def build_messages(trajectory: Trajectory, *, env_name: str | None = None, one_shot: bool = True,
                   system: bool = True, max_steps: int | None = None) -> list[dict[str, str]]:
    """Chat messages asking for the next step of `trajectory`.

    Layout: a system turn with the answer format; with `one_shot`, a worked
    example for the env as earlier turns (`example_messages`; `env_name`
    defaults to `trajectory.task`, unknown names get a generic example); a user
    turn with the task's first observation; then every step as an assistant
    turn `format_step(thought, action)` and its observation as a user turn (an
    empty observation becomes "(no output)" so that turns keep alternating).
    `system=False` folds the format instructions into the first user turn (for
    chat templates without a system role); `max_steps` keeps only the most
    recent steps.
    """
    name = env_name if env_name is not None else trajectory.task
    messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM_PROMPT}]
    if one_shot:
        messages += example_messages(name)
        messages[-1] = {"role": "user", "content": messages[-1]["content"] + "\n\n"
                        + task_message(trajectory.instruction, after_example=True)}
    else:
        messages.append({"role": "user", "content": task_message(trajectory.instruction)})
    task_turn = len(messages) - 1
    steps = trajectory.steps
    if max_steps is not None:
        steps = steps[max(0, len(steps) - max_steps):] if max_steps > 0 else ()
        if len(steps) < len(trajectory.steps):
            messages[task_turn]["content"] += OMITTED_NOTE.format(count=len(trajectory.steps) - len(steps))
    for step in steps:
        messages.append({"role": "assistant", "content": format_step(step.thought, step.action)})
        messages.append({"role": "user", "content": step.observation or "(no output)"})
    if not system:
        messages.pop(0)
        messages[0] = {"role": "user", "content": SYSTEM_PROMPT + "\n\n" + messages[0]["content"]}
    return messages


# ------------------------------------------------------------------------------------------ parsing

_SPECIAL = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|\[/?INST\]")
# a line that starts with an "Action" label: "Action:", "action :", "**Action:**", "- Action 1:", "ACTION："
_ACTION_LINE = re.compile(r"^[\s>*_#`\-]*action(?:\s*\d+)?[\s*_`]*[:：][\s*_]*(?P<rest>.*)$", re.IGNORECASE)
_THOUGHT_LABEL = re.compile(r"^[\s>*_#`\-]*(?:thought|thinking|reasoning)(?:\s*\d+)?[\s*_`]*[:：][\s*_]*",
                            re.IGNORECASE)
_OBS_LABEL = re.compile(r"^[\s>*_#`\-]*observation(?:\s*\d+)?[\s*_`]*[:：]", re.IGNORECASE)
_INLINE_STOP = re.compile(r"\s*(?:\*\*)?(?:observation|thought)(?:\s*\d+)?(?:\*\*)?\s*[:：].*$", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```")
# "Thought: ... Action: move east" on one line: the action label is moved to a line of its own
# (capitalized only: "the next action: ..." inside a thought stays prose)
_INLINE_ACTION = re.compile(r"(?<=\S)[ \t]+(?=[*_`]*(?:Action|ACTION)(?:\s*\d+)?[*_`]*\s*[:：])")
_QUOTES = {'"': '"', "'": "'", "`": "`", "“": "”", "‘": "’", "[": "]", "<": ">"}


def _clean_action(action: str) -> str:
    action = _INLINE_STOP.sub("", action)  # "move east Observation: ..." on one line
    action = action.strip().strip("*_").strip()
    for _ in range(3):  # `...`, "...", **`...`**
        if len(action) >= 2 and action[0] in _QUOTES and action[-1] == _QUOTES[action[0]]:
            action = action[1:-1].strip()
        action = action.strip("`*_").strip()
    if action.endswith(".") and not action.endswith("..") and not action[-2:-1].isdigit():
        action = action[:-1].rstrip()
    return action


def _clean_thought(lines: list[str]) -> str:
    kept = []
    for line in lines:
        if _FENCE.match(line) or _OBS_LABEL.match(line):
            continue
        line = _THOUGHT_LABEL.sub("", line, count=1).strip().strip("*_").strip()
        if line:
            kept.append(line)
    return " ".join(kept)


def _normalize(text: str) -> str:
    text = _SPECIAL.sub("", str(text)).replace("\r\n", "\n").replace("\r", "\n")
    lines = []
    for line in text.split("\n"):
        m = _INLINE_ACTION.search(line)
        if m and any(ch.isalnum() for ch in line[:m.start()]):  # not just "- " or "**" before the label
            line = line[:m.start()] + "\n" + line[m.end():]
        lines.append(line)
    return "\n".join(lines)


def parse_step(text: str | None) -> tuple[str, str]:
    """(thought, action) of one model reply; never raises.

    The first line labelled "Action" gives the action (if the label's line is
    empty, the next non-empty line); everything before it, minus a "Thought:"
    label, is the thought. Without any "Action" label, a single short unlabelled
    line is taken as the action and anything else as a thought with action "".
    """
    if not text:
        return "", ""
    lines = _normalize(text).split("\n")
    for i, line in enumerate(lines):
        m = _ACTION_LINE.match(line)
        if not m:
            continue
        action = _clean_action(m.group("rest"))
        if not action:  # "Action:\n```\nmove east\n```"
            for nxt in lines[i + 1:]:
                if _FENCE.match(nxt) and not _clean_action(nxt.replace("```", "")):
                    continue
                if not nxt.strip():
                    continue
                if _OBS_LABEL.match(nxt) or _THOUGHT_LABEL.match(nxt):
                    break
                action = _clean_action(nxt.replace("```", ""))
                break
        return _clean_thought(lines[:i]), action
    content = [ln for ln in lines if ln.strip() and not _FENCE.match(ln)]
    content = [ln for ln in content if not _OBS_LABEL.match(ln)]
    if len(content) == 1 and not _THOUGHT_LABEL.match(content[0]) and len(content[0].split()) <= 12:
        return "", _clean_action(content[0])
    return _clean_thought(content), ""


def cut_after_action(text: str) -> str:
    """`text` up to the end of its first "Action" line (the whole text when there is none).

    A policy's raw completion may run on after the action (a made-up
    observation, a second step); this keeps exactly one step. An action label
    with nothing after it keeps the next non-empty line too.
    """
    if not text:
        return ""
    lines = _normalize(text).split("\n")
    for i, line in enumerate(lines):
        m = _ACTION_LINE.match(line)
        if not m:
            continue
        end = i
        if not _clean_action(m.group("rest")):
            for j in range(i + 1, len(lines)):
                if lines[j].strip() and not (_FENCE.match(lines[j]) and not _clean_action(lines[j].replace("```", ""))):
                    end = j
                    break
        return "\n".join(lines[:end + 1]).rstrip()
    return text.rstrip()


def action_line_complete(text: str) -> bool:
    """Whether `text` holds a finished action line: an "Action:" line with content, followed by a newline."""
    lines = _normalize(text).split("\n")
    for i, line in enumerate(lines[:-1]):  # the last line may still be growing
        m = _ACTION_LINE.match(line)
        if m and _clean_action(m.group("rest")):
            return True
        if m:  # label alone: the action is the next non-empty finished line
            return any(ln.strip() and not _FENCE.match(ln) for ln in lines[i + 1:-1])
    return False
