"""The shipped PDDL domain files (`agentrm_jax/envs/pddl_domains/*.pddl`, package data): where they are, which
there are, their text and their parse by the `pddl` package (imported lazily).
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["DOMAINS", "DOMAIN_DIR"]

# The domain files stay in envs/pddl_domains/ (pyproject's package data), beside this package.
DOMAIN_DIR = Path(__file__).parent.parent / "pddl_domains"
DOMAINS = ("blocksworld", "gripper", "logistics")


@functools.lru_cache(maxsize=None)
def _domain_text(domain: str) -> str:
    """The PDDL text of a shipped domain (ValueError naming the available ones if there is none)."""
    path = DOMAIN_DIR / f"{domain}.pddl"
    if not path.exists():
        raise ValueError(f"unknown PDDL domain {domain!r}; available: {', '.join(DOMAINS)}")
    return path.read_text()


@functools.lru_cache(maxsize=None)
def _parsed_domain(domain: str):
    """A shipped domain parsed by the `pddl` package (once per process)."""
    from pddl.parser.domain import DomainParser

    return DomainParser()(_domain_text(domain))
