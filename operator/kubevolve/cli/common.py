"""What every `kubevolve` sub-command shares: the consoles, the common options, errors and the store."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from kubevolve.api import find_run, open_store
from kubevolve.store.base import NotFound, Store, StoreError

console = Console()
err_console = Console(stderr=True)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="KUBEVOLVE_STORE",
        help="Store URL or SQLite path (default ~/.kubevolve/kubevolve.db).",
    ),
]
TenantOpt = Annotated[
    str, typer.Option("--tenant", envvar="KUBEVOLVE_TENANT", help="Store tenant (a Kubernetes namespace).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
RunArg = Annotated[str | None, typer.Argument(help="Run id (default: the most recent run).")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on stderr and exit (2: bad input)."""
    err_console.print(
        f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=not err_console.is_terminal
    )
    raise typer.Exit(code)


def get_store(url: str | None, tenant: str = "default") -> Store:
    try:
        return open_store(url, tenant)
    except StoreError as err:
        fail(str(err))


def resolve_run(store: Store, run_id: str | None) -> str:
    """The run named, or the most recent one; a clear error when there is none."""
    try:
        return find_run(store, run_id).id
    except NotFound as err:
        fail(str(err))
