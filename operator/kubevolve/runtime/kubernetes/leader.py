"""Leader election with a coordination.k8s.io/v1 Lease, so that several operator replicas never reconcile at once.

Only the replica that holds the Lease runs kopf; the others wait, ready to take over. The API server makes
taking the Lease atomic: a replica writes it back with the resourceVersion it read, and of two replicas
writing the same version one gets 409 Conflict. This is client-go's leader election (kube-controller-manager,
controller-runtime), with its three durations:

- `lease_seconds`: how long a holder's last renewal keeps others out. Expiry is measured on the waiting
  replica's own clock, from when it last saw the record change, never from the timestamps in the Lease (the
  replicas' clocks may disagree);
- `renew_deadline_seconds`: the holder stops reconciling if it could not renew for this long. It is shorter
  than `lease_seconds`, so the holder has stopped (its reconcile daemons are cancelled within their 10 s
  cancellation timeout) before another replica can take the Lease;
- `retry_seconds`: how often the holder renews and a waiting replica tries to take the Lease.

A holder that stops cleanly gives the Lease up (an empty holder, as client-go's ReleaseOnCancel), so the next
replica takes over within `retry_seconds` instead of waiting out the Lease.

kopf's own peering was the earlier way: every replica runs with the same priority unless told otherwise, and
kopf pauses all peers of equal priority (kopf/_core/engines/peering.py); with namespaced watching it looks for
a KopfPeering object in every namespace. Nothing there is atomic: two peers starting together both run until
they see each other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from kubevolve.errors import KubevolveError

log = logging.getLogger("kubevolve.operator")


class LeaseError(KubevolveError, RuntimeError):
    """The Lease could not be read or written for a reason other than another replica winning it."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class LeaseConflict(LeaseError):
    """Another replica created or wrote the Lease first (HTTP 409): it won this round."""


class LeaseApi(Protocol):
    """The three Lease calls leader election makes (runtime.kubernetes.kube.Kube implements them)."""

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LeaseSettings:
    name: str
    namespace: str
    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError(
                "leader election needs 0 < retry < renew deadline < lease duration, got "
                f"{self.retry_seconds}, {self.renew_deadline_seconds}, {self.lease_seconds}"
            )


def default_identity() -> str:
    """The pod's name (the chart passes POD_NAME), else the host's, with a random suffix: a restarted
    container is a new candidate, never mistaken for the holder it replaced."""
    pod = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or "kubevolve-operator"
    return f"{pod}_{uuid.uuid4().hex[:8]}"


def micro_time(epoch: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Takes, keeps and gives up one Lease for one identity. Every outcome of an API call is also reported to
    `on_result(ok, message)` (the readiness probe's view of this replica)."""

    def __init__(
        self,
        api: LeaseApi,
        settings: LeaseSettings,
        identity: str | None = None,
        *,
        on_result: Callable[[bool, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.api, self.settings = api, settings
        self.identity = identity or default_identity()
        self.on_result = on_result or (lambda ok, message: None)
        self.clock, self.wall = clock, wall
        self.leading = False
        self._observed: tuple[Any, ...] | None = None  # the holder's record as last read
        self._observed_at = 0.0  # when it last changed, on this replica's clock
        self._renewed_at = 0.0  # this replica's last successful write, on its clock

    # one round ----------------------------------------------------------------------------------------
    def _spec(self, holder: str, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = micro_time(self.wall())
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": max(1, round(self.settings.lease_seconds)),
            "renewTime": now,
            "acquireTime": now,
            "leaseTransitions": 0,
        }
        if previous is not None:
            transitions = int(previous.get("leaseTransitions") or 0)
            if previous.get("holderIdentity") == holder:
                spec["acquireTime"] = previous.get("acquireTime") or now
                spec["leaseTransitions"] = transitions
            else:
                spec["leaseTransitions"] = transitions + 1
        return spec

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: True when this replica holds the Lease afterwards."""
        s = self.settings
        try:
            lease = await self.api.get_lease(s.namespace, s.name)
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": s.name, "namespace": s.namespace},
                    "spec": self._spec(self.identity, None),
                }
                await self.api.create_lease(s.namespace, body)
                return self._won()
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
            now = self.clock()
            if record != self._observed:
                self._observed, self._observed_at = record, now
            duration = float(spec.get("leaseDurationSeconds") or s.lease_seconds)
            if holder and holder != self.identity and now < self._observed_at + duration:
                self.on_result(True, f"standby: {holder} holds the lease")
                return self._lost(holder)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {**(lease.get("metadata") or {}), "name": s.name, "namespace": s.namespace},
                "spec": self._spec(self.identity, spec),
            }
            await self.api.replace_lease(s.namespace, s.name, body)  # 409 if anyone wrote it since our read
            return self._won()
        except LeaseConflict:
            self.on_result(True, "standby: another replica wrote the lease first")
            return self._lost("another replica")
        except LeaseError as err:
            self.on_result(False, str(err))
            log.warning(f"leader election: {err}")
            return False

    def _won(self) -> bool:
        if not self.leading:
            log.info(f"{self.identity} holds the lease {self.settings.namespace}/{self.settings.name}")
        self.leading, self._renewed_at = True, self.clock()
        self.on_result(True, "leader")
        return True

    def _lost(self, holder: str) -> bool:
        if self.leading:
            log.warning(f"{self.identity} lost the lease to {holder}")
        self.leading = False
        return False

    # the loops ----------------------------------------------------------------------------------------
    async def acquire(self, stopping: Callable[[], bool]) -> bool:
        """Try every `retry_seconds` until this replica holds the Lease (True) or `stopping()` (False)."""
        while not stopping():
            if await self.try_acquire_or_renew():
                return True
            await asyncio.sleep(self.settings.retry_seconds)
        return False

    async def keep(self) -> None:
        """Renew every `retry_seconds`; return once the Lease is lost: another replica holds it, or no
        renewal succeeded for `renew_deadline_seconds`."""
        while True:
            await asyncio.sleep(self.settings.retry_seconds)
            if await self.try_acquire_or_renew():
                continue
            if self._observed is not None and self._observed[0] not in ("", self.identity):
                return  # someone else holds it now
            if self.clock() - self._renewed_at >= self.settings.renew_deadline_seconds:
                log.warning(
                    f"{self.identity} could not renew the lease for {self.settings.renew_deadline_seconds:g} s"
                )
                self.leading = False
                return

    async def release(self) -> None:
        """Give the Lease up if this replica still holds it, so that a standby takes over at once."""
        if not self.leading:
            return
        self.leading = False
        s = self.settings
        try:
            lease = await self.api.get_lease(s.namespace, s.name)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            spec = {
                **spec,
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "renewTime": micro_time(self.wall()),
            }
            await self.api.replace_lease(s.namespace, s.name, {**lease, "spec": spec})
            log.info(f"{self.identity} released the lease {s.namespace}/{s.name}")
        except LeaseError as err:  # the Lease then expires on its own
            log.warning(f"releasing the lease failed ({err}); the next replica waits for it to expire")
