"""`python -m tests.kit.rbac_usage FILE [VALUES.json]`: which verbs of which rules of the chart's RBAC the
operator tests used, and which they never did, from the usage they recorded with KUBEVOLVE_RBAC_USAGE=FILE
(tests/kit/cluster.py); and what the API server's checks cost."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from kubevolve.testing.rbac import RbacPolicy
from tests.kit.cluster import render_chart


def main(path: str, values_path: str | None = None) -> None:
    values = json.loads(Path(values_path).read_text()) if values_path else {"operator": {"trainJobs": True}}
    used: Counter[tuple[str, int, str, str]] = Counter()
    seconds, requests = 0.0, Counter[str]()
    for line in Path(path).read_text().splitlines():
        entry = json.loads(line)
        if "role" in entry:
            used[(entry["role"], entry["rule"], entry["verb"], entry["resource"])] += entry["count"]
        else:
            seconds += entry["seconds"]
            requests.update(entry["requests"])
    policy = RbacPolicy.from_objects(render_chart(values))
    for role, index, rule in policy.every_rule():
        print(f"{role} rule {index}: {json.dumps({k: v for k, v in rule.items() if k != 'resourceNames'})}")
        for resource in rule.get("resources") or rule.get("nonResourceURLs") or []:
            for verb in rule["verbs"]:
                count = sum(
                    n for (r, i, v, res), n in used.items() if (r, i, v, res) == (role, index, verb, resource)
                )
                print(f"    {count if count else 'UNUSED':>6}  {verb} {resource}")
    print(f"\nrequests by identity: {dict(requests)}")
    print(f"time in authorisation and validation: {seconds:.2f} s for {sum(requests.values())} requests")


if __name__ == "__main__":
    main(*sys.argv[1:])
