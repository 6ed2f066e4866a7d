"""Print the project's pinned dependencies (and those of the named extras) from pyproject.toml, one a line.

The images install these in layers of their own, before they build kubevolve, so that a change to the code,
or to pyproject.toml that leaves the dependencies as they are, rebuilds none of them. An extra that names
the project itself (`kubevolve[ui]`) is expanded."""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
extras = project.get("optional-dependencies", {})


def requirements(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if name not in extras:
            sys.exit(f"unknown extra {name!r}; pyproject.toml has {sorted(extras)}")
        for req in extras[name]:
            if req.startswith(project["name"] + "["):
                out += requirements(req[len(project["name"]) + 1 : -1].split(","))
            else:
                out.append(req)
    return out


print("\n".join(dict.fromkeys(project["dependencies"] + requirements(sys.argv[1:]))))
