"""Deterministic names: the same candidate, role and attempt always give the same Job and node id.

That is what makes creation idempotent: a reconcile that runs twice (or after a restart) asks for the same
name and the API server answers "already exists". A candidate's *key* is its proposal index, zero-padded
(`00007`), with `d1`, `d2`... for the debug retries of a failed candidate (`00007d1`).
"""

from __future__ import annotations

import hashlib
import re

from kubevolve.core.kinds import Role

_ROLE_WORD = {Role.PROPOSE: "propose", Role.EVALUATE: "eval", Role.ANALYZE: "analyze"}
_KEY = re.compile(r"^(\d+)(?:d(\d+))?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
BASE_MAX = 40  # room for "-analyze-0000123d10-a9" within the 63 characters of a Job name
# A TrainJob's JobSet (same name) names its pods `<name>-<replicatedJob>-<job index>-<pod index>-<5 random>`,
# and JobSet's webhook refuses a JobSet whose longest pod name would pass 63 characters
# (jobset pkg/webhooks/jobset_webhook.go): with kubevolve's runtime, "-launcher-0-" and up to 1023 nodes.
TRAINJOB_NAME_MAX = 63 - len("-launcher-0-1023-abcde")


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def base_name(run: str) -> str:
    """A DNS-1035 label prefix for the run's Jobs (TrainJob names must be one): short, no dots, stable."""
    clean = re.sub(r"[^a-z0-9-]", "-", run.lower()).strip("-") or "run"
    if not clean[0].isalpha():
        clean = "r" + clean
    if clean == run and len(clean) <= BASE_MAX:
        return clean
    return f"{clean[: BASE_MAX - 7].rstrip('-')}-{_digest(run)}"


def run_label(run: str) -> str:
    """The run's name as a label value (at most 63 characters); long names are shortened with a hash."""
    return run if _LABEL_VALUE.match(run) else base_name(run)


def make_key(index: int, retry: int = 0) -> str:
    return f"{index:05d}" + (f"d{retry}" if retry else "")


def parse_key(key: str) -> tuple[int, int]:
    match = _KEY.match(key)
    if not match:
        raise ValueError(f"not a candidate key: {key!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def retry_key(key: str) -> str:
    """The key of the next debug retry of the candidate `key`."""
    index, retry = parse_key(key)
    return make_key(index, retry + 1)


def node_id(run: str, key: str) -> str:
    return f"{run}-c{key}"


def key_of_node(run: str, node: str) -> str | None:
    prefix = f"{run}-c"
    if not node.startswith(prefix):
        return None
    key = node[len(prefix) :]
    return key if _KEY.match(key) else None


def job_name(run: str, role: Role, key: str, attempt: int = 0) -> str:
    name = f"{base_name(run)}-{_ROLE_WORD[role]}-{key}" + (f"-a{attempt}" if attempt else "")
    if len(name) > 63:  # only for absurd keys; still deterministic
        name = f"{base_name(run)[:20]}-{_digest(name)}-{attempt}"
    return name


def trainjob_name(run: str, key: str, attempt: int = 0) -> str:
    """The evaluation Job's name, shortened (deterministically) where a TrainJob's pods would outgrow it."""
    name = job_name(run, Role.EVALUATE, key, attempt)
    if len(name) <= TRAINJOB_NAME_MAX:
        return name
    tail = f"-{_digest(name)}" + (f"-a{attempt}" if attempt else "")
    return f"{base_name(run)[: TRAINJOB_NAME_MAX - len(tail)].rstrip('-')}{tail}"


def runtime_name(run: str, content: str) -> str:
    """The run's own Kubeflow TrainingRuntime, one per distinct content (a new image makes a new one)."""
    return f"{base_name(run)}-mpi-{_digest(content)}"
