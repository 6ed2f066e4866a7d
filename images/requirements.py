"""Print the project's pinned dependencies (and those of the named extras) from pyproject.toml, one a line.

The images install these in a layer of their own before they copy the package's code, so that a change to
the code rebuilds only the small layer that installs kubevolve itself (`pip install --no-deps .`)."""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
extras = project.get("optional-dependencies", {})
unknown = [name for name in sys.argv[1:] if name not in extras]
if unknown:
    sys.exit(f"unknown extra {unknown[0]!r}; pyproject.toml has {sorted(extras)}")
print("\n".join(project["dependencies"] + [req for name in sys.argv[1:] for req in extras[name]]))
