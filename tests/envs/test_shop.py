"""Tests for `shop`: the generated store, WebShop's reward formula, pages and actions, expert, snapshots."""

from __future__ import annotations

import pickle
import random
import re

import pytest

import agentrm_jax.envs.shop as shop
from agentrm_jax.envs.base import REGISTRY, make
from agentrm_jax.envs.shop.generated import GeneratedCatalogue, generate_products, request_split

SPLIT_SEEDS = [("train", range(12)), ("test", range(12))]
GARBAGE = ["", "buy", "click", "click[]", "search[]", "click[nonexistent]", "search [", "[Buy Now]", "\n",
           "click[B0NOTHERE0]", "SEARCH[shirt]", "search[shampoo]", "click[next >]", "click[< Prev]", "😀" * 40,
           "click[Buy Now", "think: I should buy", None, 42]


def env_at(seed=0, split="train", **kw):
    return make("shop", seed=seed, split=split, **kw)


def play(env, actions):
    for a in actions:
        env.step(a)
    return env


# -- registry and catalogue ------------------------------------------------------------------------
def test_registered():
    spec = REGISTRY["shop"]
    assert (spec.env_type, spec.role, spec.stands_for, spec.source) == ("web", "held_in", "AgentRM WebShop", "ours")
    assert isinstance(env_at(), shop.ShopEnv)


def test_catalogue_is_deterministic_per_seed():
    a, b, c = generate_products(0), generate_products(0), generate_products(1)
    assert a == b and a != c and len(a) == len(shop.TYPES) * shop.DEFAULT_PRODUCTS_PER_TYPE
    assert {p.id for p in a} != {p.id for p in c}
    assert len(generate_products(0, 5)) == 5 * len(shop.TYPES)
    nav = {n.lower() for n in ("Back to Search", "< Prev", "Next >", "Description", "Features", "Buy Now")}
    for p in a:
        values = [v.lower() for v in p.option_values()]
        assert len(values) == len(set(values)) and not set(values) & nav  # every click names one thing
        assert 2 <= len(p.attributes) <= 4 and p.price > 0 and p.query in p.name.lower()
    assert len({p.name.lower() for p in a}) == len(a)
    # the same (split, seed) is the same task in a fresh catalogue object
    assert GeneratedCatalogue(0).goal("test", 7) == shop.generated_catalogue(0).goal("test", 7)
    assert env_at(3).instruction == env_at(3).instruction != env_at(3, catalogue_seed=1).instruction


def test_products_per_type_is_checked():
    with pytest.raises(ValueError, match=r"products_per_type must be an integer in \[1, 200\], got 0"):
        env_at(products_per_type=0)


def test_goals_are_satisfiable_and_worded_as_webshop():
    cat = shop.generated_catalogue()
    for split in ("train", "test"):
        for seed in range(40):
            goal = cat.goal(split, seed)
            target = cat.products[goal.target]
            assert set(goal.attributes) <= set(target.attributes) and 1 <= len(goal.attributes) <= 3
            assert all(target.dimension_of(o) for o in goal.options)
            assert len({target.dimension_of(o) for o in goal.options}) == len(goal.options)
            assert target.price <= goal.price_upper <= target.price + 40
            assert re.fullmatch(r"(I need|I am looking for|I want|Find me) .+, and price lower than \d+\.00 dollars",
                                goal.instruction)
            assert all(a in goal.instruction for a in goal.attributes + goal.options)
            assert target.query in goal.instruction


def test_train_and_test_never_share_a_request():
    cat = shop.generated_catalogue()
    requests = {}
    for split in ("train", "test"):
        requests[split] = set()
        for seed in range(150):
            goal = cat.goal(split, seed)
            key = (cat.products[goal.target].query, frozenset(goal.attributes), frozenset(goal.options))
            assert request_split(key[0], goal.attributes, goal.options) == split
            requests[split].add(key)
        assert len(requests[split]) > 120  # seeds give varied tasks
    assert not requests["train"] & requests["test"]
    assert env_at(0, "train").instruction != env_at(0, "test").instruction


# -- reward formula ---------------------------------------------------------------------------------
def test_reward_formula_by_hand():
    assert shop.reward_formula(1.0, 2, 2, 2, 2, True) == 1.0
    assert shop.reward_formula(1.0, 1, 2, 1, 2, True) == pytest.approx(3 / 5)
    assert shop.reward_formula(0.5, 2, 2, 0, 1, False) == pytest.approx(0.5 * 2 / 4)
    assert shop.reward_formula(1.0, 0, 1, 0, 0, True) == pytest.approx(1 / 2)
    assert shop.reward_formula(0.0, 3, 3, 2, 2, True) == 0.0


def _product(pid, query, category, price, attributes, options):
    return shop.Product(id=pid, name=f"Brand {query}", category=category, query=query,
                        product_category=f"{category} › {query}", price=price, options=options,
                        attributes=attributes)


class _Tiny(GeneratedCatalogue):
    """Three hand-made products; goal 0 asks for the first one."""

    def __init__(self):
        opts = (("size", ("small", "large")), ("color", ("black", "white")))
        shop.Catalogue.__init__(self, [
            _product("P1", "shampoo", "beauty", 9.99, ("sulfate free", "vegan", "color safe"), opts),
            _product("P2", "deodorant", "beauty", 4.99, ("vegan", "sulfate free"), opts),
            _product("P3", "yoga mat", "sports", 15.99, ("vegan", "sulfate free"), opts),
        ])
        self.the_goal = shop.Goal(target="P1", instruction="I need a sulfate free, vegan shampoo in large and "
                                  "black, and price lower than 20.00 dollars", attributes=("sulfate free", "vegan"),
                                  options=("large", "black"), price_upper=20.0)

    def goal(self, split, seed):
        return self.the_goal


def test_purchase_reward_partial_matches():
    cat = _Tiny()
    goal, p1, p2, p3 = cat.the_goal, cat.products["P1"], cat.products["P2"], cat.products["P3"]
    assert cat.reward(p1, goal, {"size": "large", "color": "black"}) == 1.0
    assert cat.reward(p1, goal, {"size": "small", "color": "black"}) == pytest.approx(4 / 5)  # one wrong option
    assert cat.reward(p1, goal, {}) == pytest.approx(3 / 5)  # no option chosen
    cheap = shop.Goal(**{**goal.__dict__, "price_upper": 5.0})
    assert cat.reward(p1, cheap, {"size": "large", "color": "black"}) == pytest.approx(4 / 5)  # over budget
    one_attr = shop.Goal(**{**goal.__dict__, "attributes": ("sulfate free", "paraben free")})
    assert cat.reward(p1, one_attr, {"color": "black"}) == pytest.approx(3 / 5)  # 1 attribute + 1 option + price
    assert cat.reward(p2, goal, {"size": "large", "color": "black"}) == pytest.approx(0.5)  # same department
    assert cat.reward(p3, goal, {"size": "large", "color": "black"}) == 0.0  # another department


def test_bought_reward_is_progress_and_only_one_is_success():
    env = shop.ShopEnv(catalogue=_Tiny())
    env.reset(0)
    assert env.progress == 0.0 and not env.success
    play(env, ["search[vegan]", "click[P1]", "click[small]", "click[black]"])
    assert env.progress == 0.0 and not env.done  # no credit before buying
    obs, done = env.step("click[Buy Now]")
    assert done and env.progress == pytest.approx(4 / 5) and not env.success and "0.80" in obs
    env.reset(0)
    play(env, ["search[vegan]", "click[P1]", "click[small]", "click[black]", "click[large]", "click[buy now]"])
    assert env.success and env.progress == 1.0  # clicking large replaced small


# -- expert ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split,seeds", SPLIT_SEEDS)
def test_expert_succeeds(split, seeds):
    turns = []
    for seed in seeds:
        env = env_at(seed, split)
        plan = env.expert_actions()
        assert plan[0].startswith("search[") and plan[-1] == "click[Buy Now]"
        assert env.expert_actions_from_here() == plan
        for i, action in enumerate(plan):
            if i:
                assert action in env.available_actions()
            _, done = env.step(action)
            assert done == (i == len(plan) - 1)
        assert env.success and env.progress == 1.0 and env.expert_actions_from_here() == []
        turns.append(len(plan))
    assert 3 <= min(turns) and max(turns) <= 6 and 3.5 <= sum(turns) / len(turns) <= 5.5


@pytest.mark.parametrize("products_per_type", [1, 40])
def test_expert_succeeds_at_other_difficulties(products_per_type):
    for split in ("train", "test"):
        for seed in range(6):
            env = env_at(seed, split, products_per_type=products_per_type)
            play(env, env.expert_actions())
            assert env.success, (split, seed, products_per_type)


def test_expert_replans_from_any_page():
    rng = random.Random(0)
    for split in ("train", "test"):
        for seed in range(10):
            env = env_at(seed, split, max_turns=40)
            for _ in range(rng.randint(1, 8)):  # a random detour that does not buy
                actions = [a for a in (env.available_actions() or ["search[water bottle]"]) if a != "click[Buy Now]"]
                env.step(rng.choice(actions))
            play(env, env.expert_actions_from_here())
            assert env.success, (split, seed, env.snapshot())


def test_click_by_title_and_navigation():
    env = env_at(1)
    plan = env.expert_actions()
    obs, _ = env.step(plan[0])
    target = env.catalogue.products[env.goal.target]
    assert f"[{target.id}]" in obs and "Page 1 (Total results:" in obs
    obs, _ = env.step(f"click[{target.name.upper()}]")
    assert "[Buy Now]" in obs and target.name in obs and f"Price: ${target.price:.2f}" in obs
    obs, _ = env.step("click[Features]")
    assert target.features[0] in obs
    obs, _ = env.step("click[< Prev]")
    assert "[Buy Now]" in obs
    obs, _ = env.step("click[< Prev]")
    assert f"[{target.id}]" in obs and "Page 1" in obs
    obs, _ = env.step("click[Back to Search]")
    assert obs.endswith("[Search]") and env.available_actions() is None


# -- robustness -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("split,seeds", SPLIT_SEEDS)
def test_random_and_garbage_play_is_safe(split, seeds):
    rng = random.Random(split)
    words = ["shampoo", "vegan", "t-shirt", "black", "organic coffee", "water bottle", "xyzzy", "32 oz"]
    for seed in seeds:
        env = env_at(seed, split, max_turns=14)
        last = env.progress
        while not env.done:
            actions = env.available_actions()
            if rng.random() < 0.3:
                action = rng.choice(GARBAGE)
            elif actions is None:
                action = f"search[{' '.join(rng.sample(words, 2))}]"
            else:
                action = rng.choice(actions)
            turns = env.turns
            obs, done = env.step(action)
            assert isinstance(obs, str) and obs and env.turns == turns + 1 and done == env.done
            assert 0.0 <= env.progress <= 1.0 and env.progress >= last
            last = env.progress
        assert env.turns <= 14 and env.step("click[Buy Now]") == ("The episode is over.", True)


def test_invalid_actions_are_answered():
    env = env_at(0)
    for action in ["click[Buy Now]", "buy it", "search[]"]:
        obs, done = env.step(action)
        assert obs.startswith("Nothing happens") and "search[<your query>]" in obs and not done
    env.step(env.expert_actions()[0])
    obs, _ = env.step("search[again]")  # searching needs the search page
    assert obs.startswith("Nothing happens") and "click[Back to Search]" in obs
    assert env.turns == 5 and env.progress == 0.0


# -- snapshots --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
def test_snapshot_restore_in_fresh_env(split):
    for seed in range(10):
        env = env_at(seed, split)
        plan = env.expert_actions()
        env.step(plan[0])
        env.step("garbage")
        env.step(plan[1])
        snap = pickle.loads(pickle.dumps(env.snapshot()))
        fresh = REGISTRY["shop"].factory(split=split)
        fresh.restore(snap)
        assert fresh.turns == env.turns and fresh.available_actions() == env.available_actions()
        for action in ["click[Description]", "click[< Prev]", *plan[2:]]:
            assert env.step(action) == fresh.step(action)
            assert (env.progress, env.success, env.done) == (fresh.progress, fresh.success, fresh.done)
        assert fresh.success


def test_restore_rewinds_the_same_env():
    env = env_at(4)
    plan = env.expert_actions()
    obs0 = env.step(plan[0])[0]
    snap = env.snapshot()
    play(env, plan[1:])
    assert env.done and env.success
    env.restore(snap)
    assert not env.done and env.turns == 1 and env.progress == 0.0
    assert "Page 2" in env.step("click[Next >]")[0]
    env.restore(snap)
    assert env.step("click[Back to Search]")[0].endswith("[Search]") and env.step(plan[0])[0] == obs0


# -- the real-data source runs the same env --------------------------------------------------------------
def test_webshop_runs_the_shop_env():
    from agentrm_jax.envs.webshop import WebShopCatalogue, WebShopEnv

    assert issubclass(WebShopEnv, shop.ShopEnv) and issubclass(WebShopCatalogue, shop.Catalogue)


@pytest.mark.real_model
def test_bundled_policy_plays_a_shop_episode(bundled_ours):
    from agentrm_jax.agents.loop import run_episode
    from agentrm_jax.agents.policies import JaxPolicy

    model, tokenizer = bundled_ours
    env = env_at(1, "test", max_turns=3)
    trajectory = run_episode(env, JaxPolicy(model, tokenizer, max_new_tokens=48), seed=1)
    assert 1 <= len(trajectory.steps) <= 3 and env.turns == len(trajectory.steps)
    assert trajectory.task == "shop" and trajectory.id == "shop/test/1" and trajectory.instruction
    assert 0.0 <= trajectory.progress <= 1.0 and trajectory.success == env.success
    assert all(step.observation for step in trajectory.steps)
