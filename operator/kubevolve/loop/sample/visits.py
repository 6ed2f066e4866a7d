"""Visit counts per parent: committed children plus selections still in flight.

Committed visits come from the nodes themselves (a child's `parent_ids`), so replaying the run rebuilds them.
In-flight visits exist only in the live process, between `select` and the child's `observe` (or `cancel`):
they make proposals issued ahead of need spread over parents instead of piling onto one.
"""

from __future__ import annotations

from collections.abc import Iterable


class VisitLedger:
    def __init__(self) -> None:
        self._committed: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self.total = 0  # every visit of every node, committed and in flight
        self.pending = 0  # selections in flight

    def visits(self, node_id: str) -> int:
        return self._committed.get(node_id, 0) + self._in_flight.get(node_id, 0)

    def in_flight(self, node_id: str) -> int:
        return self._in_flight.get(node_id, 0)

    def hold(self, parent_ids: Iterable[str]) -> None:
        """A selection was made: its parents are visited from now on."""
        for pid in parent_ids:
            self._in_flight[pid] = self._in_flight.get(pid, 0) + 1
            self.total += 1
        self.pending += 1

    def commit(self, parent_ids: Iterable[str]) -> None:
        """A child was stored: its visits become committed, taking over a held visit where there is one."""
        took_over = False
        for pid in parent_ids:
            self._committed[pid] = self._committed.get(pid, 0) + 1
            if self._take(pid):
                took_over = True
            else:
                self.total += 1
        if took_over and self.pending:
            self.pending -= 1

    def release(self, parent_ids: Iterable[str]) -> None:
        """A selection was dropped: give back the visits it held."""
        released = False
        for pid in parent_ids:
            if self._take(pid):
                self.total -= 1
                released = True
        if released and self.pending:
            self.pending -= 1

    def _take(self, pid: str) -> bool:
        held = self._in_flight.get(pid, 0)
        if not held:
            return False
        if held == 1:
            del self._in_flight[pid]
        else:
            self._in_flight[pid] = held - 1
        return True
