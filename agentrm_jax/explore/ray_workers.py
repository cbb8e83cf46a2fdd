"""Exploration on Ray: one actor per worker grows chunks of trees; the caller stays the only writer.

    trees_on_ray(cfg, chunks, on_chunk)   yields tree rows (`Tree.to_dict`) as each chunk finishes

`cfg.ray` is "local" (start a Ray runtime on 127.0.0.1 for this run, shut down after it) or the
address of a running cluster ("auto", "HOST:PORT", "ray://HOST:PORT"; every node needs agentrm_jax
and the env's simulators installed). Each of the `cfg.workers` actors builds its env factory and its
policy once, in its constructor (a model policy loads once per actor, not per chunk), then grows the
chunks it is handed with `mcts.grow_trees`, exactly as a local worker process does. A chunk's trees
depend on the config and the chunk alone, so the trees are those of `--workers N` or of one process;
`runner.run_explore` writes them, so resume and exactly-once hold as for local workers.

A served policy (`policy: http://...`) makes every actor a client of one inference server, so many
actors share one model copy; a model policy in the actors themselves reserves `cfg.gpus_per_worker`
GPUs each. Ray is an optional dependency, imported only here and only when `cfg.ray` is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from agentrm_jax.explore.config import ExploreConfig
from agentrm_jax.explore.mcts import grow_trees

__all__ = ["RAY_HINT", "TreeWorker", "import_ray", "trees_on_ray"]

RAY_HINT = "--ray needs Ray, which is not installed: pip install 'agentrm_jax[ray]'"


def import_ray():
    """The `ray` module; ValueError (one line: how to install it) when it is not installed."""
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_HINT) from None
    return ray


class TreeWorker:
    """The body of one Ray actor: the config's env factory and policy, built once; `grow(chunk)` grows a
    chunk of task seeds in lockstep and returns their trees as rows."""

    def __init__(self, cfg: ExploreConfig):
        from agentrm_jax.explore.runner import env_factory, policy_maker

        self.cfg = cfg
        self.factory = env_factory(cfg)
        self.policy_for = policy_maker(cfg, self.factory)

    def grow(self, chunk: Sequence[int]) -> list[dict[str, Any]]:
        return [t.to_dict() for t in grow_trees(self.cfg, tuple(chunk), policy_for=self.policy_for,
                                                factory=self.factory)]

    def pid(self) -> int:
        return os.getpid()


def _connect(ray, cfg: ExploreConfig, workers: int) -> bool:
    """Start or join the runtime `cfg.ray` names; True when this call started it (and must shut it down)."""
    if ray.is_initialized():  # the caller's own runtime: use it, leave it running
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if cfg.ray == "local":
        # CPUs are a scheduling token here: every actor must fit, or the extra ones would wait forever
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                 num_cpus=max(workers, os.cpu_count() or 1), **quiet)
        return True
    try:
        ray.init(address=cfg.ray, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--ray {cfg.ray}: cannot join that Ray cluster ({first}); start one with `ray start "
                         "--head` or give --ray without an address for a local runtime") from None
    return True


def _reraise(ray, error: Exception):
    """A worker's exception as itself (an ExploreError stays one line), not Ray's wrapped traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(error, ray.exceptions.RayTaskError) and isinstance(cause, Exception):
        raise cause from None
    if isinstance(error, ray.exceptions.RayActorError):
        raise RuntimeError(f"a Ray explore worker died ({str(error).strip().splitlines()[0]}); trees written so far "
                           "are kept, rerun the same command to resume") from None
    raise error


def trees_on_ray(cfg: ExploreConfig, chunks: Sequence[tuple[int, ...]],
                 on_chunk: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Grow `chunks` on `min(cfg.workers, len(chunks))` Ray actors; yield tree rows chunk by chunk as they
    finish (in completion order), calling on_chunk(number of trees) after each. Closing the iterator kills
    the actors (and a runtime it started)."""
    ray = import_ray()
    workers = max(1, min(cfg.workers, len(chunks)))
    started = _connect(ray, cfg, workers)
    actors = []
    try:
        actor_cls = ray.remote(TreeWorker).options(num_cpus=1, num_gpus=cfg.gpus_per_worker)
        actors = [actor_cls.remote(cfg) for _ in range(workers)]
        queue = list(chunks)
        running: dict[Any, tuple[Any, tuple[int, ...]]] = {}  # result ref -> (actor, chunk)

        def hand(actor) -> None:
            if queue:
                chunk = queue.pop(0)
                running[actor.grow.remote(chunk)] = (actor, chunk)

        for actor in actors:
            hand(actor)
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, chunk = running.pop(ref)
            try:
                rows = ray.get(ref)
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
                _reraise(ray, e)
            hand(actor)
            if on_chunk is not None:
                on_chunk(len(chunk))
            yield from rows
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
