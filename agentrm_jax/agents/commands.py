"""`agentrm serve` and `agentrm play`: `register(subparsers)` adds them to the `agentrm` CLI.

    agentrm serve --model PATH --port 8000             our model behind an OpenAI-compatible API
    agentrm play --env maze --seed 3 --policy expert   one episode, printed turn by turn

This module only parses and prints; the env and policy factories live in `agents.factory`.
"""

from __future__ import annotations

import argparse
import os
import time

__all__ = ["register"]


def _load_served_model(path, dtype: str):
    """(model, tokenizer) behind `agentrm serve --model PATH`: a directory goes through the loader that
    `--policy DIR` uses everywhere else (`models.adapters.load_policy`: an `agentrm sft` run, a directory of
    adapters over a base, or an HF model directory); a file (.gguf, the bundled model) through from_pretrained."""
    from pathlib import Path

    if Path(path).is_dir():
        from agentrm_jax.models.adapters import load_policy

        return load_policy(path, dtype=dtype)
    from agentrm_jax.models import from_pretrained

    return from_pretrained(path, dtype=dtype)


def _cmd_serve(args: argparse.Namespace) -> int:
    from agentrm_jax.agents.server import start_server, stop_server
    from agentrm_jax.models import bundled_model_path

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    path = args.model or bundled_model_path()
    t0 = time.perf_counter()
    from agentrm_jax.models.compile_cache import use_persistent_compile_cache

    use_persistent_compile_cache()
    model, tokenizer = _load_served_model(path, args.dtype)
    name = args.model_name or str(path).rstrip("/").split("/")[-1]
    api_key = args.api_key or os.environ.get("AGENTRM_API_KEY") or None
    server, thread = start_server(model, tokenizer, args.host, args.port, model_name=name,
                                  max_batch=args.max_batch, api_key=api_key)
    print(f"serving {name} (loaded in {time.perf_counter() - t0:.1f} s from {path}) at {server.url} "
          f"- POST {server.url}/chat/completions, GET {server.url}/models"
          f"{'; requests need the API key (Authorization: Bearer ...)' if api_key else ''}; Ctrl-C stops",
          flush=True)
    from agentrm_jax.serve_loop import serve_until_interrupted

    serve_until_interrupted(thread, lambda: stop_server(server, thread))
    return 0


_BUNDLED_NOTE = (
    "You are watching SmolLM2-135M-Instruct, a 135M-parameter model that was never fine-tuned for agents, act "
    "greedily in a text environment. Each turn it writes a Thought and an Action; the environment answers "
    "with an Observation. It rarely solves a task on its own (0 of 20 test mazes in docs/ENVIRONMENTS.md): "
    "what this shows is the agent loop running end to end on your CPU. Reward-model search over such "
    "policies is `agentrm eval`; `agentrm play --policy expert` shows a solved episode.")


def _policy_label(spec: str, model: str | None) -> str:
    if spec in ("bundled", "jax", "model"):
        return f"{model or 'the bundled SmolLM2-135M-Instruct'} (in-process JAX)"
    return spec


def _cmd_play(args: argparse.Namespace) -> int:
    from agentrm_jax.agents import factory  # its factories looked up through the module, so tests can patch them

    t_start = time.perf_counter()
    if args.max_turns is not None and args.max_turns < 1:
        raise ValueError(f"--max-turns must be >= 1, got {args.max_turns}")
    if not 0.0 <= args.noise <= 1.0:
        raise ValueError(f"--noise must be in [0, 1], got {args.noise}")
    kv_cache_mb = factory.check_kv_cache_mb(args.kv_cache_mb, "--kv-cache-mb")
    drop_tokens = factory.check_drop_tokens(args.drop_tokens, "--drop-tokens", policy=args.policy)
    say = lambda text: print(text, flush=True)  # noqa: E731  every line reaches the user at once
    say(f"agentrm play: {args.env} ({args.split} split), task {args.seed}, policy {_policy_label(args.policy, args.model)}")
    env = factory.make_env(args.env, seed=args.seed, split=args.split)
    in_process = args.policy not in ("expert", "random") and not args.policy.startswith(("http://", "https://"))
    if args.policy in ("bundled", "jax", "model") and not args.model:
        say(_BUNDLED_NOTE)
    if in_process:
        say("loading the model and its tokenizer (a few seconds; the first run also builds the tokenizer cache) ...")
    t0 = time.perf_counter()
    if in_process:
        from agentrm_jax.models.compile_cache import use_persistent_compile_cache

        use_persistent_compile_cache()
    policy = factory.make_policy(args.policy, env, model=args.model, seed=args.seed, noise=args.noise,
                                 max_new_tokens=args.max_new_tokens, timeout=args.timeout, kv_cache_mb=kv_cache_mb,
                                 drop_tokens=drop_tokens)
    t_load = time.perf_counter() - t0
    if in_process:
        say(f"loaded in {t_load:.1f} s")
    limit = min(env.max_turns, args.max_turns) if args.max_turns else env.max_turns
    decoding = "greedy" if args.temperature == 0 else f"temperature {args.temperature}"
    say(f"playing up to {limit} turns, {decoding}"
        + ("; turn 1 includes compiling the sampler for this prompt length (once per length bucket)"
           if in_process else ""))
    clock = {"last": time.perf_counter()}

    def show(turn, step, raw):
        now = time.perf_counter()
        say(f"--- turn {turn + 1} of {limit} ({now - clock['last']:.1f} s) ---")
        clock["last"] = now
        if args.verbose and raw:
            say(f"[raw] {raw!r}")
        if step.thought:
            say(f"Thought: {step.thought}")
        say(f"Action: {step.action or '(none parsed)'}")
        say(f"Observation: {step.observation}")

    from agentrm_jax.agents.loop import run_episode

    t0 = time.perf_counter()
    trajectory = run_episode(env, policy, max_turns=args.max_turns, temperature=args.temperature,
                             seed=args.seed, one_shot=not args.no_one_shot, on_step=show,
                             on_reset=lambda observation: say(f"Task: {observation}"))
    t_play = time.perf_counter() - t0
    turns = len(trajectory)
    actions = [s.action or "(none)" for s in trajectory.steps]
    distinct = len(set(actions))
    say("=== summary ===")
    for label, value in (
            ("environment", f"{args.env}, {args.split} task {args.seed}"),
            ("policy", f"{_policy_label(args.policy, args.model)}, {decoding}"),
            ("success", "yes" if trajectory.success else "no"),
            ("progress", f"{trajectory.progress:.2f} (fraction of the task's subgoals met, 0 to 1)"),
            ("turns", f"{turns} of at most {limit}" + (" (the episode ended)" if turns < limit else "")),
            ("actions", f"{distinct} distinct of {turns}" + (", one action repeated every turn"
                                                              if turns > 1 and distinct == 1 else "")),
            ("time", f"{time.perf_counter() - t_start:.1f} s in all: "
                     + (f"model load {t_load:.1f} s, " if in_process else "") + f"play {t_play:.1f} s"
                     f" ({t_play / max(turns, 1):.1f} s a turn)")):
        say(f"{label:<12} {value}")
    if args.output:
        from agentrm_jax.records import append_jsonl

        append_jsonl(args.output, [trajectory])
        say(f"trajectory appended to {args.output}")
    return 0


def register(subparsers) -> None:
    """Add `serve` and `play` to an argparse subparsers object (from `parser.add_subparsers()`)."""
    serve = subparsers.add_parser(
        "serve", help="serve a model behind an OpenAI-compatible HTTP API",
        description="Serve our JAX model (default: the bundled SmolLM2-135M-Instruct) behind an OpenAI-compatible "
                    "API: POST /v1/chat/completions (messages, n, temperature, top_p, max_tokens, stop, seed) and "
                    "GET /v1/models. Generations run one at a time; the n samples of a request share one "
                    "prefill. Point `agentrm play --policy http://HOST:PORT/v1` or any OpenAI client at it.")
    serve.add_argument("--model", default=None,
                       help="HF model directory, .gguf file or `agentrm sft` run directory (its policy: base + LoRA "
                            "adapters, unmerged) (default: the bundled SmolLM2-135M-Instruct GGUF)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000; 0 = any free port)")
    serve.add_argument("--model-name", default=None, help="model id reported by /v1/models (default: file name)")
    serve.add_argument("--max-batch", type=int, default=8, help="rows per prefill batch (default 8)")
    serve.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    serve.add_argument("--api-key", default=None,
                       help="require `Authorization: Bearer KEY` on every request (else 401); default: "
                            "$AGENTRM_API_KEY if set, else no key. The variable keeps the key out of `ps`")
    serve.set_defaults(func=_cmd_serve)

    play = subparsers.add_parser(
        "play", help="play one episode of an environment and print it turn by turn",
        description="Run one ReAct episode (Thought/Action each turn) on task SEED of an environment and print "
                    "every observation, thought and action, then the success and progress. Policies: "
                    "bundled (our JAX model; --model PATH for another), expert (the env's oracle plan), "
                    "random (uniform over the available actions), or the URL of an OpenAI-compatible server "
                    "(e.g. http://127.0.0.1:8000/v1 from `agentrm serve`; the key, if any, is read from "
                    "$OPENAI_API_KEY).")
    play.add_argument("--env", required=True, help="environment name (e.g. maze, babyai, tools, pddl)")
    play.add_argument("--seed", type=int, default=0, help="task instance (default 0)")
    play.add_argument("--split", default="train", choices=["train", "test"], help="task split (default train)")
    play.add_argument("--policy", default="bundled",
                      help="bundled | expert | random | MODEL_PATH (HF dir or .gguf) | http(s)://HOST:PORT/v1[#model] "
                           "(default bundled)")
    play.add_argument("--model", default=None,
                      help="with bundled: model path (default the bundled GGUF); with a URL: the model name "
                           "to request (default: the first one the server lists)")
    play.add_argument("--max-turns", type=int, default=None, help="stop after this many turns (default: the env's)")
    play.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0 = greedy)")
    play.add_argument("--max-new-tokens", type=int, default=96, help="tokens per step at most (default 96)")
    play.add_argument("--kv-cache-mb", type=float, default=0.0,
                      help="in-process model policies: MB of prefix KV cache, so a turn prefills only what its "
                           "context added (default 0 = off)")
    play.add_argument("--drop-tokens", type=int, default=None,
                      help="in-process model policies: a context longer than the model's window loses its oldest "
                           "steps in blocks of this many tokens (default a quarter of the window; 1: one step at "
                           "a time)")
    play.add_argument("--noise", type=float, default=0.0,
                      help="with expert: probability of a random action instead of the plan's (default 0)")
    play.add_argument("--timeout", type=float, default=60.0, help="with a URL: seconds per request (default 60)")
    play.add_argument("--no-one-shot", action="store_true", help="leave the worked example out of the prompt")
    play.add_argument("--output", default=None, help="append the trajectory to this JSONL file")
    play.add_argument("-v", "--verbose", action="store_true", help="also print the policy's raw text")
    play.set_defaults(func=_cmd_play)
