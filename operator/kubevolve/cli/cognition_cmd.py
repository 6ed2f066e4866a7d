"""`kubevolve cognition add|list|search|promote`: the cognition base of human priors, per collection.

A collection is usually a task's name: `add tasks/circle_packing` stores that task's `cognition/` folder in the
collection `circle_packing`. `list` and `search` always name their collection (the store keeps many), either
directly or as `--task` (a task's name or folder), and `promote` copies an Analyzer insight into one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from kubevolve.cli import render
from kubevolve.cli.common import JsonOpt, StoreOpt, TenantOpt, console, err_console, fail, get_store
from kubevolve.core.models import CognitionEntry
from kubevolve.core.task import TaskError, load_task
from kubevolve.loop.learn.cognition import (
    CognitionError,
    find_insight,
    load_cognition,
    promote_insight,
    retrieve_cognition,
    sync_cognition,
)
from kubevolve.loop.learn.embeddings import EmbeddingError, get_embedder
from kubevolve.store.base import StoreError

cognition_app = typer.Typer(
    no_args_is_help=True,
    help="Human priors (paper ideas, known tricks) retrieved into the Researcher's prompt.",
)
CollectionOpt = Annotated[
    str, typer.Option("--collection", "-c", help="Collection name (usually the task's name).")
]
TaskOpt = Annotated[
    str | None,
    typer.Option(
        "--task",
        "-t",
        help="Use the task's collection: a task name, or a task folder (its task.yaml's name).",
    ),
]


def task_collection(task: str) -> str:
    """The collection of a task given by name or by folder: a folder with a task.yaml gives its task's name."""
    folder = Path(task)
    if (folder / "task.yaml").is_file():
        try:
            return load_task(folder).name
        except TaskError as err:
            fail(str(err))
    return task


def chosen_collection(collection: str | None, task: str | None) -> str:
    """Exactly one of a collection name and --task."""
    if collection and task:
        fail("name a collection or --task, not both")
    if not (collection or task):
        fail("name a collection (usually the task's name) or --task")
    return collection or task_collection(task or "")


_YEAR = re.compile(r"\b(?:19|20)\d\d\b")


def short_source(source: str) -> str:
    """A source as a table shows it: its first citation as "Author et al. YEAR" (or "A and B YEAR") when it
    reads 'Authors, "Title", venue YEAR', else as written, and "(+N)" for N further citations (--json has all)."""
    citations = [c.strip() for c in source.split(";") if c.strip()] or [source]
    first = citations[0]
    authors, quote, _ = first.partition('"')
    authors = authors.strip(" ,")
    year = _YEAR.search(first)
    if quote and authors and year and not re.search(r"\d", authors):
        names = re.split(r",| and ", authors)
        lead = authors if len(names) <= 2 and "," not in authors else names[0].strip() + " et al."
        first = f"{lead} {year.group()}"
    return first + (f" (+{len(citations) - 1})" if len(citations) > 1 else "")


def entry_dict(entry: CognitionEntry, score: float | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {} if score is None else {"score": round(score, 4)}
    data.update(
        id=entry.id,
        collection=entry.collection,
        title=entry.title,
        source=entry.source,
        tags=entry.tags,
        text=entry.text,
    )
    return data


@cognition_app.command()
def add(
    path: Annotated[
        Path,
        typer.Argument(
            help="A task folder (its cognition/ folder is added), or a .md/.jsonl file or a folder of them."
        ),
    ],
    collection: Annotated[
        str | None,
        typer.Option(
            "--collection", "-c", help="Collection name (default for a task folder: the task's name)."
        ),
    ] = None,
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Load cognition entries, embed the new ones and store them (entries already stored are skipped)."""
    source = path
    if path.is_dir() and (path / "task.yaml").is_file():
        try:
            task = load_task(path)
        except TaskError as err:
            fail(str(err))
        source = task.cognition_dir
        collection = collection or task.name
        if not source.exists():
            fail(f"task {task.name!r} has no cognition folder ({source} does not exist)")
    elif not collection:
        fail(f"{path} is not a task folder, so --collection is required")
    try:
        entries = load_cognition(source, collection)
    except CognitionError as err:
        fail(str(err))
    store = get_store(store_url, tenant)
    try:
        added = sync_cognition(store, entries, get_embedder()) if entries else 0
    except (EmbeddingError, StoreError) as err:
        fail(str(err))
    if as_json:
        render.print_json({"collection": collection, "entries": len(entries), "added": added})
    elif not entries:
        err_console.print(f"nothing to add: no cognition entries in {source}")
    else:
        console.print(
            f"added {added} of {len(entries)} entries to collection {collection!r} "
            f"({len(entries) - added} already stored)",
            highlight=False,
        )


@cognition_app.command("list")
def list_(
    collection: Annotated[
        str | None, typer.Argument(help="Collection name (usually the task's name); or use --task.")
    ] = None,
    task: TaskOpt = None,
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """The entries of one collection, in the order they were added: title, first source, tags. An empty
    collection named by --task shows the task folder's entries instead, read and validated as a run would."""
    collection = chosen_collection(collection, task)
    entries = get_store(store_url, tenant).list_cognition(collection)
    where = f"collection {collection!r}"
    folder = task_folder(task) if task and not entries else None
    if folder is not None:
        try:
            entries = load_cognition(folder, collection)
        except CognitionError as err:
            fail(str(err))
        where = f"{folder}, not yet in the store (a run adds them; so does `kubevolve cognition add`)"
    if as_json:
        render.print_json([entry_dict(e) for e in entries])
        return
    if not entries:
        err_console.print(
            f"collection {collection!r} is empty; add entries with `kubevolve cognition add tasks/<task>`",
            highlight=False,
        )
        return
    tagged = any(e.tags for e in entries)
    table = Table(
        Column("#", justify="right"),
        "title",
        Column("source", max_width=36),
        *(["tags"] if tagged else []),
        title=f"{len(entries)} entries in {where} (--json for their text, sources and ids)",
    )
    for number, e in enumerate(entries, start=1):
        table.add_row(str(number), e.title, short_source(e.source), *([", ".join(e.tags)] if tagged else []))
    console.print(table)


def task_folder(task: str) -> Path | None:
    """The cognition folder of a task given as a folder, or by name as `tasks/<name>` under the current
    directory (a checkout of this repository); None when there is none."""
    for folder in (Path(task), Path("tasks") / task):
        if (folder / "task.yaml").is_file():
            try:
                cognition = load_task(folder).cognition_dir
            except TaskError as err:
                fail(str(err))
            return cognition if cognition.is_dir() else None
    return None


@cognition_app.command()
def search(
    query: Annotated[str, typer.Argument(help="What the Researcher is looking for, in words.")],
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Collection name (usually the task's name).")
    ] = None,
    task: TaskOpt = None,
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="How many entries at most.")] = 5,
    min_score: Annotated[
        float, typer.Option("--min-score", min=-1.0, max=1.0, help="Lowest cosine similarity shown.")
    ] = 0.2,
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """The entries most similar to QUERY (cosine similarity of MiniLM embeddings), best first."""
    collection = chosen_collection(collection, task)
    store = get_store(store_url, tenant)
    if not store.list_cognition(collection):
        fail(f"collection {collection!r} is empty or does not exist", code=1)
    try:
        hits = retrieve_cognition(store, collection, query, get_embedder(), k=k, min_score=min_score)
    except (EmbeddingError, StoreError) as err:
        fail(str(err))
    if as_json:
        render.print_json([entry_dict(e, score) for e, score in hits])
        return
    if not hits:
        err_console.print(f"no entry of {collection!r} scores {min_score:g} or more", highlight=False)
        return
    table = Table("score", "title", Column("source", max_width=36))
    for entry, score in hits:
        table.add_row(f"{score:.3f}", entry.title, short_source(entry.source))
    console.print(table)


@cognition_app.command()
def promote(
    insight_id: Annotated[str, typer.Argument(help="Insight id or a unique prefix of it.")],
    collection: CollectionOpt,
    title: Annotated[
        str | None, typer.Option("--title", help="Entry title (default: the insight's first sentence).")
    ] = None,
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Copy an Analyzer insight that proved useful into a cognition collection (tagged "promoted")."""
    store = get_store(store_url, tenant)
    try:
        insight = find_insight(store, insight_id)
        entry = promote_insight(store, insight, collection, get_embedder(), title=title)
    except (CognitionError, EmbeddingError, StoreError) as err:
        fail(str(err))
    if as_json:
        render.print_json(entry_dict(entry))
    else:
        console.print(
            f"promoted insight {insight.id} to {collection!r} as {entry.title!r} (entry {entry.id})",
            highlight=False,
        )
