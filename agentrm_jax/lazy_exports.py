"""Package `__init__`s that name their public API without importing it (PEP 562).

`from agentrm_jax.rewards import ExplicitRM` still works, but importing
`agentrm_jax.rewards` (which every `agentrm` subcommand module does, to register
its options) no longer imports jax: the submodule holding a name is imported the
first time the name is looked up. That is what keeps `agentrm --help` fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, namespace: dict, exports: dict[str, str]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package` whose public `name -> submodule` table is `exports`.

    The submodule is relative to the package ("explicit" -> "agentrm_jax.rewards.explicit").
    A looked-up value is stored in `namespace` (the package's globals), so each name
    is resolved once; unknown names raise AttributeError as usual.
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
