"""Benchmark: agent episodes with and without the sampler's prefix KV cache (a benchmark, not a test).

    PYTHONPATH=. python scripts/bench_episodes.py                      # lockstep: 8 maze seeds, 6 turns
    PYTHONPATH=. python scripts/bench_episodes.py --turns 4 --json     # one JSON object per scenario

Scenarios:
  lockstep  `len(--seeds)` maze test tasks played greedily together (`agents.loop.play_lockstep`,
            one `JaxPolicy.sample` call per turn) for `--turns` turns with the bundled model.
  single    the same tasks played one after another (`run_episode`), one context per call.

Each scenario runs on one loaded model, prefix cache on and off (`prefix_cache=False`): wall
time (compiles included unless --warmup, which plays each side once untimed first; with --repeats
the timed plays alternate sides and the fastest counts), tokens prefilled, cache-hit tokens, tokens
of a call's common prefix prefilled once for several rows (`shared_tokens_*`), `unique_tokens`
(the distinct token prefixes of all contexts: what a perfect prefix cache would prefill) and
`identical` (both sides took the same actions).

The peer (unless --skip-transformers): transformers `generate` on the same weights (ours copied
into `LlamaForCausalLM`, float32, torch with `--threads` threads, default 1), greedy, one context per call as a
transformers user plays an episode, each context continuing the `DynamicCache` of the earlier
context it shares the longest token prefix with (cropped to that prefix; a context of a new
episode starts from a copy of another's cache cropped to their common system prompt + example), so
a turn prefills only what its context added. It uses our tokenization of every context and stops
at the same points (a complete action line, a stop string). `wall_s_transformers`,
`prefilled_tokens_transformers`, and `identical_transformers` (its actions equal ours with the
cache; float32 rounding differs between torch and XLA, so a near-tie argmax may not).
torch and transformers are needed for the peer only (a benchmark's oracle, never the library's).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import warnings


class _Recording:
    """A policy wrapper that keeps every context it was asked about."""

    def __init__(self, policy):
        self.policy, self.contexts = policy, []

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        self.contexts.extend(contexts)
        return self.policy.sample(contexts, n=n, temperature=temperature, seed=seed)


def _play(scenario, model, tokenizer, seeds, turns, cached, max_new_tokens, kv_cache_mb):
    from agentrm_jax.agents.loop import play_lockstep, run_episode
    from agentrm_jax.agents.policies import JaxPolicy
    from agentrm_jax.envs import make

    policy = JaxPolicy(model, tokenizer, max_new_tokens=max_new_tokens, prefix_cache=cached,
                       kv_cache_mb=kv_cache_mb, max_batch=max(8, len(seeds)))
    recording = _Recording(policy)
    start = time.perf_counter()
    if scenario == "lockstep":
        envs = [make("maze", split="test", max_turns=turns) for _ in seeds]
        firsts = [env.reset(s) for env, s in zip(envs, seeds)]
        trajectories = play_lockstep(envs, recording, seed=0, max_turns=turns, first_observations=firsts,
                                     ids=[f"maze/test/{s}" for s in seeds])
    else:
        trajectories = [run_episode(make("maze", split="test", max_turns=turns), recording, seed=s) for s in seeds]
    wall = time.perf_counter() - start
    actions = [[step.action for step in t.steps] for t in trajectories]
    return wall, policy, recording.contexts, actions


def _common_prefix(a, b) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _TransformersPeer:
    """transformers `generate`, greedy, one context per call, reusing `past_key_values` across turns.

    Every finished context keeps its DynamicCache (KV of its prompt and completion) with the token ids it
    covers. A new context continues the entry with the longest common token prefix: in place when no other
    context of this call took that entry yet (the next turn of the same episode), else from a copy (a new
    episode sharing the system prompt); the cache is cropped to the common prefix, and `generate` computes
    the rest. Stops like `JaxPolicy`: at a complete action line or a stop string, text cut after the action.
    """

    def __init__(self, hf, tokenizer, encode, *, max_new_tokens, pad_token_id):
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from agentrm_jax.agents.prompts import STOP_STRINGS, action_line_complete

        self.hf, self.tokenizer, self.encode = hf, tokenizer, encode
        self.max_new_tokens, self.pad_token_id, self.torch = max_new_tokens, pad_token_id, torch
        self.stop = STOP_STRINGS
        self.entries: list[tuple[list[int], object]] = []  # (ids the cache covers, DynamicCache)
        self.prompt_tokens = self.prefilled_tokens = self.cache_hit_tokens = 0
        peer = self

        class _ActionDone(StoppingCriteria):
            def __init__(self, start):
                self.start = start

            def __call__(self, input_ids, scores, **kwargs):
                text = peer.tokenizer.decode(input_ids[0, self.start:].tolist(), skip_special_tokens=True)
                done = any(s in text for s in peer.stop) or action_line_complete(text)
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

        self._criteria = lambda start: StoppingCriteriaList([_ActionDone(start)])

    def _cache_for(self, ids, claimed):
        """(DynamicCache holding a prefix of ids, index of the entry it replaces or None)."""
        from transformers import DynamicCache

        best, hit = None, 0
        for i, (cached_ids, _) in enumerate(self.entries):
            common = _common_prefix(cached_ids, ids)
            if common > hit:
                best, hit = i, common
        hit = min(hit, len(ids) - 1)  # at least one token to prefill: generate needs the last position's logits
        if best is None or hit == 0:
            return DynamicCache(), None
        if best in claimed:
            cache, best = copy.deepcopy(self.entries[best][1]), None
        else:
            cache = self.entries[best][1]
            claimed.add(best)
        extra = cache.get_seq_length() - hit
        if extra > 0:
            cache.crop(-extra)  # a negative count drops that many trailing tokens (every transformers version)
        return cache, best

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        from agentrm_jax.agents.prompts import cut_after_action

        if n != 1 or temperature != 0:
            raise ValueError("the transformers peer plays greedy episodes only (n=1, temperature 0)")
        torch, claimed, out = self.torch, set(), []
        for context in contexts:
            ids = self.encode(context)
            cache, slot = self._cache_for(ids, claimed)
            hit = cache.get_seq_length()
            self.prompt_tokens += len(ids)
            self.cache_hit_tokens += hit
            self.prefilled_tokens += len(ids) - hit
            tids = torch.tensor([ids], dtype=torch.long)
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames past_key_values to cache
                gen = self.hf.generate(input_ids=tids, attention_mask=torch.ones_like(tids), past_key_values=cache,
                                       max_new_tokens=self.max_new_tokens, do_sample=False, top_p=None,
                                       top_k=None, temperature=None, pad_token_id=self.pad_token_id,
                                       stopping_criteria=self._criteria(len(ids)))
            full = gen[0].tolist()
            entry = (full[:cache.get_seq_length()], cache)
            if slot is None:
                self.entries.append(entry)
            else:
                self.entries[slot] = entry
            text = self.tokenizer.decode(full[len(ids):], skip_special_tokens=True)
            for s in self.stop:
                text = text.split(s, 1)[0]
            out.append([cut_after_action(text)])
        return out


def _hf_model(model):
    """transformers' LlamaForCausalLM holding our model's weights (float32, eval mode)."""
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from agentrm_jax.models import to_hf_state_dict

    hf = LlamaForCausalLM(LlamaConfig(**model.config.to_hf_config())).to(torch.float32).eval()
    state = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in to_hf_state_dict(model).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and model.config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"weight transfer to torch failed: missing {missing}, unexpected {unexpected}")
    if model.config.tie_word_embeddings:
        hf.tie_weights()
    return hf


def _play_transformers(scenario, hf, model, tokenizer, seeds, turns, max_new_tokens):
    from agentrm_jax.agents.loop import play_lockstep, run_episode
    from agentrm_jax.agents.policies import JaxPolicy
    from agentrm_jax.envs import make

    encoder = JaxPolicy(model, tokenizer, max_new_tokens=max_new_tokens)  # our tokenization and context cuts
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    peer = _TransformersPeer(hf, tokenizer, encoder._encode, max_new_tokens=max_new_tokens, pad_token_id=pad)
    start = time.perf_counter()
    if scenario == "lockstep":
        envs = [make("maze", split="test", max_turns=turns) for _ in seeds]
        firsts = [env.reset(s) for env, s in zip(envs, seeds)]
        trajectories = play_lockstep(envs, peer, seed=0, max_turns=turns, first_observations=firsts,
                                     ids=[f"maze/test/{s}" for s in seeds])
    else:
        trajectories = [run_episode(make("maze", split="test", max_turns=turns), peer, seed=s) for s in seeds]
    wall = time.perf_counter() - start
    return wall, peer, [[step.action for step in t.steps] for t in trajectories]


def bench(scenario, model, tokenizer, *, seeds, turns, max_new_tokens, kv_cache_mb, warmup, repeats=1, hf=None):
    """One scenario's figures (a JSON-able dict); with `hf` (transformers' copy of the model) the peer's too."""
    from agentrm_jax.sampling.prefix_cache import distinct_prefix_tokens

    out = {"scenario": scenario, "episodes": len(seeds), "turns": turns, "max_new_tokens": max_new_tokens,
           "kv_cache_mb": kv_cache_mb, "compiles_timed": not warmup,
           "load_average_start": round(os.getloadavg()[0], 2)}
    if warmup:
        for cached in (True, False):
            _play(scenario, model, tokenizer, seeds, turns, cached, max_new_tokens, kv_cache_mb)
    # Timed plays alternate sides (the order flips each repeat) so that a shared machine's load
    # swings hit both; each side keeps its fastest play.
    sides, walls = {}, {True: [], False: []}
    for rep in range(repeats):
        for cached in ((True, False) if rep % 2 == 0 else (False, True)):
            sides[cached] = _play(scenario, model, tokenizer, seeds, turns, cached, max_new_tokens, kv_cache_mb)
            walls[cached].append(sides[cached][0])
    (_, pol_c, contexts, actions_c), (_, pol_p, _, actions_p) = sides[True], sides[False]
    wall_c, wall_p = min(walls[True]), min(walls[False])
    out["repeats"] = repeats
    sc, sp = pol_c.stats, pol_p.stats
    out.update(
        calls=sc.calls, contexts=sc.contexts, prompt_tokens=sc.prompt_tokens,
        unique_tokens=distinct_prefix_tokens([pol_c._encode(c) for c in contexts]),
        prefilled_tokens_cached=sc.prefilled_tokens, prefilled_tokens_uncached=sp.prefilled_tokens,
        cache_hit_tokens=sc.cache_hit_tokens, cache_evictions=sc.cache_evictions, cache_bytes=sc.cache_bytes,
        shared_tokens_cached=pol_c.sampler.stats.shared_tokens, shared_tokens_uncached=pol_p.sampler.stats.shared_tokens,
        wall_s_cached=round(wall_c, 2), wall_s_uncached=round(wall_p, 2),
        speedup=round(wall_p / wall_c, 2) if wall_c else None,
        identical=actions_c == actions_p)
    if hf is not None:
        walls_t = []  # no warm-up play: eager torch compiles nothing
        for _ in range(repeats):
            wall_t, peer, actions_t = _play_transformers(scenario, hf, model, tokenizer, seeds, turns, max_new_tokens)
            walls_t.append(wall_t)
        out.update(wall_s_transformers=round(min(walls_t), 2), prefilled_tokens_transformers=peer.prefilled_tokens,
                   cache_hit_tokens_transformers=peer.cache_hit_tokens,
                   speedup_over_transformers=round(min(walls_t) / wall_c, 2) if wall_c else None,
                   identical_transformers=actions_t == actions_c)
    out["load_average_end"] = round(os.getloadavg()[0], 2)  # 1-minute load: the machine is shared
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=["lockstep", "single"],
                        help="scenarios to run (repeatable; default: lockstep)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)), help="maze test seeds")
    parser.add_argument("--turns", type=int, default=6, help="turns per episode (default 6)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--kv-cache-mb", type=float, default=512.0)
    parser.add_argument("--warmup", action="store_true", help="play each side once untimed first (compiles)")
    parser.add_argument("--repeats", type=int, default=1, help="timed plays per side, alternating (best kept)")
    parser.add_argument("--skip-transformers", action="store_true", help="do not run the transformers peer")
    # 1 by default: on the shared 2-core machine, with other jobs holding a core, torch's 2 OpenMP threads
    # wait on each other (2026-12-02: one peer play took 369 s with 2 threads, 31 s with 1, load ~4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the peer (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per scenario")
    args = parser.parse_args(argv)
    if args.turns < 1:
        parser.error(f"--turns must be >= 1, got {args.turns}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    from agentrm_jax.models import bundled_model_path, from_pretrained

    model, tokenizer = from_pretrained(bundled_model_path())
    hf = None
    if not args.skip_transformers:
        import torch

        torch.set_num_threads(args.threads)
        hf = _hf_model(model)
    for scenario in args.scenario or ["lockstep"]:
        result = bench(scenario, model, tokenizer, seeds=args.seeds, turns=args.turns,
                       max_new_tokens=args.max_new_tokens, kv_cache_mb=args.kv_cache_mb, warmup=args.warmup,
                       repeats=args.repeats, hf=hf)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{scenario}: {result['episodes']} episodes x {result['turns']} turns, "
                  f"identical actions: {result['identical']}")
            print(f"  wall s        cached {result['wall_s_cached']:>9}   uncached {result['wall_s_uncached']:>9}   "
                  f"speedup {result['speedup']}")
            print(f"  prefilled     cached {result['prefilled_tokens_cached']:>9}   uncached "
                  f"{result['prefilled_tokens_uncached']:>9}   unique {result['unique_tokens']}")
            print(f"  shared once   cached {result['shared_tokens_cached']:>9}   uncached "
                  f"{result['shared_tokens_uncached']:>9}   (a call's common prefix, prefilled for one row)")
            if "wall_s_transformers" in result:
                print(f"  transformers  wall s {result['wall_s_transformers']} ({result['speedup_over_transformers']}x "
                      f"ours cached), prefilled {result['prefilled_tokens_transformers']}, identical actions: "
                      f"{result['identical_transformers']}")
            print(f"  cache         hits {result['cache_hit_tokens']}  evictions {result['cache_evictions']}  "
                  f"MB held {result['cache_bytes'] / 2**20:.1f}")


if __name__ == "__main__":
    main()
