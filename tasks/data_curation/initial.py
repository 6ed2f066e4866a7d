"""Data curation: evolve the program that decides what a model trains on.

`curate(corpus)` receives a scraped text-classification corpus (`corpus.docs`: token-id lists,
`corpus.labels`: topic labels as scraped, `corpus.sources`: which of `corpus.num_sources` sources each
document came from; also `num_classes`, `vocab_size`, `source_names`) and returns one weight >= 0 per
document. The evaluator then trains a fresh classifier for a fixed budget of examples drawn with probability
proportional to the weights (0 drops a document) and scores it on clean, balanced held-out probes, one per
source. The corpus has duplicates, junk, wrong labels and a skewed source mixture; the program sees none of
that ground truth.

The frozen helpers below are verified tools (features, near-duplicate clusters, label consistency); the
starting program is a common heuristic pipeline: exact deduplication, length and repetition filters, and
temperature sampling over sources.
"""

from __future__ import annotations

import numpy as np


def unique_ratio(doc: list[int]) -> float:
    """Distinct tokens / tokens (low for repeated-token junk)."""
    return len(set(doc)) / max(1, len(doc))


def exact_groups(docs: list[list[int]]) -> np.ndarray:
    """A group id per document; identical documents share one."""
    ids: dict[tuple[int, ...], int] = {}
    return np.array([ids.setdefault(tuple(doc), len(ids)) for doc in docs])


def near_duplicate_groups(
    docs: list[list[int]], shingle: int = 3, bands: int = 8, rows: int = 4, seed: int = 0
) -> np.ndarray:
    """A group id per document from MinHash LSH over token shingles: documents that agree on all `rows`
    hashes of some band are joined (union-find). More rows per band: fewer, closer matches."""
    prime = (1 << 31) - 1
    rng = np.random.default_rng(seed)
    a = rng.integers(1, prime, size=(bands * rows, 1), dtype=np.uint64)
    b = rng.integers(0, prime, size=(bands * rows, 1), dtype=np.uint64)
    parent = list(range(len(docs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    buckets: dict[tuple, int] = {}
    for index, doc in enumerate(docs):
        grams = {hash(tuple(doc[i : i + shingle])) % prime for i in range(max(1, len(doc) - shingle + 1))}
        values = np.fromiter(grams, dtype=np.uint64, count=len(grams))[None, :]
        signature = ((a * values + b) % prime).min(axis=1).tolist()
        for band in range(bands):
            key = (band, *signature[band * rows : (band + 1) * rows])
            other = buckets.setdefault(key, index)
            if other != index:
                parent[find(index)] = find(other)
    return np.array([find(i) for i in range(len(docs))])


def bag_of_words(docs: list[list[int]], vocab_size: int) -> np.ndarray:
    """(N, vocab) term frequencies, rows L2-normalised (float32)."""
    features = np.zeros((len(docs), vocab_size), dtype=np.float32)
    for row, doc in enumerate(docs):
        np.add.at(features[row], doc, 1.0)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-9)


def label_margin(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, classes: int) -> np.ndarray:
    """Per document: cosine to its own label's centroid minus the best other label's centroid, with centroids
    computed within each group (e.g. each source). Negative margins are likely wrong labels."""
    margin = np.zeros(len(labels), dtype=np.float32)
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        centroids = np.zeros((classes, features.shape[1]), dtype=np.float32)
        for label in range(classes):
            members = rows[labels[rows] == label]
            if len(members):
                centroids[label] = features[members].mean(axis=0)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-9)
        scores = features[rows] @ centroids.T
        own = scores[np.arange(len(rows)), labels[rows]]
        scores[np.arange(len(rows)), labels[rows]] = -np.inf
        margin[rows] = own - scores.max(axis=1)
    return margin


# EVOLVE-BLOCK-START
MIN_LENGTH = 5  # drop fragments shorter than this (tokens)
MAX_LENGTH = 200  # and documents longer than this
MIN_UNIQUE = 0.3  # drop documents whose distinct-token ratio is below this (repetition)
SOURCE_ALPHA = 0.7  # sample source s with probability proportional to (its share) ** alpha; 1 = as scraped


def curate(corpus) -> list[float]:
    """Exact dedup (keep the first copy), length and repetition filters, temperature sampling over sources."""
    keep = np.ones(len(corpus), dtype=bool)
    groups = exact_groups(corpus.docs)
    _, first = np.unique(groups, return_index=True)
    keep[:] = False
    keep[first] = True
    for index, doc in enumerate(corpus.docs):
        if not MIN_LENGTH <= len(doc) <= MAX_LENGTH or unique_ratio(doc) < MIN_UNIQUE:
            keep[index] = False
    sources = np.asarray(corpus.sources)
    counts = np.bincount(sources[keep], minlength=corpus.num_sources).astype(float)
    share = counts / max(1.0, counts.sum())
    per_doc = np.where(counts > 0, share**SOURCE_ALPHA / np.maximum(counts, 1.0), 0.0)
    return (keep * per_doc[sources]).tolist()


# EVOLVE-BLOCK-END
