"""`kubevolve report`: one run as a self-contained HTML page (plots, lineage tree, best program and diff)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubevolve.cli.common import RunArg, StoreOpt, TenantOpt, err_console, get_store, resolve_run


def report(
    run_id: RunArg = None,
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
) -> None:
    """Write a run's report as one HTML file that opens offline in any browser."""
    from kubevolve.observe.report.page import write_report

    store = get_store(store_url, tenant)
    rid = resolve_run(store, run_id)
    path = write_report(store, rid, out)
    err_console.print(f"wrote the report of {rid} to {path}")
