"""The generated store: a WebShop-like catalogue made from a seed, with goals written from target products.

Six departments, 24 product types. Each type has a pool of attribute phrases
("sulfate free", "machine wash"), one or two option dimensions (size, color,
scent, flavor, pack, ...) and a price range. A product is a brand, two to four
of its type's attributes, a subset of each dimension's values and a price;
its title is the brand, some of its attributes and the type. `products_per_type`
(the difficulty knob) products are made per type, so every product shares its
type and some attributes with `products_per_type - 1` others: the distractors
a search for the instruction's words also returns.

Goals: a goal is written from a target product: its type, one to three of its
attributes, one value of each of most of its option dimensions, and WebShop's
price cap (`price_cap`); the instruction reads "I need a <attributes> <type>
in <options>, and price lower than N dollars", so the target satisfies it.
Splits share the store (as WebShop's do) but never a request: a request
(type, attribute set, option set, whatever the budget) belongs to the test
split when a hash of it is 0 mod 5 and to train otherwise, and a task draws
goals until one of its split comes up. Two products may make the same request;
the split still sees it only on its side.

Reward (WebShop's formula, `reward_formula`, with exact matching since the
store knows every product's fields): r_type = 1 for the goal's type, 0.5 for
another type of the same department, 0 otherwise; attributes matched = goal
attributes the product has; options matched = goal options among the chosen
values; price matched = price <= cap.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Mapping
from dataclasses import dataclass

from agentrm_jax.envs.base import task_seed
from agentrm_jax.envs.shop.catalogue import Catalogue, Goal, Product, price_cap, reward_formula

__all__ = ["DEFAULT_PRODUCTS_PER_TYPE", "TYPES", "GeneratedCatalogue", "ProductType", "generate_products",
           "request_split"]

DEFAULT_PRODUCTS_PER_TYPE = 12
MIN_PRODUCTS_PER_TYPE, MAX_PRODUCTS_PER_TYPE = 1, 200
TEST_EVERY = 5


@dataclass(frozen=True)
class ProductType:
    """A kind of product: its department, name (plural names take no article), attributes, options, price range."""

    department: str
    name: str
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]
    price: tuple[float, float]
    plural: bool = False


_COLORS = ("black", "white", "navy blue", "gray", "red", "forest green", "beige", "pink", "light blue", "brown")
_APPAREL = ("x-small", "small", "medium", "large", "x-large", "xx-large")


def _t(department, name, attributes, options, price, plural=False) -> ProductType:
    return ProductType(department, name, tuple(attributes.split(", ")),
                       tuple((dim, tuple(values)) for dim, values in options), price, plural)


TYPES: tuple[ProductType, ...] = (
    _t("clothing", "t-shirt", "machine wash, cotton, short sleeve, crew neck, moisture wicking, slim fit, tagless",
       [("size", _APPAREL), ("color", _COLORS)], (9, 30)),
    _t("clothing", "hoodie", "machine wash, fleece lined, pullover, kangaroo pocket, relaxed fit, drawstring hood",
       [("size", _APPAREL), ("color", _COLORS)], (20, 60)),
    _t("clothing", "running shoes", "lightweight, breathable mesh, non slip, arch support, memory foam, lace up",
       [("size", ("6", "7", "8", "9", "10", "11", "12")), ("color", _COLORS)], (35, 120), plural=True),
    _t("clothing", "jeans", "stretch, high waist, straight leg, button fly, machine wash, classic fit",
       [("size", ("28w x 30l", "30w x 30l", "32w x 32l", "34w x 32l", "36w x 34l")),
        ("color", ("dark wash", "light wash", "black", "stone gray"))], (25, 80), plural=True),
    _t("beauty", "shampoo", "sulfate free, paraben free, volumizing, natural ingredients, color safe, vegan",
       [("size", ("8 fl oz", "12 fl oz", "16 fl oz", "32 fl oz")),
        ("scent", ("lavender", "coconut", "tea tree", "unscented", "rose"))], (6, 35)),
    _t("beauty", "deodorant", "aluminum free, sensitive skin, long lasting, natural ingredients, cruelty free",
       [("scent", ("bright citrus", "ginger fresh", "cedarwood", "unscented", "eucalyptus")),
        ("pack", ("1 pack", "2 pack", "3 pack"))], (5, 25)),
    _t("beauty", "face moisturizer", "oil free, fragrance free, hyaluronic acid, spf 30, non comedogenic, vegan",
       [("size", ("1.7 oz", "2.5 oz", "3.4 oz"))], (10, 55)),
    _t("beauty", "lipstick", "long lasting, matte finish, cruelty free, paraben free, moisturizing",
       [("color", ("ruby red", "nude", "berry", "coral", "mauve"))], (6, 30)),
    _t("grocery", "snack bars", "gluten free, low sugar, high protein, non gmo, plant based, keto friendly",
       [("flavor", ("dark chocolate almond", "peanut butter", "blueberry", "sea salt caramel", "coconut cashew")),
        ("pack", ("6 count", "12 count", "24 count"))], (8, 40), plural=True),
    _t("grocery", "ground coffee", "organic, fair trade, medium roast, dark roast, low acid, decaf",
       [("flavor", ("classic", "french vanilla", "hazelnut", "mocha")),
        ("size", ("12 ounce", "2 pound", "5 pound"))], (8, 45)),
    _t("grocery", "herbal tea", "caffeine free, organic, non gmo, individually wrapped, kosher",
       [("flavor", ("chamomile", "peppermint", "ginger lemon", "hibiscus", "rooibos")),
        ("pack", ("20 count", "40 count", "100 count"))], (4, 25)),
    _t("grocery", "olive oil", "extra virgin, cold pressed, organic, first harvest, non gmo",
       [("size", ("16.9 fl oz", "25.4 fl oz", "68 fl oz"))], (9, 45)),
    _t("electronics", "wireless earbuds", "noise cancelling, bluetooth 5.3, water resistant, long battery life, "
       "charging case, built in microphone", [("color", ("black", "white", "navy blue", "pink"))], (20, 150),
       plural=True),
    _t("electronics", "phone case", "shockproof, slim fit, wireless charging compatible, clear back, "
       "raised edges, kickstand", [("model", ("iphone 13", "iphone 14", "iphone 15", "galaxy s23", "pixel 8")),
                                   ("color", _COLORS)], (8, 35)),
    _t("electronics", "usb c charger", "fast charging, foldable plug, compact, dual port, overheat protection",
       [("wattage", ("20w", "30w", "45w", "65w")), ("color", ("black", "white"))], (10, 50)),
    _t("electronics", "bluetooth speaker", "waterproof, portable, long battery life, built in microphone, "
       "stereo pairing, loud bass", [("color", ("black", "navy blue", "red", "forest green", "gray"))],
       (20, 130)),
    _t("home", "bed pillow", "hypoallergenic, machine wash, cooling, memory foam, down alternative, firm support",
       [("size", ("standard", "queen", "king")), ("pack", ("1 pack", "2 pack", "4 pack"))], (15, 70)),
    _t("home", "blackout curtains", "thermal insulated, noise reducing, grommet top, machine wash, energy saving",
       [("size", ("42 x 63 inch", "52 x 84 inch", "52 x 95 inch")), ("color", _COLORS)], (18, 70), plural=True),
    _t("home", "coffee mug", "ceramic, dishwasher safe, microwave safe, double wall, lead free",
       [("size", ("12 oz", "16 oz", "20 oz")), ("color", _COLORS)], (7, 30)),
    _t("home", "bath towels", "quick dry, highly absorbent, cotton, soft, machine wash, oeko tex certified",
       [("color", _COLORS), ("pack", ("2 pack", "4 pack", "6 pack"))], (15, 60), plural=True),
    _t("sports", "yoga mat", "non slip, extra thick, eco friendly, carrying strap, sweat resistant, lightweight",
       [("thickness", ("4mm", "6mm", "8mm")), ("color", _COLORS)], (15, 60)),
    _t("sports", "water bottle", "bpa free, stainless steel, leak proof, insulated, dishwasher safe, wide mouth",
       [("size", ("18 oz", "24 oz", "32 oz", "40 oz")), ("color", _COLORS)], (10, 45)),
    _t("sports", "resistance bands", "latex free, heavy duty, anti snap, door anchor, portable",
       [("resistance", ("light", "medium", "heavy", "extra heavy"))], (8, 35), plural=True),
    _t("sports", "dumbbells", "neoprene coated, non slip grip, hexagon shape, adjustable, anti roll",
       [("weight", ("5 pound", "10 pound", "15 pound", "20 pound")), ("pack", ("single", "pair"))], (15, 90),
       plural=True),
)

BRANDS = ("Alderly", "Brightwell", "Corvana", "Dunmore", "Elmsworth", "Fenwick", "Glimmer", "Harlow", "Ivory Oak",
          "Juniper", "Kestrel", "Lumora", "Meridian", "Northpeak", "Oakridge", "Pinecrest", "Quillon", "Redfern",
          "Solace", "Tidewater", "Umbra", "Vantage", "Willowby", "Xenia", "Yarrow", "Zephyr", "Amberly", "Bluecove",
          "Calloway", "Driftwood")

_OPENERS = ("I need", "I am looking for", "I want", "Find me")


def _title(words: str) -> str:
    return " ".join(w if any(c.isdigit() for c in w) else w[:1].upper() + w[1:] for w in words.split())


def _product(ptype: ProductType, rng: random.Random, pid: str) -> Product:
    k = rng.randint(2, min(4, len(ptype.attributes)))
    attributes = tuple(rng.sample(ptype.attributes, k))
    shown = attributes[:rng.randint(1, len(attributes))]
    brand = rng.choice(BRANDS)
    options = []
    for dim, values in ptype.options:
        n = rng.randint(min(2, len(values)), len(values))
        keep = set(rng.sample(values, n))
        options.append((dim, tuple(v for v in values if v in keep)))  # catalogue order, like a real size chart
    lo, hi = ptype.price
    price = round(rng.uniform(lo, hi)) - 0.01
    name = _title(f"{brand} {' '.join(shown)} {ptype.name}")
    features = tuple(a.capitalize() for a in attributes)
    available = "; ".join(f"{dim}: {', '.join(values)}" for dim, values in options)
    description = (f"The {brand} {ptype.name} is {', '.join(attributes[:-1])} and {attributes[-1]}. "
                   f"Available {available}.")
    return Product(id=pid, name=name, category=ptype.department, query=ptype.name,
                   product_category=f"{_title(ptype.department)} › {_title(ptype.name)}", price=price,
                   options=tuple(options), attributes=attributes, description=description, features=features)


def generate_products(seed: int, products_per_type: int = DEFAULT_PRODUCTS_PER_TYPE) -> list[Product]:
    """The store for `seed`: `products_per_type` products of each of TYPES, type by type, titles unique."""
    rng = random.Random(f"shop/catalogue/{seed}/{products_per_type}")
    ids, names, out = set(), set(), []
    for ptype in TYPES:
        for _ in range(products_per_type):
            pid = "B0" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=8))
            while pid in ids:
                pid = "B0" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=8))
            for _ in range(100):  # titles repeat rarely (brand x shown attributes); draw again when they do
                product = _product(ptype, rng, pid)
                if product.name.lower() not in names:
                    break
            else:  # pragma: no cover - only with hundreds of products per type
                product = _product(ptype, rng, pid)
                product = Product(**{**product.__dict__, "name": f"{product.name} {pid[-4:]}"})
            ids.add(pid)
            names.add(product.name.lower())
            out.append(product)
    return out


def request_split(product_type: str, attributes, options) -> str:
    """"test" for a fifth of requests (type, attribute set, option set), "train" for the rest, by a stable hash."""
    key = "|".join([product_type, ",".join(sorted(attributes)), ",".join(sorted(options))])
    return "test" if int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") % TEST_EVERY == 0 else "train"


def _phrase(ptype: ProductType, attributes, options, price_upper: float, rng: random.Random) -> str:
    noun = f"{', '.join(attributes)} {ptype.name}"
    if not ptype.plural:
        noun = ("an " if noun[0] in "aeiou" else "a ") + noun
    text = f"{rng.choice(_OPENERS)} {noun}"
    if options:
        text += " in " + " and ".join(options)
    return text + f", and price lower than {price_upper:.2f} dollars"


class GeneratedCatalogue(Catalogue):
    """The generated store for `seed` (see the module docstring); goals are drawn per (split, task seed)."""

    def __init__(self, seed: int = 0, products_per_type: int = DEFAULT_PRODUCTS_PER_TYPE):
        if not isinstance(products_per_type, int) or not (
                MIN_PRODUCTS_PER_TYPE <= products_per_type <= MAX_PRODUCTS_PER_TYPE):
            raise ValueError(f"shop: products_per_type must be an integer in [{MIN_PRODUCTS_PER_TYPE}, "
                             f"{MAX_PRODUCTS_PER_TYPE}], got {products_per_type!r}")
        self.seed, self.products_per_type = seed, products_per_type
        products = generate_products(seed, products_per_type)
        super().__init__(products)
        self.types = {p.id: TYPES[i // products_per_type] for i, p in enumerate(products)}
        self._ids = sorted(self.products)

    def goal(self, split: str, seed: int) -> Goal:
        """A goal of `split` (see `request_split`), drawn with `task_seed("shop", split, seed)`."""
        rng = random.Random(f"{task_seed('shop', split, seed)}/{self.seed}/{self.products_per_type}")
        for _ in range(10_000):  # a fifth of requests are test ones: about 5 draws for test, 1.25 for train
            target = self.products[rng.choice(self._ids)]
            k = rng.choice([1, 1, 2, 2, 3]) if len(target.attributes) >= 3 else rng.randint(1, 2)
            attributes = tuple(rng.sample(target.attributes, k))
            options = tuple(rng.choice(values) for _, values in target.options if rng.random() < 0.8)
            if request_split(target.query, attributes, options) == split:
                break
        else:  # pragma: no cover - would need a broken request_split
            raise RuntimeError(f"shop: no {split} request found for task {seed}")
        upper = price_cap(target.price, rng)
        return Goal(target=target.id, instruction=_phrase(self.types[target.id], attributes, options, upper, rng),
                    attributes=attributes, options=options, price_upper=float(upper))

    def type_reward(self, product: Product, goal: Goal) -> float:
        """r_type: 1 for the goal's product type, 0.5 for another type of its department, else 0."""
        want = self.products[goal.target]
        if product.query == want.query:
            return 1.0
        return 0.5 if product.category == want.category else 0.0

    def reward(self, product: Product, goal: Goal, chosen: Mapping[str, str]) -> float:
        """WebShop's formula with exact attribute / option / price matching (see the module docstring)."""
        have = {a.lower() for a in product.attributes}
        picked = {v.lower() for v in chosen.values()}
        return reward_formula(self.type_reward(product, goal),
                              sum(a.lower() in have for a in goal.attributes), len(goal.attributes),
                              sum(o.lower() in picked for o in goal.options), len(goal.options),
                              product.price <= goal.price_upper)
