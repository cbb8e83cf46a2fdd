"""`ShopEnv`: WebShop's text-mode pages and actions over any `Catalogue`; registered as `shop` (generated store).

Pages (clickables in brackets, as WebShop's text mode shows them):

- search page: `search[QUERY]` (free text; `available_actions()` is None);
- results page (10 per page, top 50 by the catalogue's BM25): `click[Back to Search]`,
  `click[Next >]`, `click[< Prev]`, `click[ITEM ID]` (or the item's title);
- item page: `click[OPTION VALUE]` (selects it in its dimension), `click[Description]`,
  `click[Features]`, `click[< Prev]`, `click[Back to Search]`, `click[Buy Now]` (ends the episode);
- description / features page: `click[< Prev]`, `click[Back to Search]`.

Clicks are case-insensitive. Anything else is answered "Nothing happens: ... Valid
actions: ..." and counts as a turn. Progress is the purchase reward (WebShop's
formula, see `reward_formula`): 0 until `click[Buy Now]`, then the reward of what
was bought, so it is monotone in [0, 1] and the episode's final value; success is
reward 1. The expert searches the target's title, pages to it, opens it, clicks
the goal's option values and buys; `expert_actions_from_here` continues from any
page (back to search first when the target is not on the page).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register
from agentrm_jax.envs.shop.catalogue import Catalogue, Goal
from agentrm_jax.envs.shop.generated import DEFAULT_PRODUCTS_PER_TYPE, GeneratedCatalogue

__all__ = ["PAGE_SIZE", "Page", "ShopEnv"]

PAGE_SIZE = 10
NAV = ("Back to Search", "< Prev", "Next >", "Description", "Features", "Buy Now")
HELP = "Actions: search[your query] on this page; then click[X] for any button [X] a page shows."
_GENERATED: dict[tuple[int, int], GeneratedCatalogue] = {}


@dataclass(frozen=True)
class Page:
    """What the browser shows: kind is search / results / item / description / features."""

    kind: str
    query: str = ""
    results: tuple[str, ...] = ()
    number: int = 0
    item: str = ""
    chosen: tuple[tuple[str, str], ...] = ()  # (dimension, value) in the order first chosen


def _choose(chosen: tuple[tuple[str, str], ...], dimension: str, value: str) -> tuple[tuple[str, str], ...]:
    if any(d == dimension for d, _ in chosen):
        return tuple((d, value if d == dimension else v) for d, v in chosen)
    return (*chosen, (dimension, value))


def generated_catalogue(seed: int = 0, products_per_type: int = DEFAULT_PRODUCTS_PER_TYPE) -> GeneratedCatalogue:
    """The generated store for (seed, products_per_type), built once per process."""
    key = (seed, products_per_type)
    if key not in _GENERATED:
        _GENERATED[key] = GeneratedCatalogue(seed, products_per_type)
    return _GENERATED[key]


class ShopEnv(ReplayEnv):
    """WebShop-like shopping over a catalogue (see the module docstring).

    catalogue: any `Catalogue`; by default the generated store for `catalogue_seed` with
    `products_per_type` products of each type (the difficulty knob: more same-type distractors).
    """

    name = "shop"

    def __init__(self, *, split: str = "train", max_turns: int = 15, catalogue: Catalogue | None = None,
                 catalogue_seed: int = 0, products_per_type: int = DEFAULT_PRODUCTS_PER_TYPE):
        super().__init__(split=split, max_turns=max_turns)
        self.catalogue = catalogue if catalogue is not None else generated_catalogue(catalogue_seed,
                                                                                     products_per_type)
        self.goal: Goal | None = None
        self._page = Page("search")
        self._history: tuple[Page, ...] = ()
        self._reward = 0.0
        self._bought = False

    # -- pages ------------------------------------------------------------------------------------
    def _render(self) -> str:
        page, head = self._page, f"Instruction: {self.goal.instruction}"
        if page.kind == "search":
            return f"WebShop\n{head}\n{HELP}\n[Search]"
        if page.kind == "results":
            start = page.number * PAGE_SIZE
            lines = [head, "[Back to Search]", f"Page {page.number + 1} (Total results: {len(page.results)})"]
            if page.number > 0:
                lines.append("[< Prev]")
            if start + PAGE_SIZE < len(page.results):
                lines.append("[Next >]")
            for pid in page.results[start:start + PAGE_SIZE]:
                p = self.catalogue.products[pid]
                lines += [f"[{pid}]", p.name, f"${p.price:.2f}"]
            if not page.results:
                lines.append("No results.")
            return "\n".join(lines)
        p = self.catalogue.products[page.item]
        if page.kind == "item":
            lines = [head, "[Back to Search]", "[< Prev]"]
            for name, values in p.options:
                lines.append(f"{name}: " + " ".join(f"[{v}]" for v in values))
            lines += [p.name, f"Price: ${p.price:.2f}", "Rating: N.A."]
            if page.chosen:
                lines.append("Selected: " + ", ".join(f"{d}: {v}" for d, v in page.chosen))
            lines += ["[Description]", "[Features]", "[Buy Now]"]
            return "\n".join(lines)
        body = p.description if page.kind == "description" else "\n".join(p.features) or "No features listed."
        return "\n".join([head, "[Back to Search]", "[< Prev]", body or "No description."])

    def _clickables(self) -> list[str]:
        page = self._page
        if page.kind == "search":
            return []
        if page.kind == "results":
            out = ["Back to Search"] + (["< Prev"] if page.number > 0 else [])
            start = page.number * PAGE_SIZE
            if start + PAGE_SIZE < len(page.results):
                out.append("Next >")
            return out + list(page.results[start:start + PAGE_SIZE])
        if page.kind == "item":
            values = self.catalogue.products[page.item].option_values()
            return ["Back to Search", "< Prev", *values, "Description", "Features", "Buy Now"]
        return ["Back to Search", "< Prev"]

    def _resolve(self, arg: str) -> str | None:
        """The clickable `arg` names (case-insensitive), or on a results page an item named by its title."""
        wanted = arg.lower()
        hit = next((c for c in self._clickables() if c.lower() == wanted), None)
        if hit is None and self._page.kind == "results":
            hit = next((c for c in self._clickables() if c in self.catalogue.products
                        and " ".join(self.catalogue.products[c].name.lower().split()) == wanted), None)
        return hit

    def _go(self, page: Page) -> None:
        self._history = (*self._history, self._page)
        self._page = page

    def _invalid(self, action: str) -> str:
        valid = self.available_actions() or ["search[<your query>]"]
        return f"Nothing happens: {action!r} is not a valid action here. Valid actions: {', '.join(valid)}."

    # -- ReplayEnv hooks --------------------------------------------------------------------------
    def _reset(self, seed: int) -> str:
        self.goal = self.catalogue.goal(self.split, seed)
        self._page, self._history, self._reward, self._bought = Page("search"), (), 0.0, False
        self._instruction = self.goal.instruction
        return self._render()

    def _step(self, action: str) -> tuple[str, bool]:
        match = re.fullmatch(r"(search|click)\s*\[(.*)\]\s*\.?", action.strip(), re.I | re.S)
        if match is None:
            return self._invalid(action), False
        verb, arg = match.group(1).lower(), " ".join(match.group(2).split())
        if verb == "search":
            if self._page.kind != "search" or not arg:
                return self._invalid(action), False
            self._go(Page("results", query=arg, results=tuple(self.catalogue.search(arg))))
            return self._render(), False
        target = self._resolve(arg)
        if target is None:
            return self._invalid(action), False
        page = self._page
        if target == "Back to Search":
            self._go(Page("search"))
        elif target == "< Prev":
            if page.kind == "results" and page.number > 0:
                self._go(replace(page, number=page.number - 1))
            else:
                self._page = self._history[-1] if self._history else Page("search")
                self._history = self._history[:-1]
        elif target == "Next >":
            self._go(replace(page, number=page.number + 1))
        elif page.kind == "results":
            self._go(Page("item", item=target))
        elif target in ("Description", "Features"):
            self._go(Page(target.lower(), item=page.item))
        elif target == "Buy Now":
            product = self.catalogue.products[page.item]
            self._reward = self.catalogue.reward(product, self.goal, dict(page.chosen))
            self._bought = True
            return f"Thank you for shopping with us! Your purchase scored {self._reward:.2f}.", True
        else:  # an option value
            dimension = self.catalogue.products[page.item].dimension_of(target)
            self._page = replace(page, chosen=_choose(page.chosen, dimension, target))
            return f"You have clicked {target}.\n{self._render()}", False
        return self._render(), False

    def _success(self) -> bool:
        return self._bought and self._reward >= 1.0 - 1e-9

    def _progress(self) -> float:
        return self._reward

    def available_actions(self) -> list[str] | None:
        """The clickable buttons as click[...] actions; None on the search page (search[...] takes free text)."""
        if self.goal is None or self._page.kind == "search":
            return None
        return [f"click[{c}]" for c in self._clickables()]

    # -- expert -------------------------------------------------------------------------------------
    def _finish(self, item: Page) -> list[str]:
        """From the target's item page: click the goal's option values not yet selected, then buy."""
        picked = {v.lower() for _, v in item.chosen}
        return [f"click[{v}]" for v in self.catalogue.expert_choices(self.goal) if v.lower() not in picked] + [
            "click[Buy Now]"]

    def _from_results(self, page: Page) -> list[str]:
        at = page.results.index(self.goal.target) // PAGE_SIZE
        moves = ["click[Next >]"] * (at - page.number) + ["click[< Prev]"] * (page.number - at)
        return moves + [f"click[{self.goal.target}]"] + self._finish(Page("item", item=self.goal.target))

    def _from_search(self) -> list[str]:
        query = self.catalogue.expert_query(self.goal)
        results = tuple(self.catalogue.search(query))
        if self.goal.target not in results:
            return [f"search[{query}]"]
        return [f"search[{query}]"] + self._from_results(Page("results", query=query, results=results))

    def expert_actions(self) -> list[str]:
        """From the search page: search the target's title, page to it, open it, click the goal's options, buy."""
        if self.goal is None:
            raise RuntimeError(f"{self.name}: call reset(seed) before expert_actions()")
        return self._from_search()

    def expert_actions_from_here(self) -> list[str]:
        """The expert's plan from the current page ([] once bought)."""
        if self.goal is None:
            raise RuntimeError(f"{self.name}: call reset(seed) before expert_actions_from_here()")
        page, target = self._page, self.goal.target
        if self._bought:
            return []
        if page.kind in ("description", "features") and page.item == target and self._history \
                and self._history[-1].kind == "item" and self._history[-1].item == target:
            return ["click[< Prev]"] + self._finish(self._history[-1])
        if page.kind == "item" and page.item == target:
            return self._finish(page)
        if page.kind == "results" and target in page.results:
            return self._from_results(page)
        return ([] if page.kind == "search" else ["click[Back to Search]"]) + self._from_search()

    # -- cheap snapshot: pages are immutable values ---------------------------------------------------
    def _copy_state(self) -> Any:
        return (self._page, self._history, self._reward, self._bought)

    def _set_state(self, state: Any) -> None:
        self._page, self._history, self._reward, self._bought = state


register(EnvSpec(
    name="shop", factory=ShopEnv, env_type="web", role="held_in", stands_for="AgentRM WebShop", source="ours",
    description="WebShop-like shopping on a store generated from a seed (24 product types, products_per_type "
                "each): search[...] / click[...] pages, BM25 search; progress = WebShop's attribute/option/price "
                "purchase reward on buying.",
))
