"""Task generation for the tools envs: the seeded local tables (employees, products, books; tasks, inventory) and
the query and operation tasks drawn over them, each with its own solution as tool calls (the expert).
"""

from __future__ import annotations

import copy
import random
from typing import Any

from agentrm_jax.envs.tools.calls import _fmt

__all__ = ["generate_operation_task", "generate_query_task"]

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
