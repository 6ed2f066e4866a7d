"""The local runtime's side of a run's owner: it claims the run and renews the heartbeat that
`kubevolve.core.liveness` reads (the judgement lives there, for every reader: the CLI, the ui, the runtime)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from kubevolve.core.liveness import HEARTBEAT_SECONDS, this_process
from kubevolve.core.models import RunRecord
from kubevolve.store.base import Store, StoreError


def claim(record: RunRecord) -> None:
    """Make this process the run's owner (the caller writes the record)."""
    record.owner = this_process()


async def keep_alive(store: Store, record: RunRecord, interval: float = HEARTBEAT_SECONDS) -> None:
    """Renew the owner's heartbeat every `interval` seconds until cancelled. The record is the runtime's own
    (the one it finishes), so a heartbeat never writes back an older phase."""
    while True:
        await asyncio.sleep(interval)
        if record.owner is None:
            return
        record.owner.heartbeat_at = time.time()
        with contextlib.suppress(StoreError):  # a busy store misses one beat, not the run
            store.put_run(record)
