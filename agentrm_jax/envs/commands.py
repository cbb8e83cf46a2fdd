"""`agentrm envserve`: `register(subparsers)` adds it to the `agentrm` CLI.

    agentrm envserve --env maze --port 36001       one of our envs behind AgentGym's HTTP protocol

This module only parses and prints (and its top level imports only the standard
library, so `agentrm --help` stays fast); the server is `envs.envserver`.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _cmd_envserve(args: argparse.Namespace) -> int:
    from agentrm_jax.envs.envserver import start_env_server, stop_env_server

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if args.max_turns is not None and args.max_turns < 1:
        raise ValueError(f"--max-turns must be >= 1, got {args.max_turns}")
    if args.max_envs < 1:
        raise ValueError(f"--max-envs must be >= 1, got {args.max_envs}")
    try:
        server, thread = start_env_server(args.env, args.host, args.port, split=args.split,
                                          max_turns=args.max_turns, max_envs=args.max_envs)
    except OSError as e:  # the port is taken, the host is not ours, ...
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    print(f"serving {args.env} ({args.split} split) at {server.url} with AgentGym's protocol - POST /create, "
          f"/reset {{id, data_idx}}, /step {{id, action}}, /close; GET /observation?id=, /available_actions?id=; "
          f"client: make(\"agentgym\", url=\"{server.url}\"); Ctrl-C stops", flush=True)
    from agentrm_jax.serve_loop import serve_until_interrupted

    serve_until_interrupted(thread, lambda: stop_env_server(server, thread))
    return 0


def register(subparsers) -> None:
    """Add `envserve` to an argparse subparsers object (from `parser.add_subparsers()`)."""
    serve = subparsers.add_parser(
        "envserve", help="serve one of our environments over AgentGym's HTTP protocol",
        description="Serve a registered environment (maze, pddl, tools, babyai, ...) the way AgentGym's env "
                    "servers do: POST /create -> {id}; POST /reset {id, data_idx}; POST /step {id, action} -> "
                    "{observation, reward, done, success, available_actions}; GET /observation?id=, "
                    "/available_actions?id=, /expert_actions?id=; POST /close {id}. reward is the env's "
                    "progress in [0, 1]. Play it with make(\"agentgym\", url=\"http://HOST:PORT\").")
    serve.add_argument("--env", required=True, help="environment name (e.g. maze, pddl, tools)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=36001, help="port to bind (default 36001; 0 = any free port)")
    serve.add_argument("--split", default="test", choices=["train", "test"],
                       help="which split data_idx indexes (default test)")
    serve.add_argument("--max-turns", type=int, default=None, help="turn limit per episode (default: the env's)")
    serve.add_argument("--max-envs", type=int, default=64,
                       help="environment instances live at once; /create beyond answers 503 (default 64)")
    serve.set_defaults(func=_cmd_envserve)
