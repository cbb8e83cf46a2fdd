"""Task seeds from the command line or a config, one parser for every command that plays tasks.

    parse_seeds("0-99") -> (0, ..., 99)        inclusive range
    parse_seeds("0,3,7") / parse_seeds("0-4,9") a list, ranges and single seeds mixed
    parse_seeds([0, 3, 7]) / parse_seeds(20)    a YAML list; an int is a count (0..19)

A bad value is a ValueError with one line that names `what` (the flag or key) and what was given; a
seed named twice is refused (it would play one task twice), as is a negative one. `agentrm collect`
(--seeds) and `agentrm explore` (ExploreConfig.seeds) use it.
"""

from __future__ import annotations

__all__ = ["parse_seeds"]


def parse_seeds(text: str | int | list | tuple, *, what: str = "seeds") -> tuple[int, ...]:
    """Task seeds, in the order given (see the module docstring); `what` names the value in errors."""
    if isinstance(text, bool):
        raise ValueError(f"{what} must be a range like 0-99, a list or a count, got {text!r}")
    if isinstance(text, int):
        if text < 1:
            raise ValueError(f"{what} as a count must be >= 1, got {text}")
        return tuple(range(text))
    if isinstance(text, (list, tuple)):
        parts = [str(x).strip() for x in text]
    else:
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
    seeds: list[int] = []
    try:
        for part in parts:
            lo, sep, hi = part.partition("-")
            if sep:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ValueError(f"{what} must be a range like 0-99, a list like 0,3,7 or both (0-4,9), got "
                         f"{text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"{what} must name at least one non-negative task seed, got {text!r}")
    seen: set[int] = set()
    for seed in seeds:
        if seed in seen:
            raise ValueError(f"{what} name task {seed} twice: {text!r}")
        seen.add(seed)
    return tuple(seeds)
