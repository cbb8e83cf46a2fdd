"""`webshop`: the `shop` environment's pages and actions (`agentrm_jax.envs.shop.ShopEnv`) on the official
WebShop data files instead of the generated store.

The real WebShop needs a Java/pyserini search index, spaCy models and a Flask
site; none of that is installable offline. This adapter is a catalogue
source for the text-level shop of `agentrm_jax.envs.shop` (same pages, actions,
BM25 search and expert) read from the official data:

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

Pages and actions are those of `agentrm_jax.envs.shop.env` (items are
clicked by ASIN). Reward on purchase follows WebShop's formula
`r_type * (attribute matches + option matches + [price <= cap]) /
(n_attributes + n_options + 1)`, with spaCy noun parsing replaced by content
words and thefuzz's token-set ratio replaced by token-set containment (so
scores can differ slightly from the official ones). Progress is that reward
(0 until a purchase); success is reward 1. Expert: search the target
product's name, open it (paging if needed), click the option values that
match a goal option (exactly, else by token containment), buy.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentrm_jax.envs.base import EnvSpec, register
from agentrm_jax.envs.shop.catalogue import MAX_RESULTS, Catalogue, Goal, Product, price_cap, reward_formula
from agentrm_jax.envs.shop.env import ShopEnv

__all__ = ["MAX_RESULTS", "WebShopCatalogue", "WebShopEnv", "find_data", "purchase_reward"]

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


def _product(item: dict, attributes: dict) -> Product:
    asin = item["asin"]
    options = []
    for name, values in (item.get("customization_options") or {}).items():
        options.append((name.lower(), tuple(str(v["value"] if isinstance(v, dict) else v) for v in values)))
    small = item.get("small_description")
    return Product(
        id=asin, name=str(item.get("name") or ""), category=str(item.get("category") or ""),
        query=str(item.get("query") or ""), product_category=str(item.get("product_category") or ""),
        price=_price(item.get("pricing")), options=tuple(options),
        attributes=tuple((attributes.get(asin) or {}).get("attributes", [])),
        description=str(item.get("full_description") or small or ""),
        features=tuple(str(x) for x in small) if isinstance(small, list) else ())


def purchase_reward(product: Product, goal: Goal, goal_product: Product, chosen: Mapping[str, str]) -> float:
    """WebShop's purchase reward (type x fraction of attributes, options and price matched); see the module doc."""
    desired = _content(goal_product.name)
    title_score = len(_content(product.name) & desired) / len(desired) if desired else 0.2
    cats = lambda p: {c.strip().lower() for c in p.product_category.split("›") if c.strip()}  # noqa: E731
    match = (product.query == goal_product.query or len(cats(product) & cats(goal_product)) >= 2
             or title_score > 0.2)
    r_type = 1.0 if match else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    text = " ".join([product.name, product.description, *product.features]).lower()
    n_att = sum(any(_token_match(p, g) for p in product.attributes) or g.lower() in text
                for g in goal.attributes)
    n_opt = sum(any(_token_match(value, g) for g in goal.options) or value.lower() in text
                for value in chosen.values())
    return reward_formula(r_type, n_att, len(goal.attributes), n_opt, len(goal.options),
                          product.price <= goal.price_upper)


class WebShopCatalogue(Catalogue):
    """Products, BM25 search index and human goals loaded from the WebShop data files."""

    def __init__(self, paths: dict[str, Path]):
        raw = json.loads(paths["items"].read_text())
        attributes = json.loads(paths["attributes"].read_text())
        human = json.loads(paths["goals"].read_text())
        super().__init__(_product(item, attributes) for item in raw if item.get("asin"))
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
        self.splits: dict[str, list[Goal]] = {"test": goals[:n_test], "train": goals[n_test:]}

    def _goal(self, asin: str, index: int, ins: dict) -> Goal:
        upper, price_text = ins.get("price_upper"), ""
        if upper is None:
            upper = price_cap(self.products[asin].price, random.Random(f"webshop/{asin}/{index}"))
        if upper < 1_000_000:
            price_text = f", and price lower than {upper:.2f} dollars"
        options = ins.get("instruction_options") or []
        options = list(options.values()) if isinstance(options, dict) else list(options)
        return Goal(target=asin, instruction=str(ins["instruction"]).strip().rstrip(".") + price_text,
                    attributes=tuple(ins["instruction_attributes"]), options=tuple(str(o) for o in options),
                    price_upper=float(upper))

    def goal(self, split: str, seed: int) -> Goal:
        """Goal `seed % n` of the split's n goals."""
        pool = self.splits[split]
        return pool[seed % len(pool)]

    def reward(self, product: Product, goal: Goal, chosen: Mapping[str, str]) -> float:
        """`purchase_reward` against the goal's own product."""
        return purchase_reward(product, goal, self.products[goal.target], chosen)

    def expert_choices(self, goal: Goal) -> list[str]:
        """For each goal option, the first of the target's values equal to it, else containing its tokens."""
        product, out = self.products[goal.target], []
        for wanted in goal.options:
            for _, values in product.options:
                hit = next((v for v in values if v.lower() == wanted.lower()), None) or \
                    next((v for v in values if _token_match(v, wanted)), None)
                if hit is not None:
                    out.append(hit)
                    break
        return out


_CATALOGUES: dict[str, WebShopCatalogue] = {}


class WebShopEnv(ShopEnv):
    """The shop environment over the official WebShop data files (see the module docstring)."""

    name = "webshop"

    def __init__(self, *, split: str = "train", max_turns: int = 15, data_dir: str | os.PathLike | None = None):
        paths = find_data(data_dir)
        key = str(paths["items"].resolve())
        if key not in _CATALOGUES:
            _CATALOGUES[key] = WebShopCatalogue(paths)
        super().__init__(split=split, max_turns=max_turns, catalogue=_CATALOGUES[key])
        if not self.catalogue.splits[split]:
            raise FileNotFoundError(f"webshop: no {split} goals in {paths['goals']}")


register(EnvSpec(
    name="webshop", factory=WebShopEnv, env_type="web", role="held_in", stands_for="AgentRM WebShop",
    source="ours, on WebShop's official data files (items_shuffle / items_ins_v2 / items_human_ins)",
    description="Text WebShop: search[...] / click[...] over the official catalogue with our BM25; progress = "
                "WebShop's attribute/option/price purchase reward. Needs WEBSHOP_DATA or data_dir=.",
))
