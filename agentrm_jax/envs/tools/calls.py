"""The text of tool calls: parsing `tool(arg, key=value)` out of model text, reading and writing argument values,
and matching a given answer against the expected one. Pure functions; nothing here raises on model text except
`CallError`, which the env turns into an error observation.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["CallError", "answer_matches", "parse_call"]

_CALL_START = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_KEYWORD = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[=:]\s*(.*)$", re.S)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class CallError(ValueError):
    """An action that is not a well-formed tool call (the message says why)."""


def _split_top_level(text: str) -> list[str]:
    """Split `text` on commas outside quotes and brackets."""
    parts, depth, quote, current, i = [], 0, None, [], 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
            current.append(ch)
        elif ch in "'\"":
            quote = ch
            current.append(ch)
        elif ch in "([{":
            depth += 1
            current.append(ch)
        elif ch in ")]}":
            depth -= 1
            current.append(ch)
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    if quote:
        raise CallError("unterminated quoted string")
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _value(text: str) -> Any:
    """A literal argument: a quoted string, a number, or a bare word (kept as text)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _NUMBER.match(text):
        number = float(text)
        return int(number) if number.is_integer() and re.match(r"^[+-]?\d+$", text) else number
    return text


def _call_body(text: str, start: int) -> str:
    """The text between the '(' at `start` and its matching ')' (or the end of the text)."""
    depth, quote = 0, None
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
    return text[start + 1:].rstrip().rstrip(")")


def parse_call(text: str, known: tuple[str, ...] = ()) -> tuple[str, list[Any], dict[str, Any], str]:
    """Parse `tool(arg, key=value)` out of free text: (name, positional args, keyword args, raw body).

    If some `name(` in the text names a tool in `known`, the first such is used;
    otherwise the first `name(` at all. Raises CallError when there is no call.
    """
    matches = list(_CALL_START.finditer(text))
    if not matches:
        raise CallError("no tool call found; write it as tool_name(arg1, key=value)")
    chosen = next((m for m in matches if m.group(1) in known), matches[0])
    name, body = chosen.group(1), _call_body(text, chosen.end() - 1)
    args, kwargs = [], {}
    if body.strip():
        for part in _split_top_level(body):
            if not part:
                continue
            keyword = _KEYWORD.match(part)
            if keyword and not part.lstrip().startswith(("'", '"')):
                kwargs[keyword.group(1)] = _value(keyword.group(2))
            else:
                args.append(_value(part))
    return name, args, kwargs, body


def _fmt(value: Any) -> str:
    """A value as the tools print it (whole floats without ".0", others to 6 significant digits)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{round(value, 6):g}"
    return str(value)


def _norm(text: Any) -> str:
    """A value normalised for comparison: unquoted, lower case, no trailing dot, thousands separators or "$"."""
    text = str(text).strip().strip("'\"").strip().rstrip(".").strip().lower()
    return re.sub(r"\s+", " ", re.sub(r"(?<=\d),(?=\d{3}\b)", "", text).replace("$", ""))


def _as_number(text: str) -> float | None:
    """The number a normalised text spells, or None."""
    return float(text) if _NUMBER.match(text) else None


def answer_matches(given: Any, expected: Any) -> bool:
    """Whether an answer string matches the expected value (numbers numerically, text case-insensitively)."""
    given_n, expected_n = _norm(given), _norm(expected)
    g, e = _as_number(given_n), _as_number(expected_n)
    if g is not None and e is not None:
        return abs(g - e) <= 1e-6 * max(1.0, abs(e))
    if given_n == expected_n:
        return True
    if e is not None:  # a number inside a short sentence: "The answer is 42"
        numbers = re.findall(r"[+-]?\d+(?:\.\d+)?", given_n)
        return len(numbers) == 1 and abs(float(numbers[0]) - e) <= 1e-6 * max(1.0, abs(e))
    return re.search(r"(?<![a-z0-9])" + re.escape(expected_n) + r"(?![a-z0-9])", given_n) is not None
