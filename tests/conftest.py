"""Shared fixtures: a tiny task written to a temp folder, an isolated KUBEVOLVE_HOME, a SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevolve.store.sqlite import SQLiteStore
from tests.kit.toy_task import write_task


@pytest.fixture
def toy_task(tmp_path: Path) -> Path:
    return write_task(tmp_path / "toy")


@pytest.fixture(autouse=True)
def kubevolve_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "kvhome"
    monkeypatch.setenv("KUBEVOLVE_HOME", str(home))
    monkeypatch.delenv("KUBEVOLVE_STORE", raising=False)
    return home


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "store.db")
    yield s
    s.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Like the evaluation worker (one core per slot): many small ops on two contended OpenMP threads are
    several times slower than on one. Seeding switches on deterministic algorithms process-wide; the
    tests of other modules get the state they started with back. Torch is imported here, not at the top,
    so that test sessions without the task tests don't pay for it."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
