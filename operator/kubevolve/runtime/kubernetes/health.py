"""The operator's probes: `/healthz` (liveness) and `/readyz` (readiness), served from the operator's own loop.

Liveness is the loop answering at all. Readiness says whether this replica does its part:
- the leader: kopf has started and is watching (its ready flag);
- a standby: its last look at the Lease succeeded, so it can take over when the leader goes;
- neither, while the API server refuses it (HTTP 403 on any of its requests, its own or kopf's, in the last
  `FORBIDDEN_SECONDS`): a replica without the RBAC it needs is not ready, whatever its role;
- nor while it cannot reach the Lease (a standby that could not take over) or has lost it and is stopping.

Standbys are ready on purpose: a PodDisruptionBudget counts ready pods, and a standby that never became
ready would block every drain of the leader's node.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

FORBIDDEN_SECONDS = 300.0  # a 403 keeps the replica unready this long (kopf retries, then gives up quietly)
LEASE_STALE_FACTOR = 3.0  # a standby whose last good Lease read is older than this many retries is unready


@dataclass
class Health:
    """What the probes report, fed by the elector, kopf's ready flag, and every 403 the operator sees."""

    role: str = "starting"  # starting | standby | leader | stopping
    kopf_ready: Callable[[], bool] = lambda: False
    lease_retry_seconds: float | None = None  # None: no leader election (a single replica)
    lease_message: str = ""
    lease_ok_at: float | None = None
    forbidden: str = ""
    forbidden_at: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic)

    def lease_result(self, ok: bool, message: str) -> None:
        self.lease_message = message
        if ok:
            self.lease_ok_at = self.clock()

    def refused(self, message: str) -> None:
        self.forbidden, self.forbidden_at = message, self.clock()

    def problems(self) -> list[str]:
        """Why this replica is not ready; empty when it is."""
        now, out = self.clock(), []
        if self.forbidden_at is not None and now - self.forbidden_at < FORBIDDEN_SECONDS:
            out.append(
                f"the API server refused a request (403) {now - self.forbidden_at:.0f} s ago: {self.forbidden}"
            )
        if self.role == "leader" and not self.kopf_ready():
            out.append("leader, but kopf has not started watching yet")
        elif self.role in ("starting", "stopping"):
            out.append(self.role)
        elif self.role == "standby" and self.lease_retry_seconds is not None:
            fresh = self.lease_ok_at is not None and now - self.lease_ok_at < LEASE_STALE_FACTOR * max(
                self.lease_retry_seconds, 1.0
            )
            if not fresh:
                out.append(f"standby that cannot read the lease: {self.lease_message}")
        return out

    def report(self) -> dict[str, Any]:
        return {"role": self.role, "lease": self.lease_message, "problems": self.problems()}


class ForbiddenLogWatch(logging.Handler):
    """kopf retries a refused request and logs each attempt (`... -> APIForbiddenError(...)`, kopf 1.45
    _cogs/clients/api.py) before giving up; its watch streams report nothing else. This hands those lines to
    `Health.refused`."""

    def __init__(self, health: Health):
        super().__init__(level=logging.WARNING)
        self.health = health

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "APIForbiddenError" in message or "Not enough permissions" in message:
            self.health.refused(message[:300])


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` or a URL (`http://0.0.0.0:8080/healthz`, the older --liveness form) -> (host, port)."""
    text = address if "://" in address else f"http://{address}"
    parts = urlsplit(text)
    if not parts.hostname or parts.port is None:
        raise ValueError(f"health address {address!r}: expected HOST:PORT, e.g. 0.0.0.0:8080")
    return parts.hostname, parts.port


async def serve_probes(health: Health, host: str, port: int) -> web.AppRunner:
    """Serve /healthz and /readyz until the returned runner is cleaned up."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"role": health.role})

    async def readyz(_: web.Request) -> web.Response:
        report = health.report()
        return web.Response(
            text=json.dumps(report),
            status=503 if report["problems"] else 200,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
