"""`kubevolve ui`: serve a live, read-only browser of the runs in a store (observe/ui)."""

from __future__ import annotations

import socket
from typing import Annotated
from urllib.parse import quote

import typer

from kubevolve.api import open_store
from kubevolve.cli.common import RunArg, StoreOpt, TenantOpt, err_console, fail
from kubevolve.store import default_store_path
from kubevolve.store.base import NotFound


def ui(
    run_id: RunArg = None,
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A Host name the page answers for besides this machine's own names ('*': any; behind a "
            "proxy that checks hosts itself). Other names are refused, which stops DNS-rebinding reads."
        ),
    ] = None,
) -> None:
    """Browse runs in a web page that follows them live: state and budget, score over time, the evolution
    tree, MAP-Elites grids, and each node's code, diff, insight, retrieved context and prompts. Read-only."""
    try:  # the web framework is imported only here: every other command starts without it
        import uvicorn

        from kubevolve.observe.ui.app import create_app
    except ImportError as err:
        fail(f"kubevolve ui needs the 'ui' extra ({err.name} is missing): pip install 'kubevolve[ui]'")

    url = store_url or str(default_store_path())
    app = create_app(
        lambda: open_store(url, tenant, read_only=True), allowed_hosts=answered_hosts(host, allow_host)
    )
    source = app.state.source
    problem = source.check()
    if problem:
        err_console.print(f"[yellow]warning:[/] {problem}; the page says so until the store can be read")
    elif run_id:
        try:
            source.followers().store.get_run(run_id)
        except NotFound:
            fail(f"no run {run_id!r} in this store (tenant {tenant!r})")
    else:  # like every command, the most recent run; the page lists the others
        runs = source.followers().store.list_runs()
        run_id = runs[0].id if runs else None
    app.state.default_run = run_id
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    page = f"http://{shown}:{port}/" + (f"#/run/{quote(run_id, safe='')}" if run_id else "")
    err_console.print(f"kubevolve ui: {page} (read-only: {url}, tenant {tenant}); Ctrl-C stops it")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        source.close()


def answered_hosts(bind: str, extra: list[str] | None) -> list[str] | None:
    """The Host names the server answers for: loopback names, the address it is bound to, this machine's
    names, and `extra`; None (any) only when `extra` holds '*'. A page on another site that resolves its own
    name to this machine (DNS rebinding) is refused on every bind address, wildcard ones included."""
    names = list(extra or [])
    if "*" in names:
        return None
    names += ["127.0.0.1", "localhost", "[::1]", socket.gethostname(), socket.getfqdn()]
    if bind not in ("0.0.0.0", "::"):
        names.append(f"[{bind}]" if ":" in bind else bind)
    return sorted(set(names))
