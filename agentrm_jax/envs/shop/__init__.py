"""`shop`: a WebShop-like shopping environment that runs offline, standing in for AgentRM's WebShop.

The pages, actions, reward and expert are WebShop's text mode re-implemented
(`env.py`) over a catalogue source: the store generated from a seed
(`generated.py`, registered as `shop`) or WebShop's official data files
(`agentrm_jax.envs.webshop`, registered as `webshop`, the same `ShopEnv` code).
Importing this package registers `shop`.

Difficulty knob: `make("shop", products_per_type=N)` (default 12, so 24 types x
12 = 288 products): each product has N - 1 same-type distractors sharing some
of its attributes. The expert takes 3 to 5 turns (search, open, one click per
goal option, buy; mean about 4.4), whatever N.
"""

from agentrm_jax.envs.shop.catalogue import MAX_RESULTS, Catalogue, Goal, Product, price_cap, reward_formula
from agentrm_jax.envs.shop.env import PAGE_SIZE, Page, ShopEnv, generated_catalogue
from agentrm_jax.envs.shop.generated import (DEFAULT_PRODUCTS_PER_TYPE, TYPES, GeneratedCatalogue, ProductType,
                                             generate_products)

__all__ = ["DEFAULT_PRODUCTS_PER_TYPE", "MAX_RESULTS", "PAGE_SIZE", "TYPES", "Catalogue", "GeneratedCatalogue",
           "Goal", "Page", "Product", "ProductType", "ShopEnv", "generate_products", "generated_catalogue",
           "price_cap", "reward_formula"]
