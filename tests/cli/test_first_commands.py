"""The first commands a user copies resume an interrupted run rather than start over (issue 18)."""

from __future__ import annotations

import re

from tests.kit.paths import REPO


def test_make_demo_resumes_an_interrupted_run():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert recipe is not None, "the Makefile has a demo target"
    runs = [line for line in recipe.group(1).splitlines() if "kubevolve run " in line]
    assert runs and not any("--new" in line for line in runs)


def test_no_documented_run_command_starts_over():
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            if re.search(r"kubevolve run \S", line):
                assert "--new" not in line, f"{doc.name}: {line}"
