"""A generated text-classification corpus with the defects of scraped data, and clean held-out probes.

Documents are token-id sequences about one of 6 topics (the label) from one of 4 sources (domains). Words
come from a shared background (Zipf), the source's style, the topic's shared words, and the topic's words
*in that source* (a "price" in news is not the word a forum uses), so a model needs examples from each
source to do well on it. The raw corpus then gets what scraped data has:

- a skewed mixture: 70% / 20% / 7% / 3% of the documents over the four sources;
- label noise: 35% of the labels of source 1 (a forum) are wrong, all the same way (its topic c filed as
  topic c + 1), and 5% elsewhere, at random;
- duplicates: a few documents copied many times, half of the copies slightly edited (near duplicates);
- junk: spam of random tokens, one token repeated, fragments of 1-3 tokens, and a boilerplate banner with
  small variations, all with random labels.

The held-out probes are clean and balanced: one probe per source, every topic equally often. The generator
also returns the ground truth of every defect (which the curation program never sees), so the evaluator can
report where the curated mass went.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NUM_CLASSES = 6
NUM_SOURCES = 4
SOURCE_NAMES = ["news", "forum", "wiki", "reviews"]
MIXTURE = [0.70, 0.20, 0.07, 0.03]
LABEL_NOISE = [0.05, 0.35, 0.05, 0.05]
BACKGROUND, STYLE, SHARED_TOPIC, SOURCE_TOPIC, JUNK = 200, 30, 20, 15, 200
STYLE_START = BACKGROUND
SHARED_START = STYLE_START + NUM_SOURCES * STYLE
SOURCE_TOPIC_START = SHARED_START + NUM_CLASSES * SHARED_TOPIC
JUNK_START = SOURCE_TOPIC_START + NUM_SOURCES * NUM_CLASSES * SOURCE_TOPIC
VOCAB_SIZE = JUNK_START + JUNK
WORD_MIX = [0.70, 0.14, 0.06, 0.10]  # background, source style, shared topic, source-specific topic
MIN_WORDS, MAX_WORDS = 10, 40
ZIPF = 1.0 / np.arange(1, BACKGROUND + 1) ** 1.1
ZIPF /= ZIPF.sum()


@dataclass
class Corpus:
    """What `curate(corpus)` receives: parallel lists, one entry per document."""

    docs: list[list[int]]  # token ids
    labels: list[int]  # topic label as scraped (some are wrong)
    sources: list[int]  # which source the document came from
    num_classes: int = NUM_CLASSES
    num_sources: int = NUM_SOURCES
    vocab_size: int = VOCAB_SIZE
    source_names: list[str] = field(default_factory=lambda: list(SOURCE_NAMES))

    def __len__(self) -> int:
        return len(self.docs)


@dataclass
class Truth:
    """The ground truth of every raw document, kept by the evaluator."""

    kind: np.ndarray  # 0 clean original, 1 exact copy, 2 near copy, 3 junk
    true_label: np.ndarray  # -1 for junk
    noisy: np.ndarray  # bool: the scraped label is wrong


def clean_documents(sources: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
    """Clean documents for the given (source, topic) pairs, generated in one vectorised pass."""
    lengths = rng.integers(MIN_WORDS, MAX_WORDS + 1, size=len(sources))
    owner = np.repeat(np.arange(len(sources)), lengths)
    source, label = sources[owner], labels[owner]
    kinds = rng.choice(4, size=len(owner), p=WORD_MIX)
    words = np.select(
        [kinds == 0, kinds == 1, kinds == 2],
        [
            rng.choice(BACKGROUND, size=len(owner), p=ZIPF),
            STYLE_START + source * STYLE + rng.integers(STYLE, size=len(owner)),
            SHARED_START + label * SHARED_TOPIC + rng.integers(SHARED_TOPIC, size=len(owner)),
        ],
        SOURCE_TOPIC_START
        + (source * NUM_CLASSES + label) * SOURCE_TOPIC
        + rng.integers(SOURCE_TOPIC, size=len(owner)),
    )
    return [chunk.tolist() for chunk in np.split(words, np.cumsum(lengths)[:-1])]


def junk_document(rng: np.random.Generator, banner: list[int]) -> list[int]:
    kind = int(rng.integers(4))
    if kind == 0:  # spam: random junk and background tokens
        return rng.choice(
            np.r_[np.arange(JUNK_START, VOCAB_SIZE), np.arange(BACKGROUND)], size=int(rng.integers(20, 80))
        ).tolist()
    if kind == 1:  # one token repeated
        return [int(rng.integers(VOCAB_SIZE))] * int(rng.integers(10, 60))
    if kind == 2:  # a fragment
        return rng.integers(0, VOCAB_SIZE, size=int(rng.integers(1, 4))).tolist()
    edited = list(banner)  # boilerplate with a small variation
    edited[int(rng.integers(len(edited)))] = int(rng.integers(JUNK_START, VOCAB_SIZE))
    return edited


def generate(originals: int, seed: int) -> tuple[Corpus, Truth]:
    """The raw corpus: `originals` scraped documents plus their duplicates and junk, shuffled."""
    rng = np.random.default_rng(seed)
    source_of = rng.choice(NUM_SOURCES, size=originals, p=MIXTURE)
    label_of = rng.integers(NUM_CLASSES, size=originals)
    flip = rng.random(originals) < np.asarray(LABEL_NOISE)[source_of]
    # the forum's wrong labels are systematic (its category c is filed as c + 1), elsewhere random
    shift = np.where(source_of == 1, 1, rng.integers(1, NUM_CLASSES, size=originals))
    seen_of = np.where(flip, (label_of + shift) % NUM_CLASSES, label_of)
    docs = clean_documents(source_of, label_of, rng)
    labels, sources = seen_of.tolist(), source_of.tolist()
    kinds, truths, noisy = [0] * originals, label_of.tolist(), flip.tolist()
    for index in rng.choice(originals, size=originals // 25, replace=False):  # 4% of documents get copied
        for _ in range(int(rng.integers(5, 21))):
            copy = list(docs[index])
            near = rng.random() < 0.5
            if near:
                for _ in range(int(rng.integers(1, 4))):
                    copy[int(rng.integers(len(copy)))] = int(rng.integers(BACKGROUND))
            docs.append(copy), labels.append(labels[index]), sources.append(sources[index])
            kinds.append(2 if near else 1), truths.append(truths[index]), noisy.append(noisy[index])
    banner = rng.integers(JUNK_START, VOCAB_SIZE, size=25).tolist()
    for _ in range(originals // 6):
        docs.append(junk_document(rng, banner)), labels.append(int(rng.integers(NUM_CLASSES)))
        sources.append(int(rng.choice(NUM_SOURCES, p=[0.45, 0.45, 0.05, 0.05])))
        kinds.append(3), truths.append(-1), noisy.append(True)
    order = rng.permutation(len(docs))
    corpus = Corpus([docs[i] for i in order], [labels[i] for i in order], [sources[i] for i in order])
    truth = Truth(np.asarray(kinds)[order], np.asarray(truths)[order], np.asarray(noisy)[order])
    return corpus, truth


def probes(per_class: int, seed: int) -> list[tuple[list[list[int]], list[int]]]:
    """One clean, balanced test set per source: (docs, labels), `per_class` documents of every topic."""
    rng = np.random.default_rng(seed)
    sets = []
    labels = np.repeat(np.arange(NUM_CLASSES), per_class)
    for source in range(NUM_SOURCES):
        docs = clean_documents(np.full(len(labels), source), labels, rng)
        sets.append((docs, labels.tolist()))
    return sets
