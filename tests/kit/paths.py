"""Where the repository's folders are, for tests that read the chart, the tasks or the dashboards."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
