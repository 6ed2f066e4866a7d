"""The untrusted half of data_curation's evaluation: runs in the candidate's sandboxed process and calls its
`curate(corpus)` on the corpus the judge sent, returning the weights as data. The judge (evaluate.py) checks
them, trains the classifiers and scores the probes in its own process: the ground truth of the corpus (which
documents are copies, junk or mislabelled), the probes and the corpus's seed never come here.
"""

from __future__ import annotations

import numpy as np
from corpus import Corpus


def run(program, request: dict) -> dict:
    """`request`: the corpus packed as arrays (tokens of all documents end to end, each document's length,
    labels, sources). Returns {"weights": one float per document}."""
    tokens, lengths = request["tokens"].tolist(), request["lengths"].tolist()
    docs, start = [], 0
    for length in lengths:
        docs.append(tokens[start : start + length])
        start += length
    corpus = Corpus(docs, request["labels"].tolist(), request["sources"].tolist())
    weights = program.curate(corpus)
    try:
        return {"weights": np.asarray(weights, dtype=np.float64)}
    except (TypeError, ValueError) as err:
        raise ValueError(f"curate() must return one number per document: {err}") from None
