"""Benchmark: agent episodes with and without the sampler's prefix KV cache (a benchmark, not a test).

    PYTHONPATH=. python scripts/bench_episodes.py                      # lockstep: 8 maze seeds, 6 turns
    PYTHONPATH=. python scripts/bench_episodes.py --turns 4 --json     # one JSON object per scenario

Scenarios:
  lockstep  `len(--seeds)` maze test tasks played greedily together (`agents.loop.play_lockstep`,
            one `JaxPolicy.sample` call per turn) for `--turns` turns with the bundled model.
  single    the same tasks played one after another (`run_episode`), one context per call.
  beam      one step-level beam search (`search.beam_search`, W x K = --beam, default 4x4) on the
            first seed's task for `--turns` turns, candidates sampled at 0.7, ranked by the oracle
            scorer (the env's own progress: no RM model, so the policy's cost is what is measured).
  bon       Best-of-N (`search.best_of_n`, N = --bon, default 8) on the first seed's task, sampled
            at 0.7, the N episodes in lockstep.

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
It plays greedy scenarios only (lockstep, single).

The llama.cpp peer (with --llama-server BIN, a `llama-server` binary: scripts/build_llama_server.sh
builds one offline): the server is started on the bundled GGUF as llama.cpp runs it (Q4_1 weights,
`--threads` threads, one slot per row of the scenario's widest call, prompt caching on, which is the
server's default) and every scenario is played through `OpenAIPolicy` with as many requests in
flight as slots, so the server batches rows as we do. `wall_s_llamacpp`, `prompt_tokens_llamacpp`,
`prefilled_tokens_llamacpp` (prompt tokens less the cache hits the server reports), `identical_llamacpp`
(its actions equal ours with the cache; it applies the GGUF's chat template and stops at our stop
strings only, so its steps and their tokens can differ; None for beam / bon, sampled with its own
chain, whose `generated_tokens_llamacpp` is None too: the server reports one of n samples' usage).
The server's start-up is not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import socket
import subprocess
import time
import urllib.request
import warnings

SCENARIOS = ("lockstep", "single", "beam", "bon")
GREEDY_SCENARIOS = ("lockstep", "single")


class _Recording:
    """A policy wrapper that keeps every context it was asked about."""

    def __init__(self, policy):
        self.policy, self.contexts = policy, []

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        self.contexts.extend(contexts)
        return self.policy.sample(contexts, n=n, temperature=temperature, seed=seed)


def _episodes(scenario, policy, seeds, turns, *, beam=(4, 4), bon=8):
    """Play `scenario` with `policy`; returns (wall seconds, actions of every trajectory played)."""
    from agentrm_jax.agents.loop import play_lockstep, run_episode
    from agentrm_jax.envs import make
    from agentrm_jax.search import OracleScorer, SearchConfig, beam_search, best_of_n

    start = time.perf_counter()
    if scenario == "lockstep":
        envs = [make("maze", split="test", max_turns=turns) for _ in seeds]
        firsts = [env.reset(s) for env, s in zip(envs, seeds)]
        trajectories = play_lockstep(envs, policy, seed=0, max_turns=turns, first_observations=firsts,
                                     ids=[f"maze/test/{s}" for s in seeds])
    elif scenario == "single":
        trajectories = [run_episode(make("maze", split="test", max_turns=turns), policy, seed=s) for s in seeds]
    else:
        cfg = SearchConfig(seed=seeds[0], max_turns=turns, temperature=0.7, n=bon, beam_width=beam[0],
                           expansions=beam[1])
        search = beam_search if scenario == "beam" else best_of_n
        result = search(policy, OracleScorer(), lambda: make("maze", split="test", max_turns=turns), cfg)
        trajectories = [result.trajectory, *result.candidates]
    wall = time.perf_counter() - start
    return wall, [[step.action for step in t.steps] for t in trajectories]


def _widest_call(scenario, seeds, beam, bon) -> int:
    """The most rows one policy call of `scenario` asks for."""
    return {"lockstep": len(seeds), "single": 1, "beam": beam[0] * beam[1], "bon": bon}[scenario]


def _play(scenario, model, tokenizer, seeds, turns, cached, max_new_tokens, kv_cache_mb, beam=(4, 4), bon=8):
    from agentrm_jax.agents.policies import JaxPolicy

    policy = JaxPolicy(model, tokenizer, max_new_tokens=max_new_tokens, prefix_cache=cached,
                       kv_cache_mb=kv_cache_mb, max_batch=max(8, _widest_call(scenario, seeds, beam, bon)))
    recording = _Recording(policy)
    wall, actions = _episodes(scenario, recording, seeds, turns, beam=beam, bon=bon)
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
    from agentrm_jax.agents.policies import JaxPolicy

    encoder = JaxPolicy(model, tokenizer, max_new_tokens=max_new_tokens)  # our tokenization and context cuts
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    peer = _TransformersPeer(hf, tokenizer, encoder._encode, max_new_tokens=max_new_tokens, pad_token_id=pad)
    wall, actions = _episodes(scenario, peer, seeds, turns)
    return wall, peer, actions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(binary, gguf, *, slots, threads, context_per_slot=8192, start_timeout_s=300.0):
    """A `llama-server` on 127.0.0.1 serving `gguf` with `slots` parallel slots; yields its /v1 URL.

    Prompt caching (`cache_prompt`) is the server's default: a request reuses the KV of the slot
    whose last prompt shares the longest prefix with it. Its log goes to a temporary file, printed
    (tail) if it fails to start."""
    import tempfile

    port = _free_port()
    cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads),
           "--threads-batch", str(threads), "--parallel", str(slots), "--ctx-size", str(context_per_slot * slots),
           "--no-webui"]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            end = time.monotonic() + start_timeout_s
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"llama-server exited with {proc.returncode}: {' '.join(cmd)}\n"
                                       + log.read()[-2000:])
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > end:
                    raise RuntimeError(f"llama-server did not answer /health within {start_timeout_s:g} s")
                time.sleep(0.5)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _play_llamacpp(scenario, binary, seeds, turns, max_new_tokens, threads, beam=(4, 4), bon=8):
    from agentrm_jax.agents.policies import OpenAIPolicy
    from agentrm_jax.models import bundled_model_path

    slots = _widest_call(scenario, seeds, beam, bon)
    with llama_server(binary, bundled_model_path(), slots=slots, threads=threads) as url:
        peer = OpenAIPolicy(url, "bundled", max_tokens=max_new_tokens, timeout=600, deadline_s=3600,
                            concurrency=slots)
        wall, actions = _episodes(scenario, peer, seeds, turns, beam=beam, bon=bon)
    return wall, peer, actions


def bench(scenario, model, tokenizer, *, seeds, turns, max_new_tokens, kv_cache_mb, warmup, repeats=1, hf=None,
          llama_server_bin=None, threads=1, beam=(4, 4), bon=8):
    """One scenario's figures (a JSON-able dict); with `hf` (transformers' copy of the model) that peer's
    too (greedy scenarios), with `llama_server_bin` llama.cpp's."""
    from agentrm_jax.sampling.prefix_cache import distinct_prefix_tokens

    play = dict(beam=beam, bon=bon)
    episodes = {"beam": 1, "bon": bon}.get(scenario, len(seeds))  # beam: one search, however many beams
    out = {"scenario": scenario, "episodes": episodes,
           "rows": _widest_call(scenario, seeds, beam, bon), "turns": turns, "max_new_tokens": max_new_tokens,
           "kv_cache_mb": kv_cache_mb, "compiles_timed": not warmup,
           "load_average_start": round(os.getloadavg()[0], 2)}
    if warmup:
        for cached in (True, False):
            _play(scenario, model, tokenizer, seeds, turns, cached, max_new_tokens, kv_cache_mb, **play)
    # Timed plays alternate sides (the order flips each repeat) so that a shared machine's load
    # swings hit both; each side keeps its fastest play.
    sides, walls = {}, {True: [], False: []}
    for rep in range(repeats):
        for cached in ((True, False) if rep % 2 == 0 else (False, True)):
            sides[cached] = _play(scenario, model, tokenizer, seeds, turns, cached, max_new_tokens, kv_cache_mb,
                                  **play)
            walls[cached].append(sides[cached][0])
    (_, pol_c, contexts, actions_c), (_, pol_p, _, actions_p) = sides[True], sides[False]
    wall_c, wall_p = min(walls[True]), min(walls[False])
    out["repeats"] = repeats
    sc, sp = pol_c.stats, pol_p.stats
    out.update(
        calls=sc.calls, contexts=sc.contexts, prompt_tokens=sc.prompt_tokens, generated_tokens=sc.generated_tokens,
        unique_tokens=distinct_prefix_tokens([pol_c._encode(c) for c in contexts]),
        prefilled_tokens_cached=sc.prefilled_tokens, prefilled_tokens_uncached=sp.prefilled_tokens,
        cache_hit_tokens=sc.cache_hit_tokens, cache_evictions=sc.cache_evictions, cache_bytes=sc.cache_bytes,
        shared_tokens_cached=pol_c.sampler.stats.shared_tokens, shared_tokens_uncached=pol_p.sampler.stats.shared_tokens,
        wall_s_cached=round(wall_c, 2), wall_s_uncached=round(wall_p, 2),
        speedup=round(wall_p / wall_c, 2) if wall_c else None,
        identical=actions_c == actions_p)
    if hf is not None and scenario in GREEDY_SCENARIOS:
        walls_t = []  # no warm-up play: eager torch compiles nothing
        for _ in range(repeats):
            wall_t, peer, actions_t = _play_transformers(scenario, hf, model, tokenizer, seeds, turns, max_new_tokens)
            walls_t.append(wall_t)
        out.update(wall_s_transformers=round(min(walls_t), 2), prefilled_tokens_transformers=peer.prefilled_tokens,
                   cache_hit_tokens_transformers=peer.cache_hit_tokens,
                   speedup_over_transformers=round(min(walls_t) / wall_c, 2) if wall_c else None,
                   identical_transformers=actions_t == actions_c)
    if llama_server_bin is not None:
        walls_l = []
        for _ in range(repeats):  # a fresh server each time: its slots' caches start empty, as ours do
            wall_l, peer, actions_l = _play_llamacpp(scenario, llama_server_bin, seeds, turns, max_new_tokens, threads,
                                                     **play)
            walls_l.append(wall_l)
        st, greedy = peer.stats, scenario in GREEDY_SCENARIOS
        # Sampled scenarios: llama-server answers n > 1 with the first sample's usage only, and samples with
        # its own chain (top-k, top-p, min-p), so their token counts and actions are not comparable.
        out.update(wall_s_llamacpp=round(min(walls_l), 2), prompt_tokens_llamacpp=st.prompt_tokens,
                   prefilled_tokens_llamacpp=st.prefilled_tokens,
                   generated_tokens_llamacpp=st.generated_tokens if greedy else None,
                   speedup_over_llamacpp=round(min(walls_l) / wall_c, 2) if wall_c else None,
                   identical_llamacpp=actions_l == actions_c if greedy else None)
    out["load_average_end"] = round(os.getloadavg()[0], 2)  # 1-minute load: the machine is shared
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                        help="scenarios to run (repeatable; default: lockstep)")
    parser.add_argument("--beam", default="4x4", help="beam scenario's W x K (default 4x4)")
    parser.add_argument("--bon", type=int, default=8, help="bon scenario's N (default 8)")
    parser.add_argument("--llama-server", metavar="BIN",
                        help="a llama-server binary: run llama.cpp's OpenAI-compatible server as a peer")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)), help="maze test seeds")
    parser.add_argument("--turns", type=int, default=6, help="turns per episode (default 6)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--kv-cache-mb", type=float, default=512.0)
    parser.add_argument("--warmup", action="store_true", help="play each side once untimed first (compiles)")
    parser.add_argument("--repeats", type=int, default=1, help="timed plays per side, alternating (best kept)")
    parser.add_argument("--skip-transformers", action="store_true", help="do not run the transformers peer")
    # 1 by default: on the shared 2-core machine, with other jobs holding a core, torch's 2 OpenMP threads
    # wait on each other (2026-12-02: one peer play took 369 s with 2 threads, 31 s with 1, load ~4)
    parser.add_argument("--threads", type=int, default=1, help="threads of each peer, torch and llama.cpp (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per scenario")
    args = parser.parse_args(argv)
    if args.turns < 1:
        parser.error(f"--turns must be >= 1, got {args.turns}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    from agentrm_jax.evaluate.config import parse_methods  # the WxK shape `agentrm eval` reads

    try:
        (method,) = parse_methods(f"beam={args.beam}")
    except ValueError as e:
        parser.error(f"--beam: {e}")
    beam = (method.width, method.expansions)
    if args.bon < 1:
        parser.error(f"--bon must be >= 1, got {args.bon}")
    if args.llama_server and not (os.path.isfile(args.llama_server) and os.access(args.llama_server, os.X_OK)):
        parser.error(f"--llama-server {args.llama_server!r} is not an executable file "
                     "(scripts/build_llama_server.sh builds one)")

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
                       repeats=args.repeats, hf=hf, llama_server_bin=args.llama_server, threads=args.threads,
                       beam=beam, bon=args.bon)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{scenario}: {result['episodes']} episode(s) x {result['turns']} turns, {result['rows']} rows at most, "
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
            if "wall_s_llamacpp" in result:
                print(f"  llama.cpp     wall s {result['wall_s_llamacpp']} ({result['speedup_over_llamacpp']}x "
                      f"ours cached), prefilled {result['prefilled_tokens_llamacpp']} of "
                      f"{result['prompt_tokens_llamacpp']}, identical actions: {result['identical_llamacpp']}")
            print(f"  cache         hits {result['cache_hit_tokens']}  evictions {result['cache_evictions']}  "
                  f"MB held {result['cache_bytes'] / 2**20:.1f}")


if __name__ == "__main__":
    main()
