"""Whether the process that runs a local run is still there (read-only: the runtime writes the owner).

A local run's record says Running from the moment `kubevolve run` starts it until it finishes or is
interrupted; `kill -9`, an OOM kill or a power cut leave it saying Running. So the local runtime records the
run's owner (host, pid, the process's start time) and renews a heartbeat, and readers judge a Running record
by them: on the same host, a pid that is gone, a zombie, or now another process (a different start time)
means the run is dead. From another host only the heartbeat's age can be shown. Runs on a cluster have no
owner (the operator writes their record, and Kubernetes restarts their steps): they are never judged here.
"""

from __future__ import annotations

import os
import socket
import time

from kubevolve.core.models import RunOwner, RunPhase, RunRecord

HEARTBEAT_SECONDS = 15.0
START_TIME_SLACK = 2.0  # seconds: the kernel's boot time, from which a start time is computed, can jitter


def this_process() -> RunOwner:
    pid = os.getpid()
    return RunOwner(
        host=socket.gethostname(),
        pid=pid,
        process_started_at=process_start_time(pid),
        heartbeat_at=time.time(),
    )


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from the state on (the command name before them may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), or None where /proc cannot tell (not Linux, no such pid)."""
    stat, boot = _proc_stat(pid), _boot_time()
    if stat is None or boot is None or len(stat) < 20:
        return None
    try:
        return boot + int(stat[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks
    except (ValueError, OSError):
        return None


def why_gone(owner: RunOwner) -> str | None:
    """Why the owner's process is certainly not running the run any more; None if it may be (or is on
    another host, where this cannot be known)."""
    if owner.host != socket.gethostname():
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return f"process {owner.pid} is gone"
    except PermissionError:  # it exists, as another user's process: its start time still tells
        pass
    stat = _proc_stat(owner.pid)
    if stat is not None and stat[0] == "Z":
        return f"process {owner.pid} is gone"  # killed, not yet reaped by its parent
    started = process_start_time(owner.pid)
    recorded = owner.process_started_at
    if recorded is not None and started is not None and abs(started - recorded) > START_TIME_SLACK:
        return f"process {owner.pid} is gone (the pid is another process's now)"
    return None


def dead_reason(record: RunRecord) -> str | None:
    """Why a run whose record says Running is not running; None if it may be, or is not a local run."""
    if record.phase is not RunPhase.RUNNING or record.owner is None:
        return None
    return why_gone(record.owner)


def live_owner(record: RunRecord, now: float | None = None) -> str | None:
    """Who is running the run now, described; None when nobody may be (no owner, not Running, the process is
    gone, or a heartbeat on another host is older than three beats). Two processes must never run one run."""
    if record.phase is not RunPhase.RUNNING or record.owner is None or why_gone(record.owner) is not None:
        return None
    who = record.owner
    age = (time.time() if now is None else now) - who.heartbeat_at
    if who.host != socket.gethostname() and age > 3 * HEARTBEAT_SECONDS:
        return None
    return f"process {who.pid} on {who.host} (heartbeat {max(age, 0.0):.0f}s ago)"
