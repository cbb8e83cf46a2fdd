"""LLM-as-a-judge reward models: a language model is asked about a trajectory and its answer is the reward.

Three judges, each a `RewardModel` (`score` -> float32 [N], `score_steps` ->
one float32 array per trajectory, the score of each prefix steps[:i+1]):

- `PointwiseJudge(policy)`: any `PolicySampler` (in-process JAX model, an
  OpenAI-compatible server, a scripted fake) is shown the task and the steps
  and asked for a 0-10 progress rating; the reply is parsed with `parse_score`
  and the reward is rating / 10 (mean over the parsed samples when n > 1).
  An unparseable reply is never fatal: its score is NaN, `failures` counts it
  and the raw text stays in `last_outputs` / `last_records`.
- `LogitJudge(model, tokenizer)`: an in-process causal LM is asked a yes/no
  question; one jitted forward pass reads the next-token distribution at the
  start of the answer and the reward is P(Yes) / (P(Yes) + P(No)), each side
  summed over its spellings ("Yes", " Yes", "yes", ...). No sampling, no parsing.
- `ListwiseJudge(policy)`: the candidates for one task are shown together,
  numbered, and the judge names the best (`parse_choice`). Its scores are 1.0
  for the pick and 0.0 for the rest, so they are comparable only among the
  trajectories of one call; when the reply cannot be parsed every candidate
  gets 0.5.

The transcript a judge sees (`render_transcript`) holds the instruction and,
for each step, its thought, action and observation. Outcome fields (success,
progress, value) are never shown.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentrm_jax.records import Trajectory, format_step
from agentrm_jax.models.buckets import next_power_of_two

__all__ = [
    "DEFAULT_LOGIT_QUESTION", "JudgeRecord", "ListwiseJudge", "LogitJudge", "PointwiseJudge",
    "compile_counts", "parse_choice", "parse_score", "render_transcript",
]

Messages = list[dict[str, str]]


# ------------------------------------------------------------------------------------------ transcripts


def _clip(text: str, max_chars: int | None) -> str:
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[:max_chars] + " [...]"


def render_transcript(trajectory: Trajectory, *, max_steps_shown: int | None = None,
                      first_step: int = 0, max_field_chars: int | None = None,
                      show_instruction: bool = True) -> str:
    """The plain-text record of a trajectory that a judge reads.

    Shows the instruction, then each step as "[Step k]" with its thought and
    action (`format_step`) and the observation. `max_steps_shown` keeps only the
    most recent steps (and says how many were left out); `first_step` drops the
    steps before it; `max_field_chars` clips long fields; `show_instruction=False`
    leaves the instruction out (a listwise prompt shows it once for all candidates).
    """
    steps = list(enumerate(trajectory.steps))[first_step:]
    if max_steps_shown is not None and len(steps) > max_steps_shown:
        steps = steps[len(steps) - max_steps_shown:] if max_steps_shown > 0 else []
    lines = (["Task given to the agent:", _clip(trajectory.instruction.strip(), max_field_chars), ""]
             if show_instruction else [])
    if not trajectory.steps:
        lines.append("The agent has not taken any step yet.")
        return "\n".join(lines)
    omitted = steps[0][0] if steps else len(trajectory.steps)
    lines.append("What the agent did:")
    if omitted:
        lines.append(f"({omitted} earlier step{'s' if omitted != 1 else ''} not shown)")
    for k, step in steps:
        lines.append(f"[Step {k + 1}]")
        lines.append(format_step(_clip(step.thought.strip(), max_field_chars), _clip(step.action.strip(),
                                                                                      max_field_chars)))
        if step.observation:
            lines.append(f"Observation: {_clip(step.observation.strip(), max_field_chars)}")
    return "\n".join(lines)


POINTWISE_TEMPLATE = (
    "You are evaluating an AI agent that acts in a text-based environment. Below are the task it was given "
    "and the steps it has taken so far.\n\n"
    "{transcript}\n\n"
    "How close is the agent to completing the task? Rate its progress from 0 to 10: 0 means no useful "
    "progress or moving away from the goal, 10 means the task is complete. Reply with \"Score: N\" on the "
    "first line (N a number from 0 to 10), then one sentence explaining why.")

LISTWISE_TEMPLATE = (
    "You are comparing {count} attempts by an AI agent at the same task in a text-based environment. "
    "Each attempt is a candidate, numbered from 1 to {count}.\n\n"
    "{candidates}\n\n"
    "Which candidate has made the most progress toward completing the task correctly? Reply with "
    "\"Best: K\" on the first line, where K is the candidate number (1 to {count}), then one sentence "
    "explaining why.")

DEFAULT_LOGIT_QUESTION = "Is this trajectory on track to complete the task? Answer Yes or No."

LOGIT_TEMPLATE = (
    "Below is the record of an AI agent working on a task in a text-based environment.\n\n"
    "{transcript}\n\n"
    "{question}")


# ------------------------------------------------------------------------------------------ parsing

_NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10}
_WORD_NUM = "|".join(_NUMBER_WORDS)
# a number: digits anywhere, a number word only where it ends the phrase ("seven.", "seven/10",
# "seven out of ten"), so "give this one a 7" reads 7
_NUM = (r"(-?\d+(?:\.\d+)?(?![\w.]*\d)(?!\w)|(?:" + _WORD_NUM +
        r")\b(?=\s*(?:$|[.,;:!?)\]\n]|/|out\s+of\b|of\s+ten\b)))")
# an optional denominator: "/10", "out of 10", "of ten", "%"
_DENOM = r"(?:\s*(%)|\s*(?:/|out\s+of\b|of\b)\s*(\d+(?:\.\d+)?|ten|five|hundred)\b)?"
_SCORE_KEYWORD = r"\b(?:score[sd]?|scoring|rating|rate[sd]?|grade[sd]?|mark|verdict|progress)\b"
# the keyword, then at most 40 characters of the same line without digits, then the number
_KEYWORD_RE = re.compile(_SCORE_KEYWORD + r"[^\d\n]{0,40}?(?<![\w.])" + _NUM + _DENOM,
                         re.IGNORECASE | re.MULTILINE)
_FRACTION_RE = re.compile(r"(?<![\w.])" + _NUM + r"\s*(?:/|out\s+of)\s*(10|ten|5|five|100|hundred)\b",
                          re.IGNORECASE | re.MULTILINE)
# a bare number, not a count ("10 steps away") nor the numerator of an unknown scale ("3 out of 7")
_STANDALONE_RE = re.compile(
    r"(?<![\w.\-/])(?<!out of )(\d+(?:\.\d+)?)(?![\w/%]|\.\d|\s*(?:/|out\s+of)\s*\d|"
    r"\s*(?:steps?|moves?|actions?|turns?|times|minutes?|seconds?|items?|objects?|rooms?|more|left|away|"
    r"remaining)\b)")
_LIST_MARKER_RE = re.compile(r"^[ \t]*\d+[.)](?=\s|$)", re.MULTILINE)
_PERCENT_RE = re.compile(r"(?<![\w.\-])(\d+(?:\.\d+)?)\s*%")
# "(0-10)", "from 0 to 10", "0 to 10 scale": the scale itself, never the answer
_RANGE_RE = re.compile(r"\b(?:from\s+|between\s+)?(?:0|1|zero|one)\s*(?:-|–|to|and)\s*(?:10|ten)\b(?!\s*/)",
                       re.IGNORECASE)
# "step 3", "turn 2": references to the trajectory, never the answer
_STEP_REF_RE = re.compile(r"\b(step|steps|turn|candidate|attempt|action)\s*#?\s*\d+\b", re.IGNORECASE)
_MARKUP_RE = re.compile(r"[*_`]+|\\boxed\{|\\text\{")


def _number(token: str) -> float:
    token = token.lower()
    return float(_NUMBER_WORDS[token]) if token in _NUMBER_WORDS else float(token)


def _scaled(value: str, percent: str | None, denom: str | None) -> float:
    x = _number(value)
    if percent:
        return x / 10.0
    if denom:
        d = {"ten": 10.0, "five": 5.0, "hundred": 100.0}.get(denom.lower()) or float(denom)
        if d <= 0:
            return math.nan
        x = x * 10.0 / d
    return x


def parse_score(text: str, *, lo: float = 0.0, hi: float = 10.0) -> float | None:
    """The 0-10 rating in a judge's reply, or None when there is none (or it lies outside [lo, hi]).

    In order: the number after a score keyword ("Score: 7", "rating = 9", "I
    would rate it 6.5 out of 10", "**Score:** seven"; the last such mention
    wins and decides alone, so "Score: 12" is None); else a fraction anywhere
    ("7/10", "4 out of 5" -> 8); else a percentage ("80%" -> 8); else the last
    standalone number in [lo, hi] that is not a count ("3 steps left") or a
    marker of an enumerated list ("1. ...\n2. ..."). Denominators of 5 or 100
    are rescaled to 10. Markdown emphasis is ignored; the scale itself ("0-10",
    "from 0 to 10") and step references ("step 3") are never read as the answer.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    clean = _MARKUP_RE.sub("", text)
    clean = _RANGE_RE.sub(" ", clean)
    clean = _STEP_REF_RE.sub(r"\1", clean)

    def ok(x: float) -> float | None:
        return float(x) if math.isfinite(x) and lo <= x <= hi else None

    keyword = list(_KEYWORD_RE.finditer(clean))
    if keyword:
        m = keyword[-1]
        return ok(_scaled(m.group(1), m.group(2), m.group(3)))
    fractions = list(_FRACTION_RE.finditer(clean))
    if fractions:
        m = fractions[-1]
        return ok(_scaled(m.group(1), None, m.group(2)))
    percents = list(_PERCENT_RE.finditer(clean))
    if percents:
        return ok(float(percents[-1].group(1)) / 10.0)
    if len(_LIST_MARKER_RE.findall(clean)) >= 2:  # an enumerated list: its markers are not ratings
        clean = _LIST_MARKER_RE.sub(" ", clean)
    for m in reversed(list(_STANDALONE_RE.finditer(clean))):
        value = ok(float(m.group(1)))
        if value is not None:
            return value
    return None


_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
             "eighth": 8, "ninth": 9, "tenth": 10}
_CHOICE_NUM = (r"(\d+\b|(?:" + "|".join(list(_NUMBER_WORDS) + list(_ORDINALS)) +
               r")\b(?=\s*(?:$|[.,;:!?)\]\n]|candidate|option|attempt|trajectory|one\b)))")
_NOUN = r"(?:candidates?|options?|attempts?|trajector(?:y|ies)|answers?|choices?|number|no\.|#)"
_CHOICE_KEYWORD_RE = re.compile(
    r"\b(?:best|answer|choice|choose|chose|pick|picked|select|selected|winner|prefer|preferred)\b"
    r"[^\d\n]{0,30}?(?:" + _NOUN + r"\s*)?#?\s*" + _CHOICE_NUM, re.IGNORECASE)
_CHOICE_REVERSE_RE = re.compile(
    r"\b(?:" + _NOUN + r"\s*#?\s*(\d+)|(" + "|".join(_ORDINALS) + r")\s+(?:candidate|option|attempt|trajectory|one))"
    r"\b[^\n.\d]{0,25}?\b(?:is|was|seems|looks|appears|has)\b"
    r"[^\n.\d]{0,15}?\b(?:best|better|most|strongest|winner|closest)\b", re.IGNORECASE)
_CHOICE_MENTION_RE = re.compile(r"\b" + _NOUN + r"\s*#?\s*(\d+)\b", re.IGNORECASE)


def _choice_number(token: str) -> int | None:
    token = token.lower()
    if token in _NUMBER_WORDS:
        return _NUMBER_WORDS[token]
    if token in _ORDINALS:
        return _ORDINALS[token]
    return int(token) if token.isdigit() else None


def parse_choice(text: str, count: int) -> int | None:
    """The 0-based index of the candidate a listwise judge named, or None.

    Candidates are numbered from 1 in the prompt. In order: a number after a
    choice keyword ("Best: 2", "The best is candidate 2", "I choose the
    second"; the last one wins), "candidate 2 is the best", a single distinct
    "candidate K" mention, a reply that is only a number. Numbers outside
    1..count give None.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    clean = _MARKUP_RE.sub("", text)

    def ok(k: int | None) -> int | None:
        return k - 1 if k is not None and 1 <= k <= count else None

    keyword = list(_CHOICE_KEYWORD_RE.finditer(clean))
    if keyword:
        return ok(_choice_number(keyword[-1].group(1)))
    reverse = list(_CHOICE_REVERSE_RE.finditer(clean))
    if reverse:
        m = reverse[-1]
        return ok(_choice_number(m.group(1) or m.group(2)))
    mentioned = {int(m.group(1)) for m in _CHOICE_MENTION_RE.finditer(clean)}
    if len(mentioned) == 1:
        return ok(mentioned.pop())
    bare = re.fullmatch(r"\s*\(?#?(\d+)[).:]?\s*", clean)
    if bare:
        return ok(int(bare.group(1)))
    return None


def _check_replies(replies: Any, contexts: int, n: int) -> list[list[str]]:
    """The judge's replies as `contexts` lists of n strings (anything else is a bug in the policy)."""
    replies = list(replies)
    if len(replies) != contexts or any(len(r) != n for r in replies):
        raise ValueError(f"the judge policy returned {[len(r) for r in replies]} replies for {contexts} "
                         f"contexts x n={n}")
    return [[r if isinstance(r, str) else "" for r in row] for row in replies]


def _as_list(trajectories: Sequence[Trajectory]) -> list[Trajectory]:
    if isinstance(trajectories, Trajectory):
        raise TypeError("pass a list of trajectories (got a single Trajectory)")
    return list(trajectories)


def _prefixes(trajectories: list[Trajectory]) -> tuple[list[Trajectory], list[int]]:
    """Every prefix steps[:i+1] of every trajectory, flattened, and each trajectory's step count."""
    flat, counts = [], []
    for t in trajectories:
        counts.append(len(t.steps))
        flat.extend(t.prefix(i + 1) for i in range(len(t.steps)))
    return flat, counts


def _split(values: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    out, start = [], 0
    for c in counts:
        out.append(np.asarray(values[start:start + c], np.float32).copy())
        start += c
    return out


# ------------------------------------------------------------------------------------------ pointwise


@dataclasses.dataclass(frozen=True)
class JudgeRecord:
    """One judge reply: which item of the call it was about, the raw text and what was parsed from it.

    item: position of the judged trajectory (or prefix, or candidate group) in the call.
    sample: which of the n samples.
    value: the parsed rating (0-10) or chosen 0-based index; None = parse failure.
    """

    item: int
    sample: int
    text: str
    value: float | None


class PointwiseJudge:
    """Asks a judge model for a 0-10 progress rating of each trajectory; reward = rating / 10.

    policy: any object with `sample(contexts, n, temperature, seed) -> list[list[str]]`.
    n: replies per trajectory; the score is the mean of the parsed ones (NaN
      when none parses). With temperature 0 the n replies are usually identical.
    max_steps_shown: show only the most recent steps (None = all).
    max_field_chars: clip each thought/action/observation to this many characters.

    After each call, `last_outputs[i]` holds the raw replies for item i and
    `last_records` one `JudgeRecord` per reply; `samples` and `failures`
    count replies and parse failures over the judge's lifetime.
    """

    kind = "judge"

    def __init__(self, policy, *, temperature: float = 0.0, n: int = 1, seed: int = 0,
                 max_steps_shown: int | None = None, max_field_chars: int | None = 2000,
                 template: str = POINTWISE_TEMPLATE):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if "{transcript}" not in template:
            raise ValueError("template must contain '{transcript}'")
        self.policy, self.temperature, self.n, self.seed = policy, float(temperature), int(n), int(seed)
        self.max_steps_shown, self.max_field_chars, self.template = max_steps_shown, max_field_chars, template
        self.calls = 0
        self.samples = 0
        self.failures = 0
        self.last_outputs: list[list[str]] = []
        self.last_records: list[JudgeRecord] = []

    def messages(self, trajectory: Trajectory) -> Messages:
        """The chat context the judge gets for one trajectory."""
        transcript = render_transcript(trajectory, max_steps_shown=self.max_steps_shown,
                                       max_field_chars=self.max_field_chars)
        return [{"role": "user", "content": self.template.replace("{transcript}", transcript)}]

    def _judge(self, trajectories: list[Trajectory]) -> np.ndarray:
        self.last_outputs, self.last_records = [], []
        if not trajectories:
            return np.zeros((0,), np.float32)
        contexts = [self.messages(t) for t in trajectories]
        replies = _check_replies(self.policy.sample(contexts, n=self.n, temperature=self.temperature,
                                                    seed=self.seed), len(contexts), self.n)
        self.calls += 1
        scores = np.full((len(trajectories),), np.nan, np.float32)
        for i, row in enumerate(replies):
            values = [parse_score(text) for text in row]
            self.last_records.extend(JudgeRecord(i, j, text, v) for j, (text, v) in enumerate(zip(row, values)))
            parsed = [v for v in values if v is not None]
            self.samples += len(values)
            self.failures += len(values) - len(parsed)
            if parsed:
                scores[i] = np.float32(np.mean(parsed) / 10.0)
        self.last_outputs = replies
        return scores

    @property
    def parse_rate(self) -> float:
        """Share of replies (over the judge's lifetime) that held a readable rating."""
        return 1.0 - self.failures / self.samples if self.samples else math.nan

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """rating / 10 in [0, 1] per trajectory; NaN where no reply could be parsed."""
        return self._judge(_as_list(trajectories))

    def score_steps(self, trajectories: Sequence[Trajectory]) -> list[np.ndarray]:
        """The score of each prefix steps[:i+1] (all prefixes of all trajectories in one policy call)."""
        flat, counts = _prefixes(_as_list(trajectories))
        return _split(self._judge(flat), counts)


# ------------------------------------------------------------------------------------------ listwise


class ListwiseJudge:
    """Shows the candidates for one task together and asks which is best.

    `rank(candidates)` returns the 0-based index of the pick, or None when the
    reply cannot be parsed (counted in `failures`, raw text in `last_outputs`).
    `score(candidates)` gives 1.0 to the pick and 0.0 to the others, and 0.5
    to all when the judge's answer is unreadable. These scores are only
    comparable among the trajectories of one call: they say nothing about a
    trajectory's absolute quality. `score_steps` compares, for each step
    index i, the prefixes steps[:i+1] of the candidates that have that step.
    """

    kind = "judge"

    def __init__(self, policy, *, temperature: float = 0.0, seed: int = 0, max_steps_shown: int | None = None,
                 max_field_chars: int | None = 1000, template: str = LISTWISE_TEMPLATE):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.policy, self.temperature, self.seed = policy, float(temperature), int(seed)
        self.max_steps_shown, self.max_field_chars, self.template = max_steps_shown, max_field_chars, template
        self.calls = 0
        self.samples = 0
        self.failures = 0
        self.last_outputs: list[str] = []
        self.last_records: list[JudgeRecord] = []

    def messages(self, candidates: Sequence[Trajectory]) -> Messages:
        """The chat context for one group of candidates (same task)."""
        blocks = []
        for k, t in enumerate(candidates):
            # the instruction is shared: shown once, with the first candidate
            transcript = render_transcript(t, max_steps_shown=self.max_steps_shown,
                                           max_field_chars=self.max_field_chars, show_instruction=k == 0)
            blocks.append(f"=== Candidate {k + 1} ===\n{transcript}")
        prompt = self.template.replace("{count}", str(len(candidates))).replace("{candidates}", "\n\n".join(blocks))
        return [{"role": "user", "content": prompt}]

    @staticmethod
    def _check_group(candidates: list[Trajectory]) -> None:
        if not candidates:
            raise ValueError("rank needs at least one candidate")
        first = candidates[0]
        for t in candidates[1:]:
            if t.task != first.task or t.instruction != first.instruction:
                raise ValueError("listwise judging compares candidates of one task: all trajectories must share "
                                 "task and instruction")

    def rank_many(self, groups: Sequence[Sequence[Trajectory]]) -> list[int | None]:
        """`rank` for several groups with one policy call (groups of one candidate are not asked)."""
        groups = [_as_list(g) for g in groups]
        for g in groups:
            self._check_group(g)
        self.last_outputs, self.last_records = [], []
        asked = [i for i, g in enumerate(groups) if len(g) > 1]
        picks: list[int | None] = [0 if len(g) == 1 else None for g in groups]
        if not asked:
            return picks
        contexts = [self.messages(groups[i]) for i in asked]
        replies = _check_replies(self.policy.sample(contexts, n=1, temperature=self.temperature, seed=self.seed),
                                 len(contexts), 1)
        self.calls += 1
        for i, row in zip(asked, replies):
            choice = parse_choice(row[0], len(groups[i]))
            picks[i] = choice
            self.samples += 1
            self.failures += choice is None
            self.last_outputs.append(row[0])
            self.last_records.append(JudgeRecord(i, 0, row[0], None if choice is None else float(choice)))
        return picks

    def rank(self, candidates: Sequence[Trajectory]) -> int | None:
        """0-based index of the best candidate, or None when the reply could not be parsed."""
        return self.rank_many([candidates])[0]

    @property
    def parse_rate(self) -> float:
        return 1.0 - self.failures / self.samples if self.samples else math.nan

    @staticmethod
    def _one_hot(count: int, pick: int | None) -> np.ndarray:
        if pick is None:
            return np.full((count,), 0.5, np.float32)
        out = np.zeros((count,), np.float32)
        out[pick] = 1.0
        return out

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """1.0 for the judge's pick, 0.0 for the others; all 0.5 when the reply is unreadable."""
        candidates = _as_list(trajectories)
        if not candidates:
            return np.zeros((0,), np.float32)
        return self._one_hot(len(candidates), self.rank(candidates))

    def score_steps(self, trajectories: Sequence[Trajectory]) -> list[np.ndarray]:
        """Step i: 1/0 (0.5 on failure) among the prefixes steps[:i+1] of the candidates that reach step i."""
        candidates = _as_list(trajectories)
        out = [np.zeros((len(t.steps),), np.float32) for t in candidates]
        if not candidates:
            return out
        self._check_group(candidates)
        depth = max(len(t.steps) for t in candidates)
        members = [[k for k, t in enumerate(candidates) if len(t.steps) > i] for i in range(depth)]
        picks = self.rank_many([[candidates[k].prefix(i + 1) for k in m] for i, m in enumerate(members)])
        for i, (m, pick) in enumerate(zip(members, picks)):
            for k, s in zip(m, self._one_hot(len(m), pick)):
                out[k][i] = s
        return out


# ------------------------------------------------------------------------------------------ logit judge


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _yes_no_batch(graphdef, state, ids, mask, last_index, yes_ids, no_ids):
    """(P(yes) / (P(yes) + P(no)), P(yes) + P(no)) at each row's last real token; rows right-padded."""
    model = nnx.merge(graphdef, state)
    hidden, _ = model.backbone(ids, mask)
    last = jnp.take_along_axis(hidden, last_index[:, None, None], axis=1)[:, 0]  # [B, D]
    logp = jax.nn.log_softmax(model.logits(last), axis=-1)  # [B, V] float32
    lse_yes = jax.nn.logsumexp(logp[:, yes_ids], axis=-1)
    lse_no = jax.nn.logsumexp(logp[:, no_ids], axis=-1)
    return jax.nn.sigmoid(lse_yes - lse_no), jnp.exp(jnp.logaddexp(lse_yes, lse_no))


def compile_counts() -> dict[str, int]:
    """How many shapes the logit judge's jitted forward has compiled."""
    return {"logit_judge": _yes_no_batch._cache_size()}


def answer_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """Token ids of the single-token spellings among `words` (else the first token of the first word)."""
    ids: list[int] = []
    for w in words:
        enc = tokenizer.encode(w, add_special_tokens=False)
        if len(enc) == 1 and enc[0] not in ids:
            ids.append(int(enc[0]))
    if not ids:
        enc = tokenizer.encode(words[0], add_special_tokens=False)
        if not enc:
            raise ValueError(f"the tokenizer encodes {words[0]!r} to no tokens")
        ids.append(int(enc[0]))
    return ids


YES_WORDS = ("Yes", " Yes", "yes", " yes", "YES", " YES")
NO_WORDS = ("No", " No", "no", " no", "NO", " NO")


class LogitJudge:
    """P(Yes) / (P(Yes) + P(No)) of an in-process causal LM asked whether the trajectory is on track.

    The trajectory (`render_transcript`) and `question` form one user turn,
    rendered with the chat template and its generation prompt; one forward
    pass reads the next-token distribution at the first answer token. Each
    side sums the probabilities of its single-token spellings (`yes_ids`,
    `no_ids`). `last_answer_mass` holds P(Yes) + P(No) of the last call (how
    much of the distribution the answer tokens got: low = the model wanted to
    say something else).

    Batching as in `rewards.scoring`: sorted by length, batches of at most
    batch_size, padded to power-of-two shapes, right-padded rows, so a score
    does not depend on its batch-mates (1e-5 in float32). Prompts longer than
    max_length tokens drop their oldest steps first.
    """

    kind = "judge"

    def __init__(self, model, tokenizer, *, question: str = DEFAULT_LOGIT_QUESTION, batch_size: int = 8,
                 max_length: int | None = 2048, min_length_bucket: int = 32, max_steps_shown: int | None = None,
                 max_field_chars: int | None = 2000, template: str = LOGIT_TEMPLATE,
                 yes_words: Sequence[str] = YES_WORDS, no_words: Sequence[str] = NO_WORDS):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if "{transcript}" not in template:
            raise ValueError("template must contain '{transcript}'")
        self.model, self.tokenizer, self.question = model, tokenizer, question
        self.batch_size, self.max_length, self.min_length_bucket = batch_size, max_length, min_length_bucket
        self.max_steps_shown, self.max_field_chars, self.template = max_steps_shown, max_field_chars, template
        self.yes_ids = answer_token_ids(tokenizer, yes_words)
        self.no_ids = answer_token_ids(tokenizer, no_words)
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError(f"yes and no answers share tokens: {set(self.yes_ids) & set(self.no_ids)}")
        self.last_answer_mass = np.zeros((0,), np.float32)
        self.tokens_scored = 0
        self.truncated = 0

    def messages(self, trajectory: Trajectory, *, first_step: int = 0) -> Messages:
        transcript = render_transcript(trajectory, max_steps_shown=self.max_steps_shown, first_step=first_step,
                                       max_field_chars=self.max_field_chars)
        prompt = self.template.replace("{transcript}", transcript).replace("{question}", self.question)
        return [{"role": "user", "content": prompt}]

    def _encode_once(self, trajectory: Trajectory, first_step: int) -> list[int]:
        text = self.tokenizer.apply_chat_template(self.messages(trajectory, first_step=first_step), tokenize=False,
                                                  add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, trajectory: Trajectory) -> list[int]:
        """Token ids of the judge prompt, ending with the generation prompt (the answer comes next)."""
        ids = self._encode_once(trajectory, 0)
        if self.max_length is None or len(ids) <= self.max_length:
            return ids
        self.truncated += 1
        for first in range(1, len(trajectory.steps) + 1):  # drop the oldest steps until it fits
            ids = self._encode_once(trajectory, first)
            if len(ids) <= self.max_length:
                return ids
        return ids[-self.max_length:]  # the instruction alone is too long: keep the end (the question)

    def _run(self, trajectories: list[Trajectory]) -> np.ndarray:
        n = len(trajectories)
        probs = np.zeros((n,), np.float32)
        mass = np.zeros((n,), np.float32)
        if not n:
            self.last_answer_mass = mass
            return probs
        truncated_before = self.truncated
        encoded = [self.encode(t) for t in trajectories]
        if self.truncated > truncated_before:
            warnings.warn(f"{self.truncated - truncated_before} of {n} judge prompts exceeded max_length="
                          f"{self.max_length} tokens; their oldest steps were left out", stacklevel=3)
        graphdef, state = nnx.split(self.model)
        yes, no = jnp.asarray(self.yes_ids, jnp.int32), jnp.asarray(self.no_ids, jnp.int32)
        order = np.argsort(-np.asarray([len(e) for e in encoded]), kind="stable")
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            rows = min(next_power_of_two(len(idx)), self.batch_size)
            length = next_power_of_two(max(len(encoded[i]) for i in idx), self.min_length_bucket)
            ids = np.zeros((rows, length), np.int32)
            mask = np.zeros((rows, length), bool)
            mask[:, 0] = True  # filler rows hold one token so no row is fully masked
            last = np.zeros((rows,), np.int32)
            for r, i in enumerate(idx):
                ids[r, :len(encoded[i])] = encoded[i]
                mask[r, :len(encoded[i])] = True
                last[r] = len(encoded[i]) - 1
            self.tokens_scored += int(sum(len(encoded[i]) for i in idx))
            p, m = jax.device_get(_yes_no_batch(graphdef, state, jnp.asarray(ids), jnp.asarray(mask),
                                                jnp.asarray(last), yes, no))
            probs[idx] = p[:len(idx)]
            mass[idx] = m[:len(idx)]
        self.last_answer_mass = mass
        return probs

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """P(Yes) / (P(Yes) + P(No)) per trajectory, float32 in (0, 1)."""
        return self._run(_as_list(trajectories))

    def score_steps(self, trajectories: Sequence[Trajectory]) -> list[np.ndarray]:
        """The score of each prefix steps[:i+1] (all prefixes of all trajectories batched together)."""
        flat, counts = _prefixes(_as_list(trajectories))
        return _split(self._run(flat), counts)
