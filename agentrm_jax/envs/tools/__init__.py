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

Layout: `calls.py` (parsing calls and argument values, matching answers), `calculator.py` (`safe_calculate`),
`tasks.py` (the seeded tables and tasks), `env.py` (the envs and their registration).
"""

from agentrm_jax.envs.tools.calculator import safe_calculate
from agentrm_jax.envs.tools.calls import CallError, answer_matches, parse_call
from agentrm_jax.envs.tools.env import ToolEnv, ToolOperationEnv, ToolQueryEnv
from agentrm_jax.envs.tools.tasks import generate_operation_task, generate_query_task

__all__ = ["CallError", "ToolEnv", "ToolOperationEnv", "ToolQueryEnv", "answer_matches", "generate_operation_task",
           "generate_query_task", "parse_call", "safe_calculate"]
