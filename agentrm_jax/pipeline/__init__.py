"""Pipelines of stages on top of the stage packages: a cached, resumable stage runner and `agentrm demo`.

    stages       Stage, run_stages, plan_stages: fingerprinted stage directories, skip / resume / refuse
    demo_config  DemoConfig: the demo's stage sizes from configs/demo.yaml (and its quick: section)
    demo         demo_stages(cfg): demos -> sft -> explore -> samples -> rm -> eval -> report
    commands     `agentrm demo`

On top of the layering (tests/test_layering.py): it calls the stage packages' public functions in
process, never their CLIs. Names are exported lazily, as in the other packages.
"""

from agentrm_jax.lazy_exports import lazy_exports

_EXPORTS = {"Stage": "stages", "StageContext": "stages", "StageMismatch": "stages", "plan_stages": "stages",
            "run_stages": "stages", "fingerprints": "stages", "DemoConfig": "demo_config", "demo_stages": "demo",
            "verdict": "demo"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
