"""The run browser's web app: a Starlette app over one store, read-only, serving a page and a JSON API.

    GET /                          the page (static/index.html; its script and styles from static/)
    GET /api/runs                  the runs of the store's tenant, newest first
    GET /api/runs/{run}/poll?since=V   the run's state and the nodes new or changed since version V
    GET /api/runs/{run}/tree       the lineage tree as data (charts.tree_json)
    GET /api/runs/{run}/charts     the report's SVG charts: outcomes, score over time, MAP-Elites grids
    GET /api/nodes/{id}            one node (an id or a unique prefix of one), whole, with its context
    GET /healthz                   200 while the process serves

Only GET exists: the app has no route that could change anything, and the store it is given should be opened
read-only as well (`open_store(..., read_only=True)`, what `kubevolve ui` does). It may be given a function
that opens the store instead: then a store that cannot be opened yet (a lab's tenant before its first run)
is an error on the page, retried, rather than a server that does not start. Every URL the page uses is
relative, so the app also works under a path prefix (`kubectl proxy`'s service proxy, an Ingress path).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kubevolve.errors import KubevolveError
from kubevolve.observe.ui.live import Followers
from kubevolve.observe.ui.views import charts_view, node_view, poll_view, runs_view, tree_view
from kubevolve.store.base import NotFound, Store, StoreError

RETRY_OPEN_S = 5.0  # a store that could not be opened is tried again at most this often
# the page loads its script and styles from this server only, and reaches nothing else
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


class StoreSource:
    """The app's store: given, or opened on first use by a function (then retried after a failure)."""

    def __init__(self, store: Store | Callable[[], Store]) -> None:
        self._opener = store if callable(store) else None
        self._followers = None if callable(store) else Followers(store)
        self._failure: tuple[float, StoreError] | None = None
        self._lock = threading.Lock()

    def followers(self) -> Followers:
        with self._lock:
            if self._followers is None:
                assert self._opener is not None
                if self._failure is not None and time.monotonic() - self._failure[0] < RETRY_OPEN_S:
                    raise self._failure[1]
                try:
                    self._followers = Followers(self._opener())
                except StoreError as err:
                    self._failure = (time.monotonic(), err)
                    raise
                self._failure = None
            return self._followers

    def check(self) -> str | None:
        """Open the store now; why it cannot be opened, or None."""
        try:
            self.followers()
        except StoreError as err:
            return str(err)
        return None

    def close(self) -> None:
        with self._lock:
            if self._followers is not None:
                self._followers.store.close()


def _json(content: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers=HEADERS)


class BadRequest(KubevolveError):
    """A request the API cannot answer as asked; the message says what is wrong with it."""


def _version(request: Request) -> int:
    text = request.query_params.get("since", "0")
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(f"since: expected a version number (0 or more), got {text!r}")
    return int(text)


def create_app(
    store: Store | Callable[[], Store],
    *,
    default_run: str | None = None,
    allowed_hosts: list[str] | None = None,
) -> Starlette:
    """The browser over `store` (or the store a function opens); `default_run` (`app.state.default_run`) is
    the run the page opens when its address names none. `allowed_hosts` refuses requests for other Host names:
    a server on the loopback address should not answer a web page that rebinds its own name to 127.0.0.1."""
    source = StoreSource(store)
    index_html = resources.files(__package__).joinpath("static", "index.html").read_text()
    report_css = resources.files("kubevolve.observe.report").joinpath("report.css").read_text()

    def index(request: Request) -> Response:
        return Response(
            index_html, media_type="text/html", headers={**HEADERS, "Content-Security-Policy": PAGE_POLICY}
        )

    def shared_css(request: Request) -> Response:  # the report's styles: the charts look the same in both
        return Response(report_css, media_type="text/css", headers=HEADERS)

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    def runs(request: Request) -> Response:
        return _json({**runs_view(source.followers().store), "default": app.state.default_run})

    def poll(request: Request) -> Response:
        since = _version(request)
        return _json(poll_view(source.followers().get(request.path_params["run_id"]), since))

    def tree(request: Request) -> Response:
        return _json(tree_view(source.followers().get(request.path_params["run_id"])))

    def charts(request: Request) -> Response:
        return _json(charts_view(source.followers().get(request.path_params["run_id"])))

    def node(request: Request) -> Response:
        followers = source.followers()
        found = followers.store.get_node(request.path_params["node_id"])
        return _json(node_view(followers.get(found.run_id), found))

    async def not_found(request: Request, exc: Exception) -> Response:
        return _json({"error": str(exc)}, 404)

    async def store_failed(request: Request, exc: Exception) -> Response:
        return _json({"error": str(exc)}, 503)

    async def bad_request(request: Request, exc: Exception) -> Response:
        return _json({"error": str(exc)}, 400)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/static/report.css", shared_css),
            Mount("/static", StaticFiles(packages=[(__package__, "static")])),
            Route("/api/runs", runs),
            Route("/api/runs/{run_id}/poll", poll),
            Route("/api/runs/{run_id}/tree", tree),
            Route("/api/runs/{run_id}/charts", charts),
            Route("/api/nodes/{node_id}", node),
        ],
        middleware=[
            *([Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []),
            Middleware(GZipMiddleware, minimum_size=2000),
        ],
        exception_handlers={NotFound: not_found, StoreError: store_failed, BadRequest: bad_request},
    )
    app.state.source = source
    app.state.default_run = default_run
    return app
