"""Products, goals, WebShop's reward formula and the search index shared by every catalogue source.

A catalogue source (the generated store in `generated.py`, WebShop's data files
in `agentrm_jax.envs.webshop`) subclasses `Catalogue` and says how a task's goal
is drawn and how a purchase is matched against it; the pages, actions and
expert in `env.py` work on any of them.
"""

from __future__ import annotations

import abc
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["MAX_RESULTS", "Catalogue", "Goal", "Product", "price_cap", "reward_formula", "tokens"]

MAX_RESULTS = 50
PRICE_RANGE = [10.0 * i for i in range(1, 100)]


def tokens(text: str) -> list[str]:
    """Lower-case word tokens (decimals kept whole: "2.5")."""
    return re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", str(text).lower())


@dataclass(frozen=True)
class Product:
    """One item of a catalogue.

    query: the product type (generated store) or WebShop's search query the item came from
    product_category: "Department › ... › Type"
    options: (dimension, values) pairs in display order, e.g. (("size", ("small", "large")),)
    """

    id: str
    name: str
    category: str
    query: str
    product_category: str
    price: float
    options: tuple[tuple[str, tuple[str, ...]], ...] = ()
    attributes: tuple[str, ...] = ()
    description: str = ""
    features: tuple[str, ...] = ()

    def option_values(self) -> list[str]:
        """Every option value, dimension by dimension."""
        return [v for _, values in self.options for v in values]

    def dimension_of(self, value: str) -> str | None:
        """The option dimension `value` belongs to (the first one, case-insensitive), or None."""
        for name, values in self.options:
            if any(v.lower() == value.lower() for v in values):
                return name
        return None


@dataclass(frozen=True)
class Goal:
    """A shopping task: the product it was written from, its text and what the reward checks."""

    target: str
    instruction: str
    attributes: tuple[str, ...]
    options: tuple[str, ...]
    price_upper: float


def reward_formula(r_type: float, attributes_matched: int, n_attributes: int, options_matched: int,
                   n_options: int, price_ok: bool) -> float:
    """WebShop's purchase reward (Yao et al. 2022, eq. 1), clipped to [0, 1]:

        r = r_type * (|U_att ∩ Y_att| + |U_opt ∩ Y_opt| + 1[y_price <= u_price]) / (|U_att| + |U_opt| + 1)
    """
    total = (attributes_matched + options_matched + float(bool(price_ok))) / (n_attributes + n_options + 1)
    return float(min(max(r_type * total, 0.0), 1.0))


def price_cap(price: float, rng) -> float:
    """WebShop's budget for a product: the larger of two of the first four multiples of $10 above its price."""
    choices = [p for p in PRICE_RANGE if p > price][:4]
    if len(choices) < 2:
        return 1_000_000.0
    return max(rng.sample(choices, 2))


class Catalogue(abc.ABC):
    """Products by id with a BM25 index over name, category, query, product category and attributes."""

    def __init__(self, products: Iterable[Product]):
        self.products: dict[str, Product] = {}
        for p in products:
            self.products.setdefault(p.id, p)
        self._postings: dict[str, dict[str, int]] = defaultdict(dict)
        self._length: dict[str, int] = {}
        for pid, p in self.products.items():
            words = tokens(" ".join([p.name, p.category, p.query, p.product_category, " ".join(p.attributes)]))
            self._length[pid] = len(words)
            for word, count in Counter(words).items():
                self._postings[word][pid] = count
        self._avg = sum(self._length.values()) / max(len(self._length), 1)

    def search(self, query: str) -> list[str]:
        """Up to MAX_RESULTS product ids ranked by BM25 (k1=1.2, b=0.75), ties by id."""
        n, scores = len(self.products), defaultdict(float)
        for word in set(tokens(query)):
            posting = self._postings.get(word, {})
            if not posting:
                continue
            idf = math.log(1 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            for pid, tf in posting.items():
                norm = tf + 1.2 * (1 - 0.75 + 0.75 * self._length[pid] / self._avg)
                scores[pid] += idf * tf * 2.2 / norm
        return [p for p, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_RESULTS]]

    @abc.abstractmethod
    def goal(self, split: str, seed: int) -> Goal:
        """Task `seed` of `split` (the same arguments always give the same goal)."""

    @abc.abstractmethod
    def reward(self, product: Product, goal: Goal, chosen: Mapping[str, str]) -> float:
        """The purchase reward of buying `product` with options `chosen` (dimension -> value) for `goal`."""

    def expert_query(self, goal: Goal) -> str:
        """What the expert searches for: the target's name (its first 12 words)."""
        return " ".join(self.products[goal.target].name.split()[:12]) or goal.instruction

    def expert_choices(self, goal: Goal) -> list[str]:
        """The target's option values the expert clicks: those equal to a goal option (case-insensitive)."""
        target, out = self.products[goal.target], []
        for wanted in goal.options:
            hit = next((v for v in target.option_values() if v.lower() == wanted.lower()), None)
            if hit is not None:
                out.append(hit)
        return out
