"""The tools environments: `ToolEnv` (`tools`, query or operation kind by seed) and its fixed-kind subclasses
`ToolQueryEnv` (`tool_query`) and `ToolOperationEnv` (`tool_operation`), registered here at import.
The task family is described in the `agentrm_jax.envs.tools` package docstring.
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from typing import Any

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register, task_seed
from agentrm_jax.envs.tools.calculator import safe_calculate
from agentrm_jax.envs.tools.calls import CallError, _as_number, _fmt, _norm, _value, answer_matches, parse_call
from agentrm_jax.envs.tools.tasks import generate_operation_task, generate_query_task

__all__ = ["ToolEnv", "ToolOperationEnv", "ToolQueryEnv"]

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
    """Offline tool-use tasks (see the package docstring). `kind` is "query", "operation" or None (by seed)."""

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
