"""`tools`, `tool_query`, `tool_operation`: offline tool use, standing in for AgentBoard ToolQuery/ToolOperation.

Every task is generated from `task_seed(name, split, seed)`: a small local
table (employees, products or books for queries; a task board or an inventory
for operations), so the same (split, seed) always gives the same task and
train/test never share one. `tools` picks the kind by seed (or `kind=`);
`tool_query` and `tool_operation` fix it.

Actions are function calls, one per turn: `tool_name(arg1, key=value, ...)`.
Arguments may be quoted ('x' or "x"), numbers, or bare words; a call may be
embedded in other text ("Action: lookup('E03')"): the first `name(` of a known
or unknown tool starts the call. A bad call (unknown tool, missing or unknown
argument, unparsable text) returns an error plus the tool list and counts as
a turn; nothing raises on model text.

query kind. Tools: `search(field=value, ...)` (ids and names of matching
rows), `lookup(id)` (the full row), `calculate(expression)` (arithmetic via a
whitelisted AST walk, never eval), `answer(text)` (ends the episode). The
question needs 1 to 3 tool calls: an attribute of a named row (search, then
lookup), a count of rows with a given value (search), or a sum/difference of
two rows' numbers (lookup, lookup, calculate). Progress = (needed facts
retrieved + correct answer) / (number of needed facts + 1), i.e. 1.0 once
the answer is correct (even if a fact was guessed rather than retrieved).

operation kind. Tools: `view()`, `add_row(field=value, ...)` (all fields),
`update(id, field, value)`, `delete(id)`. The goal is 1 to 3 changes (update
a field, add a row, delete a row); the episode succeeds as soon as the table
equals the target table (compared as a multiset of rows, ids ignored).
Progress = (goal checks met + table equals target) / (number of checks + 1)
(so 1.0 once the table equals the target), where an update or delete is one check and an added row one check per field
(of the best-matching new row).

The expert is the generated task's own solution (the tool calls listed above,
then `answer(...)` for queries).
"""

from __future__ import annotations

import ast
import copy
import math
import operator
import random
import re
from collections import Counter
from typing import Any

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register, task_seed

__all__ = ["ToolEnv", "ToolOperationEnv", "ToolQueryEnv", "parse_call", "safe_calculate"]

# ---------------------------------------------------------------------------------------------
# Parsing and arithmetic (pure functions)
# ---------------------------------------------------------------------------------------------

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


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def safe_calculate(expression: str) -> float:
    """Evaluate + - * / // % ** and parentheses over numbers by walking a whitelisted AST (no eval).

    Thousands separators ("52,000") and "$" are accepted. Raises ValueError on anything else.
    """
    cleaned = re.sub(r"(?<=\d),(?=\d{3}\b)", "", str(expression)).replace("$", "").replace("^", "**").strip()
    if not cleaned or len(cleaned) > 200:
        raise ValueError("empty or too long expression")
    try:
        tree = ast.parse(cleaned, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot parse {expression!r}") from exc

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
                raise ValueError("exponent too large")
            try:
                return _BINARY[type(node.op)](left, right)
            except ZeroDivisionError as exc:
                raise ValueError("division by zero") from exc
        raise ValueError(f"unsupported element {type(node).__name__} in {expression!r}")

    result = walk(tree)
    if isinstance(result, complex) or not math.isfinite(result):
        raise ValueError("result is not a finite real number")
    return result


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{round(value, 6):g}"
    return str(value)


def _norm(text: Any) -> str:
    text = str(text).strip().strip("'\"").strip().rstrip(".").strip().lower()
    return re.sub(r"\s+", " ", re.sub(r"(?<=\d),(?=\d{3}\b)", "", text).replace("$", ""))


def _as_number(text: str) -> float | None:
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

# ---------------------------------------------------------------------------------------------
# Task data
# ---------------------------------------------------------------------------------------------

_FIRST = ["Ada", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Mateo",
          "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Uma", "Viktor", "Wen", "Yusuf", "Zoe"]
_LAST = ["Alvarez", "Brook", "Costa", "Dubois", "Endo", "Fischer", "Garcia", "Haddad", "Ito", "Jensen", "Kim",
         "Larsen", "Mensah", "Novak", "Okafor", "Patel", "Quist", "Reyes", "Silva", "Tanaka", "Ueda", "Vogel"]
_ADJ = ["Blue", "Compact", "Deluxe", "Eco", "Golden", "Heavy", "Mini", "Quiet", "Rapid", "Smart", "Solar", "Steel"]
_NOUN = ["Kettle", "Lamp", "Backpack", "Blender", "Chair", "Drill", "Fan", "Headset", "Mug", "Router", "Scale", "Tent"]
_TITLE_A = ["Silent", "Hidden", "Last", "Broken", "Crimson", "Distant", "Frozen", "Golden", "Lost", "Wild"]
_TITLE_B = ["River", "Garden", "Empire", "Signal", "Harbor", "Orchard", "Lantern", "Mountain", "Compass", "Archive"]
_CITIES = ["Lisbon", "Oslo", "Nairobi", "Osaka", "Lima", "Toronto", "Krakow", "Austin"]
_VERBS = ["Review", "Draft", "Update", "Test", "Deploy", "Plan", "Fix", "Archive", "Design", "Audit"]
_OBJECTS = ["budget", "homepage", "invoice flow", "login page", "roadmap", "release notes", "backup job",
            "onboarding guide", "search index", "API docs", "style guide", "sales report"]
_STOCK = ["bolts", "hinges", "cables", "batteries", "gloves", "tape", "filters", "valves", "brackets", "lenses",
          "nails", "fuses", "springs", "rivets"]

# domain -> (entity singular, plural, id prefix, name field, field types, row maker)
_QUERY_DOMAINS = {
    "employees": ("employee", "employees", "E", "name",
                  {"name": str, "department": str, "city": str, "age": int, "salary": int},
                  lambda r, name: {"name": name, "department": r.choice(["Sales", "Engineering", "Marketing",
                                                                             "Finance", "Support"]),
                                   "city": r.choice(_CITIES), "age": r.randint(22, 64),
                                   "salary": r.randrange(30000, 150001, 1000)},
                  lambda r: f"{r.choice(_FIRST)} {r.choice(_LAST)}"),
    "products": ("product", "products", "P", "name",
                 {"name": str, "category": str, "brand": str, "price": int, "stock": int},
                 lambda r, name: {"name": name, "category": r.choice(["Kitchen", "Outdoor", "Office", "Audio",
                                                                          "Tools"]),
                                  "brand": r.choice(["Acme", "Nordik", "Zenit", "Orbis"]),
                                  "price": r.randint(5, 500), "stock": r.randint(0, 200)},
                 lambda r: f"{r.choice(_ADJ)} {r.choice(_NOUN)}"),
    "books": ("book", "books", "B", "title",
              {"title": str, "author": str, "genre": str, "year": int, "pages": int},
              lambda r, name: {"title": name, "author": f"{r.choice(_FIRST)} {r.choice(_LAST)}",
                               "genre": r.choice(["Mystery", "Fantasy", "History", "Science", "Poetry"]),
                               "year": r.randint(1950, 2023), "pages": r.randint(90, 900)},
              lambda r: f"The {r.choice(_TITLE_A)} {r.choice(_TITLE_B)}"),
}

_OPERATION_DOMAINS = {
    "tasks": ("task", "tasks", "T", "title",
              {"title": str, "status": str, "priority": str, "owner": str},
              {"status": ["todo", "doing", "done"], "priority": ["low", "medium", "high"],
               "owner": ["Ada", "Ben", "Chen", "Dara", "Eli", "Hana"]},
              lambda r: f"{r.choice(_VERBS)} {r.choice(_OBJECTS)}"),
    "inventory": ("item", "items", "I", "item",
                  {"item": str, "quantity": int, "location": str, "supplier": str},
                  {"quantity": list(range(0, 101, 5)), "location": ["Aisle 1", "Aisle 2", "Aisle 3", "Backroom"],
                   "supplier": ["Acme", "Nordik", "Zenit", "Orbis"]},
                  lambda r: f"{r.choice(['small', 'large', 'steel', 'copper', 'spare'])} {r.choice(_STOCK)}"),
}


def _unique_names(rng: random.Random, maker, n: int) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = maker(rng)
        if name not in names:
            names.append(name)
    return names


def _q(value: Any) -> str:
    """A value written as a call argument (strings double-quoted)."""
    return f'"{value}"' if isinstance(value, str) else _fmt(value)


def generate_query_task(rng: random.Random) -> dict:
    """A query task: table, question, expected answer, needed facts and the expert's calls."""
    domain = rng.choice(sorted(_QUERY_DOMAINS))
    entity, plural, prefix, key, types, make_row, make_name = _QUERY_DOMAINS[domain]
    n = rng.randint(8, 12)
    rows = {f"{prefix}{i + 1:02d}": make_row(rng, name) for i, name in enumerate(_unique_names(rng, make_name, n))}
    ids = sorted(rows)
    numeric = [f for f, t in types.items() if t is int]
    categorical = [f for f, t in types.items() if t is str and f != key]
    template = rng.choice(["attribute", "count", "arithmetic"])
    if template == "attribute":
        rid = rng.choice(ids)
        field = rng.choice([f for f in types if f != key])
        question = f"What is the {field} of the {entity} {rows[rid][key]!r}?"
        expected = rows[rid][field]
        facts = [("search_hit", rid), ("lookup", rid)]
        calls = [f"search({key}={_q(rows[rid][key])})", f'lookup("{rid}")']
    elif template == "count":
        field = rng.choice(categorical)
        value = rows[rng.choice(ids)][field]
        matching = tuple(sorted(i for i in ids if rows[i][field] == value))
        question = f"How many {plural} have {field} equal to {value!r}?"
        expected = len(matching)
        facts = [("search_set", matching)]
        calls = [f"search({field}={_q(value)})"]
    else:
        a, b = rng.sample(ids, 2)
        field = rng.choice(numeric)
        if rows[a][field] < rows[b][field]:
            a, b = b, a
        if rng.random() < 0.5:
            question = (f"What is the combined {field} of {a} ({rows[a][key]}) and {b} ({rows[b][key]})?")
            expected, expression = rows[a][field] + rows[b][field], f"{rows[a][field]} + {rows[b][field]}"
        else:
            question = (f"By how much does the {field} of {a} ({rows[a][key]}) exceed the {field} of "
                        f"{b} ({rows[b][key]})?")
            expected, expression = rows[a][field] - rows[b][field], f"{rows[a][field]} - {rows[b][field]}"
        facts = [("lookup", a), ("lookup", b), ("calc", expected)]
        calls = [f'lookup("{a}")', f'lookup("{b}")', f'calculate("{expression}")']
    calls.append(f"answer({_q(_fmt(expected))})")
    return {"kind": "query", "domain": domain, "entity": entity, "key": key, "types": types, "rows": rows,
            "question": question, "expected": expected, "facts": facts, "calls": calls}


def generate_operation_task(rng: random.Random) -> dict:
    """An operation task: initial table, goal text, target table, checks and the expert's calls."""
    domain = rng.choice(sorted(_OPERATION_DOMAINS))
    entity, plural, prefix, key, types, choices, make_name = _OPERATION_DOMAINS[domain]
    n = rng.randint(5, 8)
    names = _unique_names(rng, make_name, n + 1)
    rows = {f"{prefix}{i + 1:02d}": {key: name, **{f: rng.choice(choices[f]) for f in choices}}
            for i, name in enumerate(names[:n])}
    target = copy.deepcopy(rows)
    ids = sorted(rows)
    kinds = rng.sample(["update", "add", "delete"], rng.randint(1, 3))
    touched = rng.sample(ids, 2)
    goals, checks, calls = [], [], []
    for kind in kinds:
        if kind == "update":
            rid = touched[0]
            field = rng.choice(sorted(choices))
            value = rng.choice([v for v in choices[field] if v != rows[rid][field]])
            target[rid][field] = value
            goals.append(f"set the {field} of {rid} ({rows[rid][key]}) to {value!r}")
            checks.append(("field", rid, field, value))
            calls.append(f'update("{rid}", "{field}", {_q(value)})')
        elif kind == "delete":
            rid = touched[1]
            del target[rid]
            goals.append(f"delete {rid} ({rows[rid][key]})")
            checks.append(("absent", rid))
            calls.append(f'delete("{rid}")')
        else:
            new = {key: names[n], **{f: rng.choice(choices[f]) for f in choices}}
            target[f"{prefix}{n + 1:02d}"] = new
            described = ", ".join(f"{f} {v!r}" for f, v in new.items())
            goals.append(f"add a new {entity} with {described}")
            checks.extend(("new", f, v) for f, v in new.items())
            calls.append("add_row(" + ", ".join(f"{f}={_q(v)}" for f, v in new.items()) + ")")
    return {"kind": "operation", "domain": domain, "entity": entity, "plural": plural, "prefix": prefix, "key": key,
            "types": types, "rows": rows, "target": target, "goal": "; ".join(goals), "checks": checks,
            "calls": calls}

# ---------------------------------------------------------------------------------------------
# The environment
# ---------------------------------------------------------------------------------------------

_QUERY_TOOLS = {
    "search": "search(field=value, ...): ids and names of the rows whose fields equal all the given values",
    "lookup": "lookup(id): every field of the row with that id",
    "calculate": "calculate(expression): evaluate arithmetic such as calculate(\"120 - 45\")",
    "answer": "answer(text): give your final answer (ends the task)",
}
_OPERATION_TOOLS = {
    "view": "view(): show the whole table",
    "add_row": "add_row(field=value, ...): add a row (every field is required; the id is assigned)",
    "update": "update(id, field, value): set one field of a row",
    "delete": "delete(id): remove a row",
}


class ToolEnv(ReplayEnv):
    """Offline tool-use tasks (see the module docstring). `kind` is "query", "operation" or None (by seed)."""

    name = "tools"
    fixed_kind: str | None = None

    def __init__(self, *, split: str = "train", max_turns: int = 20, kind: str | None = None):
        super().__init__(split=split, max_turns=max_turns)
        kind = kind or self.fixed_kind
        if kind not in (None, "query", "operation"):
            raise ValueError(f"kind must be 'query', 'operation' or None, got {kind!r}")
        if self.fixed_kind and kind != self.fixed_kind:
            raise ValueError(f"{self.name} only has kind {self.fixed_kind!r}")
        self.kind = kind
        self.task: dict = {}
        self.state: dict = {}

    # -- task -------------------------------------------------------------------------------------
    @property
    def tools(self) -> dict[str, str]:
        """Tool name -> usage line for the current task's kind."""
        return _QUERY_TOOLS if self.task.get("kind") == "query" else _OPERATION_TOOLS

    def _tool_list(self) -> str:
        return "Available tools:\n" + "\n".join(f"  {usage}" for usage in self.tools.values())

    def _reset(self, seed: int) -> str:
        rng = random.Random(task_seed(self.name, self.split, seed))
        kind = self.kind or rng.choice(["query", "operation"])
        self.task = generate_query_task(rng) if kind == "query" else generate_operation_task(rng)
        task = self.task
        fields = ", ".join(f"{f} ({'number' if t is int else 'text'})" for f, t in task["types"].items())
        if kind == "query":
            self.state = {"facts": set(), "answered": False, "correct": False}
            head = (f"Answer a question using tools over a local table of {len(task['rows'])} {task['domain']} "
                    f"(ids like {sorted(task['rows'])[0]}; fields: {fields}).")
            goal = f"Question: {task['question']}"
        else:
            self.state = {"rows": copy.deepcopy(task["rows"]), "next_id": len(task["rows"]) + 1}
            head = (f"Edit a local {task['entity']} table of {len(task['rows'])} rows (ids like "
                    f"{sorted(task['rows'])[0]}; fields: {fields}) with tools.")
            goal = f"Goal: {task['goal']}. Leave every other row unchanged."
        self._instruction = (f"{head}\n{self._tool_list()}\nCall exactly one tool per turn, written as "
                             f"tool_name(arg1, key=value).\n{goal}")
        return self._instruction

    # -- steps ------------------------------------------------------------------------------------
    def _error(self, message: str) -> tuple[str, bool]:
        return f"Error: {message}\n{self._tool_list()}", False

    def _step(self, action: str) -> tuple[str, bool]:
        try:
            name, args, kwargs, body = parse_call(action, tuple(self.tools))
        except CallError as exc:
            return self._error(f"could not read a tool call from {action!r}: {exc}.")
        if name not in self.tools:
            return self._error(f"unknown tool {name!r}.")
        try:
            handler = getattr(self, f"_tool_{name}")
            return handler(args, kwargs, body)
        except CallError as exc:
            return self._error(f"{name}: {exc}. Usage: {self.tools[name]}.")
        except (TypeError, ValueError, KeyError, AttributeError) as exc:  # odd argument values: never raise
            return self._error(f"{name}: invalid arguments ({exc}). Usage: {self.tools[name]}.")

    @staticmethod
    def _single(args: list, kwargs: dict, body: str, names: tuple[str, ...]) -> Any:
        """The one argument of a one-argument tool (positional or under any of `names`)."""
        values = args + [v for k, v in kwargs.items() if k in names]
        if len(values) == 1 and len(args) + len(kwargs) == 1:
            return values[0]
        if not body.strip():
            raise CallError("missing argument")
        return _value(body.strip())  # unparsable as separate args: take the whole text

    def _row_id(self, value: Any, rows: dict) -> str:
        rid = str(value).strip().upper()
        if rid not in rows:
            raise CallError(f"no row with id {value!r} (ids: {', '.join(sorted(rows))})")
        return rid

    def _coerce(self, field: str, value: Any) -> Any:
        types = self.task["types"]
        if field not in types:
            raise CallError(f"unknown field {field!r} (fields: {', '.join(types)})")
        if types[field] is int:
            number = value if isinstance(value, (int, float)) else _as_number(_norm(value))
            if number is None or not float(number).is_integer():
                raise CallError(f"{field} must be a whole number, got {value!r}")
            return int(number)
        return str(value)

    # query tools
    def _tool_search(self, args, kwargs, body):
        key = self.task["key"]
        conditions = dict(kwargs)
        if args:
            if len(args) > 1 or key in conditions:
                raise CallError("give conditions as field=value")
            conditions[key] = args[0]
        if not conditions:
            raise CallError("give at least one condition field=value")
        coerced = {f: self._coerce(f, v) for f, v in conditions.items()}
        rows = self.task["rows"]
        hits = sorted(rid for rid, row in rows.items()
                      if all(_norm(row[f]) == _norm(v) for f, v in coerced.items()))
        for fact in self.task["facts"]:
            if (fact[0] == "search_hit" and fact[1] in hits) or (fact[0] == "search_set" and tuple(hits) == fact[1]):
                self.state["facts"].add(fact)
        if not hits:
            return "No rows match.", False
        listed = ", ".join(f"{rid} ({rows[rid][key]})" for rid in hits)
        return f"Found {len(hits)} matching row{'s' if len(hits) != 1 else ''}: {listed}.", False

    def _tool_lookup(self, args, kwargs, body):
        rid = self._row_id(self._single(args, kwargs, body, ("id", "row_id", "key")), self.task["rows"])
        if ("lookup", rid) in self.task["facts"]:
            self.state["facts"].add(("lookup", rid))
        row = self.task["rows"][rid]
        return f"{rid}: " + "; ".join(f"{f}: {_fmt(v)}" for f, v in row.items()) + ".", False

    def _tool_calculate(self, args, kwargs, body):
        expression = self._single(args, kwargs, body, ("expression", "expr", "formula"))
        try:
            result = safe_calculate(str(expression))
        except ValueError as exc:
            raise CallError(str(exc)) from None
        for fact in self.task["facts"]:
            if fact[0] == "calc" and abs(result - fact[1]) <= 1e-6 * max(1.0, abs(fact[1])):
                self.state["facts"].add(fact)
        return f"Result: {_fmt(result)}", False

    def _tool_answer(self, args, kwargs, body):
        given = self._single(args, kwargs, body, ("text", "answer", "value"))
        self.state["answered"] = True
        self.state["correct"] = answer_matches(given, self.task["expected"])
        verdict = "correct" if self.state["correct"] else "incorrect"
        return f"You answered {_fmt(given)!r}. The answer is {verdict}. The task is over.", True

    # operation tools
    def _render_table(self) -> str:
        rows = self.state["rows"]
        if not rows:
            return "The table is empty."
        fields = list(self.task["types"])
        lines = [" | ".join(["id"] + fields)]
        lines += [" | ".join([rid] + [_fmt(rows[rid][f]) for f in fields]) for rid in sorted(rows)]
        return f"The {self.task['entity']} table has {len(rows)} rows:\n" + "\n".join(lines)

    def _tool_view(self, args, kwargs, body):
        return self._render_table(), False

    def _tool_add_row(self, args, kwargs, body):
        if args:
            raise CallError("give every field as field=value")
        types = self.task["types"]
        unknown = [k for k in kwargs if k not in types]
        if unknown:
            raise CallError(f"unknown field(s): {', '.join(unknown)} (fields: {', '.join(types)})")
        missing = [f for f in types if f not in kwargs]
        if missing:
            raise CallError(f"missing field(s): {', '.join(missing)}")
        row = {f: self._coerce(f, kwargs[f]) for f in types}
        rid = f"{self.task['prefix']}{self.state['next_id']:02d}"
        self.state["next_id"] += 1
        self.state["rows"][rid] = row
        return f"Added row {rid}: " + "; ".join(f"{f}: {_fmt(v)}" for f, v in row.items()) + ".", False

    def _tool_update(self, args, kwargs, body):
        values = list(args) + [kwargs[k] for k in ("id", "field", "value") if k in kwargs]
        extra = [k for k in kwargs if k not in ("id", "field", "value")]
        if len(values) == 1 and len(extra) == 1:  # update("T03", status="done")
            values += [extra[0], kwargs[extra[0]]]
        elif extra:
            raise CallError(f"unknown argument(s): {', '.join(extra)}")
        if len(values) != 3:
            raise CallError("needs exactly id, field and value")
        rid = self._row_id(values[0], self.state["rows"])
        field = str(values[1]).strip()
        value = self._coerce(field, values[2])
        old = self.state["rows"][rid][field]
        self.state["rows"][rid][field] = value
        return f"Updated {rid}: {field} changed from {_fmt(old)} to {_fmt(value)}.", False

    def _tool_delete(self, args, kwargs, body):
        rid = self._row_id(self._single(args, kwargs, body, ("id", "row_id")), self.state["rows"])
        del self.state["rows"][rid]
        return f"Deleted row {rid}.", False

    # -- scores -----------------------------------------------------------------------------------
    def _table_matches(self) -> bool:
        def bag(rows: dict) -> Counter:
            return Counter(tuple(sorted((f, _norm(v)) for f, v in row.items())) for row in rows.values())

        return bag(self.state["rows"]) == bag(self.task["target"])

    def _checks_met(self) -> int:
        rows, original = self.state["rows"], self.task["rows"]
        met = 0
        news = [row for rid, row in rows.items() if rid not in original]
        new_checks = [c for c in self.task["checks"] if c[0] == "new"]
        for check in self.task["checks"]:
            if check[0] == "field":
                met += check[1] in rows and _norm(rows[check[1]][check[2]]) == _norm(check[3])
            elif check[0] == "absent":
                met += check[1] not in rows
        if new_checks and news:
            met += max(sum(_norm(row[f]) == _norm(v) for _, f, v in new_checks) for row in news)
        return met

    def _success(self) -> bool:
        if self.task.get("kind") == "query":
            return self.state["correct"]
        return self._table_matches()

    def _progress(self) -> float:
        if self._success():  # a correct answer / the target table completes every subgoal
            return 1.0
        if self.task.get("kind") == "query":
            return len(self.state["facts"]) / (len(self.task["facts"]) + 1)
        return self._checks_met() / (len(self.task["checks"]) + 1)

    def expert_actions(self) -> list[str]:
        """The generated task's own solution as tool calls."""
        if not self.task:
            raise RuntimeError(f"{self.name}: call reset(seed) before expert_actions()")
        return list(self.task["calls"])

    # -- cheap snapshot: copy the mutable tool state, no replay -----------------------------------
    def _copy_state(self) -> Any:
        return copy.deepcopy(self.state)

    def _set_state(self, state: Any) -> None:
        self.state = copy.deepcopy(state)


class ToolQueryEnv(ToolEnv):
    """`tool_query`: ToolEnv with query tasks only."""

    name = "tool_query"
    fixed_kind = "query"


class ToolOperationEnv(ToolEnv):
    """`tool_operation`: ToolEnv with operation tasks only."""

    name = "tool_operation"
    fixed_kind = "operation"


_COMMON = dict(env_type="tool", role="held_out", stands_for="AgentBoard ToolQuery and ToolOperation", source="ours")
register(EnvSpec(name="tools", factory=ToolEnv, **_COMMON,
                 description="Offline tool use: query a local table (search/lookup/calculate/answer) or edit one "
                             "(view/add_row/update/delete); kind by seed or kind=; function-call actions."))
register(EnvSpec(name="tool_query", factory=ToolQueryEnv, env_type="tool", role="held_out",
                 stands_for="AgentBoard ToolQuery", source="ours",
                 description="Questions over a local table answered with search/lookup/calculate/answer."))
register(EnvSpec(name="tool_operation", factory=ToolOperationEnv, env_type="tool", role="held_out",
                 stands_for="AgentBoard ToolOperation", source="ours",
                 description="Edits to a local table (view/add_row/update/delete) until it equals a target table."))
