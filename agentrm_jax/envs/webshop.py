"""`webshop`: a minimal, self-contained text WebShop on the official WebShop data files.

The real WebShop needs a Java/pyserini search index, spaCy models and a Flask
site; none of that is installable offline. This adapter re-implements the
text-level shop on the official data instead:

- catalogue: `items_shuffle_1000.json` (or `items_shuffle.json`): products
  with asin, name, category, query, product_category, pricing,
  customization_options, small/full description;
- attributes: `items_ins_v2_1000.json` (or `items_ins_v2.json`): asin ->
  {"attributes": [...]};
- goals: `items_human_ins.json`: asin -> [{"instruction",
  "instruction_attributes", "instruction_options"}] (WebShop's human goals).

Point it at the folder with the `WEBSHOP_DATA` env var or the `data_dir=`
kwarg (WebShop's `setup.sh -d small` puts these files in `WebShop/data/`);
without them it raises FileNotFoundError saying what to download. Goals get
a price cap as WebShop does (two of the first four multiples of $10 above
the price, the larger one; drawn from a per-goal seeded RNG, so it is
reproducible) appended to the instruction as ", and price lower than X
dollars". Splits: goals are shuffled with a fixed seed; `test` takes the
first min(500, max(1, n // 5)) goals (WebShop's test set is its first 500),
`train` the rest; task `seed` is goal `seed % len(split)`.

Pages and actions (WebShop's text mode, clickables in brackets):

- search page: `search[QUERY]` (free text; `available_actions()` is None);
- results page (10 per page, top 50 by our BM25 over name, category, query
  and attributes): `click[Back to Search]`, `click[Next >]`, `click[< Prev]`,
  `click[ASIN]`;
- item page: `click[OPTION VALUE]` (selects it), `click[Description]`,
  `click[Features]`, `click[< Prev]`, `click[Back to Search]`,
  `click[Buy Now]` (ends the episode);
- description/features page: `click[< Prev]`, `click[Back to Search]`.

Clicks are case-insensitive. Anything else: "Nothing happens. Valid
actions: ...", a wasted turn. Reward on purchase follows WebShop's formula
`r_type * (attribute matches + option matches + [price <= cap]) /
(n_attributes + n_options + 1)`, with spaCy noun parsing replaced by content
words and thefuzz's token-set ratio replaced by token-set containment (so
scores can differ slightly from the official ones). Progress is that reward
(0 until a purchase); success is reward 1. Expert: search the target
product's name, open it (paging if needed), click each goal option, buy.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register

__all__ = ["Catalogue", "WebShopEnv", "find_data", "purchase_reward"]

PRICE_RANGE = [10.0 * i for i in range(1, 100)]
PAGE_SIZE = 10
MAX_RESULTS = 50
MISSING = (
    "webshop: the WebShop data files were not found. Download WebShop's data (github.com/princeton-nlp/WebShop, "
    "`./setup.sh -d small`, or the Google-Drive files it names): items_shuffle_1000.json, "
    "items_ins_v2_1000.json and items_human_ins.json, put them in one folder, and set WEBSHOP_DATA=/that/folder "
    "(or pass data_dir=...). Looked in: {where}"
)
_STOP = {"a", "an", "the", "and", "or", "for", "with", "of", "to", "in", "on", "by", "from", "at", "is", "are",
         "i", "i'm", "im", "need", "want", "would", "like", "looking", "find", "me", "my", "some", "that", "this",
         "it", "be", "price", "lower", "than", "dollars", "pack", "x", "s", "&", "-", "|", ","}


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", str(text).lower())


def _content(text: str) -> set[str]:
    return {t for t in _tokens(text) if t not in _STOP and not t.replace(".", "").isdigit()}


def _token_match(a: str, b: str) -> bool:
    """Token-set containment (stands in for thefuzz.token_set_ratio > 85)."""
    ta, tb = set(_tokens(a)), set(_tokens(b))
    return bool(ta and tb) and (ta <= tb or tb <= ta)


def find_data(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The catalogue, attribute and human-goal files in `data_dir` or $WEBSHOP_DATA (FileNotFoundError if absent)."""
    folder = data_dir or os.environ.get("WEBSHOP_DATA")
    if not folder:
        raise FileNotFoundError(MISSING.format(where="(no data_dir and WEBSHOP_DATA is unset)"))
    root = Path(folder)
    choices = {"items": ("items_shuffle_1000.json", "items_shuffle.json"),
               "attributes": ("items_ins_v2_1000.json", "items_ins_v2.json"),
               "goals": ("items_human_ins.json",)}
    found = {}
    for key, names in choices.items():
        hit = next((root / n for n in names if (root / n).exists()), None)
        if hit is None:
            raise FileNotFoundError(MISSING.format(where=f"{root} (missing {' or '.join(names)})"))
        found[key] = hit
    return found


def _price(pricing: Any) -> float:
    values = [float(v.replace(",", "")) for v in re.findall(r"\d[\d,]*\.?\d*", json.dumps(pricing))]
    return min(values) if values else 100.0


class Catalogue:
    """Products, BM25 search index and goals loaded from the WebShop data files."""

    def __init__(self, paths: dict[str, Path]):
        raw = json.loads(paths["items"].read_text())
        attributes = json.loads(paths["attributes"].read_text())
        human = json.loads(paths["goals"].read_text())
        self.products: dict[str, dict] = {}
        for item in raw:
            asin = item.get("asin")
            if not asin or asin in self.products:
                continue
            options = {}
            for name, values in (item.get("customization_options") or {}).items():
                options[name.lower()] = [str(v["value"] if isinstance(v, dict) else v) for v in values]
            self.products[asin] = {
                "asin": asin, "name": str(item.get("name") or ""), "category": str(item.get("category") or ""),
                "query": str(item.get("query") or ""), "product_category": str(item.get("product_category") or ""),
                "price": _price(item.get("pricing")), "options": options,
                "attributes": list((attributes.get(asin) or {}).get("attributes", [])),
                "description": str(item.get("full_description") or item.get("small_description") or ""),
                "features": [str(x) for x in (item.get("small_description") or [])]
                if isinstance(item.get("small_description"), list) else [],
            }
        self._build_index()
        goals = []
        for asin in sorted(human):
            if asin not in self.products:
                continue
            for i, ins in enumerate(human[asin]):
                if not ins.get("instruction_attributes"):
                    continue
                goals.append(self._goal(asin, i, ins))
        random.Random(233).shuffle(goals)
        n_test = min(500, max(1, len(goals) // 5))
        self.splits = {"test": goals[:n_test], "train": goals[n_test:]}

    def _goal(self, asin: str, index: int, ins: dict) -> dict:
        product = self.products[asin]
        upper, price_text = ins.get("price_upper"), ""
        if upper is None:
            choices = [p for p in PRICE_RANGE if p > product["price"]][:4]
            if len(choices) >= 2:
                upper = max(random.Random(f"webshop/{asin}/{index}").sample(choices, 2))
            else:
                upper = 1_000_000.0
        if upper < 1_000_000:
            price_text = f", and price lower than {upper:.2f} dollars"
        options = ins.get("instruction_options") or []
        options = list(options.values()) if isinstance(options, dict) else list(options)
        return {"asin": asin, "instruction": str(ins["instruction"]).strip().rstrip(".") + price_text,
                "attributes": list(ins["instruction_attributes"]), "options": [str(o) for o in options],
                "price_upper": float(upper)}

    # -- search -----------------------------------------------------------------------------------
    def _build_index(self) -> None:
        self._postings: dict[str, dict[str, int]] = defaultdict(dict)
        self._length: dict[str, int] = {}
        for asin, p in self.products.items():
            words = _tokens(" ".join([p["name"], p["category"], p["query"], p["product_category"],
                                      " ".join(p["attributes"])]))
            self._length[asin] = len(words)
            for word, count in Counter(words).items():
                self._postings[word][asin] = count
        self._avg = sum(self._length.values()) / max(len(self._length), 1)

    def search(self, query: str) -> list[str]:
        """Up to MAX_RESULTS asins ranked by BM25 (k1=1.2, b=0.75), ties by asin."""
        n, scores = len(self.products), defaultdict(float)
        for word in set(_tokens(query)):
            posting = self._postings.get(word, {})
            if not posting:
                continue
            idf = math.log(1 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            for asin, tf in posting.items():
                norm = tf + 1.2 * (1 - 0.75 + 0.75 * self._length[asin] / self._avg)
                scores[asin] += idf * tf * 2.2 / norm
        return [a for a, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_RESULTS]]


_CATALOGUES: dict[str, Catalogue] = {}


def purchase_reward(product: dict, goal: dict, goal_product: dict, chosen: dict[str, str]) -> float:
    """WebShop's purchase reward (type x fraction of attributes, options and price matched); see the module doc."""
    desired = _content(goal_product["name"])
    title_score = len(_content(product["name"]) & desired) / len(desired) if desired else 0.2
    cats = lambda p: {c.strip().lower() for c in p["product_category"].split("›") if c.strip()}  # noqa: E731
    match = (product["query"] == goal_product["query"] or len(cats(product) & cats(goal_product)) >= 2
             or title_score > 0.2)
    r_type = 1.0 if match else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    text = " ".join([product["name"], product["description"], *product["features"]]).lower()
    n_att = sum(any(_token_match(p, g) for p in product["attributes"]) or g.lower() in text
                for g in goal["attributes"])
    n_opt = 0
    for value in chosen.values():
        if any(_token_match(value, g) for g in goal["options"]) or value.lower() in text:
            n_opt += 1
    r_price = float(product["price"] <= goal["price_upper"])
    total = (n_att + n_opt + r_price) / (len(goal["attributes"]) + len(goal["options"]) + 1)
    return float(min(total * r_type, 1.0))


class WebShopEnv(ReplayEnv):
    """A text WebShop over the official data files (see the module docstring)."""

    name = "webshop"

    def __init__(self, *, split: str = "train", max_turns: int = 15, data_dir: str | os.PathLike | None = None):
        super().__init__(split=split, max_turns=max_turns)
        paths = find_data(data_dir)
        key = str(paths["items"].resolve())
        if key not in _CATALOGUES:
            _CATALOGUES[key] = Catalogue(paths)
        self.catalogue = _CATALOGUES[key]
        if not self.catalogue.splits[split]:
            raise FileNotFoundError(f"webshop: no {split} goals in {paths['goals']}")
        self.goal: dict | None = None
        self._page: dict = {}
        self._history: list[dict] = []
        self._reward = 0.0
        self._bought = False

    # -- pages ------------------------------------------------------------------------------------
    def _render(self) -> str:
        page, head = self._page, f"Instruction: {self.goal['instruction']}"
        kind = page["kind"]
        if kind == "search":
            return f"WebShop\n{head}\n[Search]"
        if kind == "results":
            start = page["page"] * PAGE_SIZE
            lines = [head, "[Back to Search]", f"Page {page['page'] + 1} (Total results: {len(page['results'])})"]
            if page["page"] > 0:
                lines.append("[< Prev]")
            if start + PAGE_SIZE < len(page["results"]):
                lines.append("[Next >]")
            for asin in page["results"][start:start + PAGE_SIZE]:
                p = self.catalogue.products[asin]
                lines += [f"[{asin}]", p["name"], f"${p['price']:.2f}"]
            return "\n".join(lines)
        p = self.catalogue.products[page["asin"]]
        if kind == "item":
            lines = [head, "[Back to Search]", "[< Prev]"]
            for name, values in p["options"].items():
                lines.append(f"{name}: " + " ".join(f"[{v}]" for v in values))
            chosen = ", ".join(f"{k}: {v}" for k, v in page["chosen"].items())
            lines += [p["name"], f"Price: ${p['price']:.2f}", "Rating: N.A."]
            if chosen:
                lines.append(f"Selected: {chosen}")
            lines += ["[Description]", "[Features]", "[Buy Now]"]
            return "\n".join(lines)
        body = p["description"] if kind == "description" else "\n".join(p["features"]) or "No features listed."
        return "\n".join([head, "[Back to Search]", "[< Prev]", body or "No description."])

    def _clickables(self) -> list[str]:
        page, kind = self._page, self._page["kind"]
        if kind == "search":
            return []
        if kind == "results":
            out = ["Back to Search"] + (["< Prev"] if page["page"] > 0 else [])
            start = page["page"] * PAGE_SIZE
            if start + PAGE_SIZE < len(page["results"]):
                out.append("Next >")
            return out + page["results"][start:start + PAGE_SIZE]
        if kind == "item":
            p = self.catalogue.products[page["asin"]]
            return (["Back to Search", "< Prev"] + [v for vs in p["options"].values() for v in vs]
                    + ["Description", "Features", "Buy Now"])
        return ["Back to Search", "< Prev"]

    def _go(self, page: dict) -> None:
        self._history.append(self._page)
        self._page = page

    # -- ReplayEnv hooks --------------------------------------------------------------------------
    def _reset(self, seed: int) -> str:
        pool = self.catalogue.splits[self.split]
        self.goal = pool[seed % len(pool)]
        self._page, self._history, self._reward, self._bought = {"kind": "search"}, [], 0.0, False
        self._instruction = self.goal["instruction"]
        return self._render()

    def _invalid(self, action: str) -> str:
        valid = self.available_actions() or ["search[<your query>]"]
        return f"Nothing happens: {action!r} is not a valid action here. Valid actions: {', '.join(valid)}."

    def _step(self, action: str) -> tuple[str, bool]:
        match = re.fullmatch(r"(search|click)\s*\[(.*)\]\s*\.?", action.strip(), re.I | re.S)
        if match is None:
            return self._invalid(action), False
        verb, arg = match.group(1).lower(), " ".join(match.group(2).split())
        if verb == "search":
            if self._page["kind"] != "search" or not arg:
                return self._invalid(action), False
            self._go({"kind": "results", "query": arg, "results": self.catalogue.search(arg), "page": 0})
            return self._render(), False
        target = next((c for c in self._clickables() if c.lower() == arg.lower()), None)
        if target is None:
            return self._invalid(action), False
        page = self._page
        if target == "Back to Search":
            self._go({"kind": "search"})
        elif target == "< Prev":
            if page["kind"] == "results" and page["page"] > 0:
                self._go({**page, "page": page["page"] - 1})
            else:
                self._page = self._history.pop() if self._history else {"kind": "search"}
        elif target == "Next >":
            self._go({**page, "page": page["page"] + 1})
        elif page["kind"] == "results":
            self._go({"kind": "item", "asin": target, "chosen": {}})
        elif target in ("Description", "Features"):
            self._go({"kind": target.lower(), "asin": page["asin"]})
        elif target == "Buy Now":
            product = self.catalogue.products[page["asin"]]
            goal_product = self.catalogue.products[self.goal["asin"]]
            self._reward = purchase_reward(product, self.goal, goal_product, page["chosen"])
            self._bought = True
            return f"Thank you for shopping with us! Your purchase scored {self._reward:.2f}.", True
        else:  # an option value
            product = self.catalogue.products[page["asin"]]
            name = next(n for n, vs in product["options"].items() if target in vs)
            self._page = {**page, "chosen": {**page["chosen"], name: target}}
            return f"You have clicked {target}.\n{self._render()}", False
        return self._render(), False

    def _success(self) -> bool:
        return self._bought and self._reward >= 1.0 - 1e-9

    def _progress(self) -> float:
        return self._reward

    def available_actions(self) -> list[str] | None:
        """The clickable buttons as click[...] actions; None on the search page (search[...] takes free text)."""
        if self.goal is None or self._page.get("kind") == "search":
            return None
        return [f"click[{c}]" for c in self._clickables()]

    def expert_actions(self) -> list[str]:
        """Search the target's name, open it (paging as needed), click each goal option, buy."""
        if self.goal is None:
            raise RuntimeError("webshop: call reset(seed) before expert_actions()")
        product = self.catalogue.products[self.goal["asin"]]
        query = " ".join(product["name"].split()[:12]) or self.goal["instruction"]
        results = self.catalogue.search(query)
        if self.goal["asin"] not in results:
            return [f"search[{query}]"]
        actions = [f"search[{query}]"] + ["click[Next >]"] * (results.index(self.goal["asin"]) // PAGE_SIZE)
        actions.append(f"click[{self.goal['asin']}]")
        for wanted in self.goal["options"]:
            for values in product["options"].values():
                hit = next((v for v in values if v.lower() == wanted.lower()), None) or \
                    next((v for v in values if _token_match(v, wanted)), None)
                if hit is not None:
                    actions.append(f"click[{hit}]")
                    break
        return actions + ["click[Buy Now]"]


register(EnvSpec(
    name="webshop", factory=WebShopEnv, env_type="web", role="held_in", stands_for="AgentRM WebShop",
    source="ours, on WebShop's official data files (items_shuffle / items_ins_v2 / items_human_ins)",
    description="Text WebShop: search[...] / click[...] over the official catalogue with our BM25; progress = "
                "WebShop's attribute/option/price purchase reward. Needs WEBSHOP_DATA or data_dir=.",
))
