"""A failed restore's abandoned tensorstore reads are quieted, and nothing else is."""

from __future__ import annotations

import logging
import re

from agentrm_jax.training.checkpoint import ORBAX_NEVER_AWAITED, _is_orbax_read_left_over, _quiet_closed_loop_noise


def _task_record(exc: BaseException, msg: str = "Task exception was never retrieved") -> logging.LogRecord:
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, (type(exc), exc, None))


def test_only_abandoned_tensorstore_reads_are_dropped_from_asyncio_logs():
    _quiet_closed_loop_noise()
    read = ValueError("OUT_OF_RANGE: Error reading ... [tensorstore_spec='{\"driver\":\"zarr\"}']")
    assert _is_orbax_read_left_over(_task_record(read))
    assert not logging.getLogger("asyncio").filter(_task_record(read))  # the installed filter drops it
    for other in (_task_record(ValueError("a bug of someone else's")), _task_record(RuntimeError(str(read))),
                  _task_record(read, msg="Future exception was never retrieved")):
        assert not _is_orbax_read_left_over(other)
        assert logging.getLogger("asyncio").filter(other)


def test_only_orbaxs_never_awaited_metadata_read_warning_matches():
    assert re.match(ORBAX_NEVER_AWAITED, "coroutine 'Store._get_array_metadatas' was never awaited")
    assert not re.match(ORBAX_NEVER_AWAITED, "coroutine 'mine' was never awaited")
    assert not re.match(ORBAX_NEVER_AWAITED, "coroutine 'StoreX_get_array_metadatas' was never awaited")
