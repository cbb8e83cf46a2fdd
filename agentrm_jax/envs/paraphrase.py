"""Paraphrased held-in envs for the robustness study: the same tasks, other action wording.

AgentRM's robustness study perturbs the action wording the agent is told
(ALFWorld: "clean X with Y" -> "clean X using Y") and checks that RM-guided
search keeps its gains. `ParaphrasedEnv` wraps any env of a family in `WORDINGS`
and presents it in the family's paraphrased wording:

- `to_agent(text)` rewrites every original command phrase in a text (first
  observation, observations, the "Valid actions" lists of invalid-action
  answers, available actions, expert actions, the prompt's worked example);
- `to_env(action)` turns one paraphrased command back into the env's own
  (unknown wording passes through unchanged).

Both are pure functions of a `Paraphrase` (one frozen table per family). The
first observation and `instruction` end with a note listing the paraphrased
commands, as the paper's prompt lists the perturbed action templates.

The old wording is refused: an action `a` is sent to the env only when
`to_agent(to_env(a))` gives `a` back (case and spacing aside), so "take apple"
in `twx_paraphrased` (where the command is "pick up apple") is answered exactly
as the env answers any invalid action ("Nothing happens: 'take apple' is not a
valid action here. Valid actions: pick up apple, ...") and counts as a turn.
Accepting both wordings would hide the perturbation from a policy that ignores
its instructions. Wording the table does not touch ("look around", "open
fridge", "go to kitchen", twx's "north") passes through as before.

Registered: `twx_paraphrased`, `shop_paraphrased`, `sciworld_paraphrased`, held
in, with the original's tasks (seeds go to the wrapped env unchanged, so task
`seed` of `split` is the original's), splits, turn limits and constructor
kwargs. The expert (`ScriptedPolicy.expert`, what `policy: expert` builds) plays
the wrapped env's expert in the paraphrased wording; shop keeps its replanning
`expert_actions_from_here`. The prompt's worked example for a `*_paraphrased`
name is the family's, rewritten (`agents.prompts` asks `paraphrased_example`).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentrm_jax.envs import sciworld, shop, twx  # noqa: F401  (registers the families wrapped here)
from agentrm_jax.envs.base import REGISTRY, EnvSpec, TextEnv, register

__all__ = ["PARAPHRASED", "SUFFIX", "WORDINGS", "ParaphrasedEnv", "Paraphrase", "Wording", "paraphrased_example",
           "to_agent", "to_env"]

SUFFIX = "_paraphrased"
_SLOT = re.compile(r"\{([A-Z]+)\}")


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


@dataclass(frozen=True)
class Wording:
    """One wording change: `original` (the env's command) -> `paraphrase` (the agent's).

    Templates are literal text with UPPERCASE slots ("cook {OBJ} in {PLACE}" -> "cook {OBJ} using {PLACE}"),
    the same slots on both sides. command=False marks page text that is no command (shop's "[Buy Now]"
    button): `to_agent` rewrites it, `to_env` never produces it.
    """

    original: str
    paraphrase: str
    command: bool = True

    def __post_init__(self):
        if sorted(_SLOT.findall(self.original)) != sorted(_SLOT.findall(self.paraphrase)):
            raise ValueError(f"wording {self.original!r} -> {self.paraphrase!r}: the slots differ")

    def shown(self) -> str:
        """The paraphrase as the agent's note lists it ("cook OBJ using PLACE")."""
        return _SLOT.sub(lambda m: m.group(1), self.paraphrase)


def _regex(template: str, *, tag: str, text: bool) -> str:
    """A regex for `template`. text=False: one whole command (slots any text); text=True: an occurrence inside
    a text (slots stop at line breaks, brackets, list separators and sentence ends, so "You move to the hall.
    You move the egg to the box." rewrites the second sentence only; a slot before "]" may hold all but "]").
    Slots match as little as they can: the first " to " of "move A to B to C" separates, on both sides."""
    parts = _SLOT.split(template)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(r"\s+".join(re.escape(w) for w in part.split(" ")) if part.strip() else re.escape(part))
            continue
        nxt = parts[i + 1] if i + 1 < len(parts) else ""
        char = r"[^\n\]]" if nxt.startswith("]") else r"[^\n,;.!?\[\]]"
        out.append(f"(?P<{tag}{part}>{char if text else '.'}+?)")
    body = "".join(out)
    if text:
        if template[:1].isalnum():
            body = r"(?<![\w-])" + body
        if template[-1:].isalnum():
            body += r"(?![\w-])"
    return body


def _fill(template: str, match: re.Match, tag: str) -> str:
    return _SLOT.sub(lambda m: match.group(f"{tag}{m.group(1)}"), template)


@dataclass(frozen=True)
class Paraphrase:
    """A family's wording table and the two pure rewrites (see the module docstring)."""

    family: str
    wordings: tuple[Wording, ...]

    @functools.cached_property
    def _text(self) -> re.Pattern:
        alternatives = [f"(?P<w{i}>{_regex(w.original, tag=f'w{i}_', text=True)})"
                        for i, w in enumerate(self.wordings)]
        return re.compile("|".join(alternatives), re.IGNORECASE)

    @functools.cached_property
    def _commands(self) -> tuple[tuple[re.Pattern, Wording, str], ...]:
        return tuple((re.compile(_regex(w.paraphrase, tag=f"w{i}_", text=False), re.IGNORECASE | re.DOTALL), w,
                      f"w{i}_") for i, w in enumerate(self.wordings) if w.command)

    def to_agent(self, text: str) -> str:
        """`text` with every original wording replaced by its paraphrase (one left-to-right pass; a replaced
        phrase keeps a capital first letter)."""

        def swap(match: re.Match) -> str:
            i = next(int(k[1:]) for k, v in match.groupdict().items() if v is not None and k[1:].isdigit())
            new = _fill(self.wordings[i].paraphrase, match, f"w{i}_")
            return new[:1].upper() + new[1:] if match.group(0)[:1].isupper() else new

        return self._text.sub(swap, str(text))

    def to_env(self, action: str) -> str:
        """The env's command for one paraphrased command (the first wording whose paraphrase is the whole
        action, spacing aside); any other action unchanged."""
        stripped = str(action).strip()
        for pattern, wording, tag in self._commands:
            match = pattern.fullmatch(stripped)
            if match:
                return _fill(wording.original, match, tag)
        return str(action)

    def accepts(self, action: str) -> bool:
        """Whether `action` is in the agent's wording: `to_agent(to_env(action))` gives it back. False for the
        old wording ("take apple" where "pick up apple" is the command) and for mixes ("select[Buy Now]")."""
        return _same(self.to_agent(self.to_env(action)), str(action))

    def note(self) -> str:
        """The line the first observation ends with: the commands this table paraphrases."""
        shown = "; ".join(w.shown() for w in self.wordings if w.command)
        return f"Commands in this environment are worded: {shown}."


# The tables. Each paraphrase keeps the meaning; none of the new words is an original command's.
WORDINGS: dict[str, Paraphrase] = {
    "twx": Paraphrase("twx", (
        Wording("take {OBJ}", "pick up {OBJ}"),
        Wording("put {OBJ} in {PLACE}", "place {OBJ} in {PLACE}"),
        Wording("put {OBJ} on {PLACE}", "place {OBJ} on {PLACE}"),
        Wording("cook {OBJ} in {PLACE}", "cook {OBJ} using {PLACE}"),
    )),
    "shop": Paraphrase("shop", (
        Wording("search[{QUERY}]", "find[{QUERY}]"),
        Wording("click[Buy Now]", "select[Purchase]"),  # before click[{BUTTON}]: the first wording that fits wins
        Wording("click[{BUTTON}]", "select[{BUTTON}]"),
        Wording("[Buy Now]", "[Purchase]", command=False),  # the item page's button
        Wording("You have clicked", "You have selected", command=False),
    )),
    "sciworld": Paraphrase("sciworld", (
        Wording("pick up {OBJ}", "take {OBJ}"),
        Wording("focus on {OBJ}", "concentrate on {OBJ}"),
        Wording("move {OBJ} to {PLACE}", "transfer {OBJ} to {PLACE}"),
        Wording("look around", "survey the room"),
    )),
}
PARAPHRASED = {f"{family}{SUFFIX}": family for family in WORDINGS}


def to_agent(family: str, text: str) -> str:
    """`WORDINGS[family].to_agent(text)`: original wording -> paraphrased, anywhere in `text`."""
    return WORDINGS[family].to_agent(text)


def to_env(family: str, action: str) -> str:
    """`WORDINGS[family].to_env(action)`: one paraphrased command -> the env's (others unchanged)."""
    return WORDINGS[family].to_env(action)


def paraphrased_example(name: str, example: tuple[str, list[tuple[str, str, str]]]
                        ) -> tuple[str, list[tuple[str, str, str]]]:
    """A worked example (first observation, [(thought, action, observation)]) of the family of the
    paraphrased env `name`, in its wording, with the note after the first observation as in the env."""
    table = WORDINGS[PARAPHRASED[name]]
    first, steps = example
    return (f"{table.to_agent(first)}\n\n{table.note()}",
            [(table.to_agent(t), table.to_agent(a), table.to_agent(o)) for t, a, o in steps])


class ParaphrasedEnv:
    """A `TextEnv` that shows `inner` (an env of a `WORDINGS` family) in the family's paraphrased wording.

    Everything the agent reads goes through `to_agent`, every action through `to_env` (refused old
    wording is sent as "", which every wrapped env answers as an invalid action; the answer quotes the
    agent's own text). Turns, done, success, progress and snapshots are the inner env's.
    """

    def __init__(self, inner: TextEnv, family: str, *, name: str | None = None):
        if family not in WORDINGS:
            raise ValueError(f"paraphrase: no wording table for {family!r}; known: {', '.join(sorted(WORDINGS))}")
        self.inner, self.family, self.table = inner, family, WORDINGS[family]
        self.name = name or f"{family}{SUFFIX}"
        self._first = ""

    @classmethod
    def wrap(cls, inner: TextEnv, family: str, *, name: str | None = None) -> ParaphrasedEnv:
        """The wrapper for `inner`: with `expert_actions_from_here` exactly when `inner` has it (the
        replanning expert looks for that method)."""
        kind = _Replanning if hasattr(inner, "expert_actions_from_here") else cls
        return kind(inner, family, name=name)

    # -- what the agent reads -----------------------------------------------------------------------
    @property
    def split(self) -> str:
        return self.inner.split

    @property
    def max_turns(self) -> int:
        return self.inner.max_turns

    @property
    def seed(self) -> int | None:
        return getattr(self.inner, "seed", None)

    @property
    def instruction(self) -> str:
        return f"{self.table.to_agent(self.inner.instruction)} {self.table.note()}"

    @property
    def turns(self) -> int:
        return self.inner.turns

    @property
    def done(self) -> bool:
        return self.inner.done

    @property
    def success(self) -> bool:
        return self.inner.success

    @property
    def progress(self) -> float:
        return self.inner.progress

    def reset(self, seed: int) -> str:
        """Task `seed` of the wrapped env (the original's task); its first observation, rewritten, and the note."""
        return f"{self.table.to_agent(self.inner.reset(seed))}\n\n{self.table.note()}"

    def step(self, action: str) -> tuple[str, bool]:
        """One action in the agent's wording; the old wording is answered as an invalid action."""
        action = action if isinstance(action, str) else str(action)
        sent = self.table.to_env(action).strip() if self.table.accepts(action) else ""
        observation, done = self.inner.step(sent)
        quoted = repr(sent) in observation
        observation = self.table.to_agent(observation)
        if quoted and sent != action.strip():  # invalid-action answers quote what they got: show the agent's text
            observation = observation.replace(self.table.to_agent(repr(sent)), repr(action.strip()), 1)
        return observation, done

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def restore(self, snapshot: Any) -> None:
        self.inner.restore(snapshot)

    def available_actions(self) -> list[str] | None:
        actions = self.inner.available_actions()
        return None if actions is None else [self.table.to_agent(a) for a in actions]

    def expert_actions(self) -> list[str]:
        """The wrapped env's expert plan from the task's start, in the agent's wording."""
        return [self.table.to_agent(a) for a in self.inner.expert_actions()]

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


class _Replanning(ParaphrasedEnv):
    def expert_actions_from_here(self) -> list[str]:
        """The wrapped env's plan from the current state, in the agent's wording."""
        return [self.table.to_agent(a) for a in self.inner.expert_actions_from_here()]


def _factory(family: str) -> Callable[..., ParaphrasedEnv]:
    turns = inspect.signature(REGISTRY[family].factory).parameters["max_turns"].default  # the original's limit

    def make_paraphrased(*, split: str = "train", max_turns: int = turns, **kwargs) -> ParaphrasedEnv:
        return ParaphrasedEnv.wrap(REGISTRY[family].factory(split=split, max_turns=max_turns, **kwargs), family)

    make_paraphrased.__name__ = f"make_{family}{SUFFIX}"
    return make_paraphrased


def _register_all() -> None:
    for name, family in PARAPHRASED.items():
        base = REGISTRY[family]
        changes = "; ".join(f"{w.original} -> {w.paraphrase}" for w in WORDINGS[family].wordings)
        register(EnvSpec(
            name=name, factory=_factory(family), env_type=base.env_type, role="held_in",
            stands_for=f"AgentRM's robustness study (paraphrased action wording, as its ALFWorld "
                       f"perturbations): {base.stands_for}",
            source=base.source,
            description=f"`{family}` with its tasks, splits and turn limits, in other action wording ({changes}); "
                        "the old wording is answered as an invalid action.",
        ))


_register_all()
