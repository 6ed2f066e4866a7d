"""The cognition base: human priors (paper ideas, known tricks, each with its source) that retrieval injects
into the Researcher's prompt, and Analyzer insights promoted into it.

A task's `cognition/` folder holds markdown files and/or JSONL files:

- Markdown: every `## Title` section is one entry. Its text is the section body without its metadata lines:
  a `Source: ...` line (required, case-insensitive) and an optional `Tags: a, b` line. Text before the first
  `##` heading is ignored, `###` headings stay in the body, and lines inside ``` fences are never headings or
  metadata.
- JSONL: one object per line with `title`, `text`, `source` and optional `tags` (a list of strings or a
  comma-separated string); blank lines are skipped, other keys ignored.

Every entry is checked on load, and a bad one stops the load with an error naming the file and the entry (its
heading line or JSONL line, and its title): a missing or empty source, no text, a title used twice in the
folder (compared case- and space-insensitively), or more than MAX_ENTRY_WORDS words of title and text.

Entries are embedded as "title\\ntext" and stored per collection (usually the task's name); the store skips
entries whose (collection, title, text) it already holds. The embedder (MiniLM) reads the first 256 word
pieces of that text and ignores the rest. MAX_ENTRY_WORDS keeps an entry near that window: the bundled
bases run mostly 1.3 to 1.75 word pieces a word (median 1.47), so 180 words are about 256 pieces; an entry
heavy with equations may still lose its last lines to truncation, which is why the title and the first
sentences must name the idea. Retrieval ranks entries by that embedding; the Researcher's prompt gets the
whole text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from kubevolve.core.models import CognitionEntry, Insight
from kubevolve.core.task import Task
from kubevolve.errors import KubevolveError
from kubevolve.loop.learn.embeddings import Embedder
from kubevolve.store.base import Store

SUFFIXES = (".md", ".jsonl")
# Words of title and text together: about the 256 word pieces the embedder reads of an entry.
MAX_ENTRY_WORDS = 180


class CognitionError(KubevolveError, ValueError):
    """A cognition file is invalid, or an entry cannot be found; the message names the file and the entry."""


# ---------------------------------------------------------------------------------------------- loading


def load_cognition(path: Path, collection: str) -> list[CognitionEntry]:
    """Entries of a folder (every *.md and *.jsonl directly in it, sorted by name) or of one such file."""
    path = Path(path)
    if not collection.strip():
        raise CognitionError("a cognition collection name must not be empty")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    elif path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise CognitionError(f"{path}: not a cognition file (expected a .md or .jsonl file, or a folder)")
        files = [path]
    else:
        raise CognitionError(f"{path}: no such file or folder")

    entries: list[CognitionEntry] = []
    seen: dict[str, str] = {}  # normalised title -> file and line that defined it
    for file in files:
        try:
            content = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise CognitionError(f"{file}: cannot be read: {err}") from None
        parse = _parse_jsonl if file.suffix.lower() == ".jsonl" else _parse_markdown
        for location, entry in parse(content, str(file), collection):
            key = " ".join(entry.title.casefold().split())
            if key in seen:
                raise CognitionError(
                    f"two entries are titled {entry.title!r} ({seen[key]} and {location}); "
                    "titles must be unique"
                )
            seen[key] = location
            words = entry_words(entry)
            if words > MAX_ENTRY_WORDS:
                raise CognitionError(
                    f"{location}, entry {entry.title!r}: {words} words of title and text, more than "
                    f"{MAX_ENTRY_WORDS}: the embedder reads only the first 256 word pieces (about "
                    f"{MAX_ENTRY_WORDS} words), so split it into entries of one idea each"
                )
            entries.append(entry)
    return entries


def entry_words(entry: CognitionEntry) -> int:
    """Whitespace-separated words of the entry's title and text (its source and tags are not embedded)."""
    return len(entry.title.split()) + len(entry.text.split())


_HEADING = re.compile(r"^##(?!#)(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SOURCE = re.compile(r"^\s*[*_]*sources?[*_]*\s*:[*_]*(.*)$", re.IGNORECASE)
_TAGS = re.compile(r"^\s*[*_]*tags[*_]*\s*:[*_]*(.*)$", re.IGNORECASE)


def _split_tags(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def _parse_markdown(content: str, name: str, collection: str) -> list[tuple[str, CognitionEntry]]:
    # (title, heading line, body lines with their line numbers) per section
    sections: list[tuple[str, int, list[tuple[int, str]]]] = []
    fence: str | None = None
    for lineno, line in enumerate(content.splitlines(), start=1):
        fenced = _FENCE.match(line)
        heading = None if fence or fenced else _HEADING.match(line)
        if heading:
            sections.append(((heading.group(1) or "").strip(), lineno, []))
            continue
        if sections:
            sections[-1][2].append((lineno, line if fence is None and not fenced else "\0" + line))
        if fenced:
            fence = None if fence == fenced.group(1) else (fence or fenced.group(1))

    result = []
    for title, heading_line, body in sections:
        where = f"{name}, section {title!r}" if title else f"{name} line {heading_line}"
        if not title:
            raise CognitionError(f"{where}: the '##' heading has no title")
        source: str | None = None
        tags: list[str] = []
        text_lines: list[str] = []
        for lineno, line in body:
            if line.startswith("\0"):  # inside a code fence: always text
                text_lines.append(line[1:])
            elif m := _SOURCE.match(line):
                if source is not None:
                    raise CognitionError(f"{where}: a second 'Source:' line (line {lineno})")
                source = m.group(1).strip()
                if not source:
                    raise CognitionError(f"{where}: the 'Source:' line (line {lineno}) is empty")
            elif m := _TAGS.match(line):
                tags += _split_tags(m.group(1))
            else:
                text_lines.append(line)
        if source is None:
            raise CognitionError(f"{where}: no 'Source:' line; the section starts at line {heading_line}")
        text = "\n".join(text_lines).strip()
        if not text:
            raise CognitionError(
                f"{where}: no text (the section holds only its metadata); "
                f"the section starts at line {heading_line}"
            )
        entry = CognitionEntry(collection=collection, title=title, text=text, source=source, tags=tags)
        result.append((f"{name} line {heading_line}", entry))
    return result


def _parse_jsonl(content: str, name: str, collection: str) -> list[tuple[str, CognitionEntry]]:
    result = []
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise CognitionError(f"{where}: not valid JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(obj, dict):
            raise CognitionError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        fields: dict[str, str] = {}
        for key in ("title", "text", "source"):
            if key not in obj:
                raise CognitionError(f"{where}: missing {key!r}")
            value = obj[key]
            if not isinstance(value, str):
                raise CognitionError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
            if not value.strip():
                raise CognitionError(f"{where}: {key!r} is empty")
            fields[key] = value.strip()
        tags = obj.get("tags", [])
        if isinstance(tags, str):
            tags = _split_tags(tags)
        elif not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise CognitionError(f"{where}: 'tags' must be a list of strings or a comma-separated string")
        entry = CognitionEntry(
            collection=collection,
            title=fields["title"],
            text=fields["text"],
            source=fields["source"],
            tags=[t.strip() for t in tags if t.strip()],
        )
        result.append((where, entry))
    return result


# ------------------------------------------------------------------------------------ storing, retrieving


def embedding_text(entry: CognitionEntry) -> str:
    return f"{entry.title}\n{entry.text}"


def sync_cognition(store: Store, entries: Sequence[CognitionEntry], embedder: Embedder) -> int:
    """Store the entries not stored yet, embedding those without an embedding; return how many were added.

    Entries already in the store (same collection, title and text) are neither embedded nor added, so a
    repeated sync does not even load the model. Embeddings are set on the given entries.
    """
    stored: dict[str, set[tuple[str, str]]] = {}
    for collection in {e.collection for e in entries}:
        stored[collection] = {(e.title, e.text) for e in store.list_cognition(collection)}
    new: list[CognitionEntry] = []
    for entry in entries:
        key = (entry.title, entry.text)
        if key not in stored[entry.collection]:
            stored[entry.collection].add(key)
            new.append(entry)
    missing = [e for e in new if e.embedding is None]
    if missing:
        vectors = embedder.encode([embedding_text(e) for e in missing])
        for entry, vector in zip(missing, vectors, strict=True):
            entry.embedding = vector.tolist()
    return store.add_cognition(new) if new else 0


def sync_task_cognition(store: Store, task: Task, embedder: Embedder) -> int:
    """Store the entries of the task's `cognition/` folder that the store lacks: once per run, when it starts
    (a run reads its cognition from the store, so the folder is parsed once, not for every proposal)."""
    if not task.cognition_dir.is_dir():
        return 0
    return sync_cognition(store, load_cognition(task.cognition_dir, task.name), embedder)


def retrieve_cognition(
    store: Store, collection: str, query: str, embedder: Embedder, k: int = 5, min_score: float = 0.2
) -> list[tuple[CognitionEntry, float]]:
    """The k entries of `collection` most similar to `query` with cosine similarity >= min_score, best first."""
    if k <= 0 or not query.strip():
        return []
    vector = embedder.encode([query])[0]
    return store.search_cognition(collection, vector.tolist(), k, min_score=min_score)


# -------------------------------------------------------------------------------------------- insights


def find_insight(store: Store, insight_id: str) -> Insight:
    """The insight with this id (or a unique prefix of it), searched through every run of the store."""
    insight_id = insight_id.strip()
    if not insight_id:
        raise CognitionError("an insight id must not be empty")
    matches = []
    for run in store.list_runs():
        for insight in store.list_insights(run.id):
            if insight.id == insight_id:
                return insight
            if insight.id.startswith(insight_id):
                matches.append(insight)
    if not matches:
        raise CognitionError(f"no insight {insight_id!r} in this store")
    if len(matches) > 1:
        raise CognitionError(f"insight id prefix {insight_id!r} is ambiguous ({len(matches)} insights match)")
    return matches[0]


def _default_title(text: str, limit: int = 80) -> str:
    first = text.strip().splitlines()[0].strip()
    sentence = re.split(r"(?<=[.!?])\s", first, maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"


def promote_insight(
    store: Store, insight: Insight, collection: str, embedder: Embedder, title: str | None = None
) -> CognitionEntry:
    """Turn an Analyzer insight into a cognition entry of `collection` (tagged "promoted") and store it.

    The title defaults to the insight's first sentence. Promoting the same insight twice with the same title
    stores it once and returns the stored entry.
    """
    text = insight.text.strip()
    if not text:
        raise CognitionError(f"insight {insight.id} has no text to promote")
    if not collection.strip():
        raise CognitionError("a cognition collection name must not be empty")
    title = (title or "").strip() or _default_title(text)
    entry = CognitionEntry(
        collection=collection,
        title=title,
        text=text,
        source=f"insight {insight.id} of run {insight.run_id}",
        tags=["promoted"],
    )
    if sync_cognition(store, [entry], embedder) == 0:
        for stored in store.list_cognition(collection):
            if stored.title == title and stored.text == text:
                return stored
    return entry
