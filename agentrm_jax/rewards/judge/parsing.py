"""Reading a judge's free-text reply: the 0-10 rating (`parse_score`) and the chosen candidate (`parse_choice`).

Both are lenient (markdown, number words, fractions, percentages, "candidate
2 is the best") and never raise: a reply with nothing readable gives None.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_choice", "parse_score"]

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
