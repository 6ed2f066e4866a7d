"""Generated text for the language-modelling check: short stories from a small grammar with in-context facts.

Each story introduces a few characters, where each went and what each found, and then refers back to them
("bob came back from the harbor", "the old key of bob"), so part of the text is predictable only by
recalling earlier tokens, and part (the random choices of the grammar) is not predictable at all. A good
mixer lowers the loss on the recall tokens; the grammar's own randomness sets a floor no model can beat.
"""

from __future__ import annotations

import random

import torch

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
PLACES = ["park", "market", "school", "river", "garden", "library", "station", "harbor", "forest", "bridge"]
OBJECTS = ["book", "lamp", "key", "coin", "map", "ring", "cup", "box", "hat", "shell"]
ADJECTIVES = ["red", "blue", "green", "old", "new", "small", "big", "shiny", "broken", "heavy"]
WEATHER = ["sunny", "cold", "windy", "rainy", "quiet", "late"]
FUNCTION = ["<doc>", ".", "the", "a", "to", "went", "found", "came", "back", "from", "of", "was", "gave"]
FUNCTION += ["then", "it", "and", "saw", "in"]
VOCAB = FUNCTION + NAMES + PLACES + OBJECTS + ADJECTIVES + WEATHER
INDEX = {word: i for i, word in enumerate(VOCAB)}


def story(rng: random.Random) -> list[str]:
    cast = rng.sample(NAMES, rng.randint(2, 4))
    facts = {name: (rng.choice(PLACES), rng.choice(OBJECTS), rng.choice(ADJECTIVES)) for name in cast}
    words = ["<doc>"]
    introduced: list[str] = []
    pending = list(cast)
    rng.shuffle(pending)
    for _ in range(rng.randint(6, 10)):
        roll = rng.random()
        if pending and (roll < 0.4 or not introduced):
            name = pending.pop()
            place, obj, adj = facts[name]
            words += [name, "went", "to", "the", place, ".", name, "found", "a", adj, obj, "."]
            introduced.append(name)
        elif roll < 0.6:
            name = rng.choice(introduced)
            words += [name, "came", "back", "from", "the", facts[name][0], "."]
        elif roll < 0.8:
            name = rng.choice(introduced)
            _, obj, adj = facts[name]
            words += ["the", obj, "of", name, "was", adj, "."]
        elif roll < 0.9 and len(introduced) > 1:
            giver, taker = rng.sample(introduced, 2)
            _, obj, adj = facts[giver]
            words += [giver, "gave", "the", adj, obj, "to", taker, "."]
        else:
            words += ["then", "it", "was", rng.choice(WEATHER), "."]
    return words


def corpus(tokens: int, seed: int) -> torch.Tensor:
    """At least `tokens` token ids of consecutive stories (int64)."""
    rng = random.Random(seed)
    ids: list[int] = []
    while len(ids) < tokens:
        ids += [INDEX[word] for word in story(rng)]
    return torch.tensor(ids[:tokens], dtype=torch.long)


def windows(stream: torch.Tensor, size: int, length: int, generator: torch.Generator):
    """A batch of random windows: (inputs, next-token targets), each (size, length)."""
    starts = torch.randint(0, len(stream) - length - 1, (size,), generator=generator)
    rows = starts[:, None] + torch.arange(length + 1)
    chunk = stream[rows]
    return chunk[:, :-1], chunk[:, 1:]


def held_out(stream: torch.Tensor, length: int):
    """The whole held-out stream cut into consecutive windows: (inputs, targets)."""
    count = (len(stream) - 1) // length
    data = stream[: count * length + 1]
    return data[:-1].reshape(count, length), data[1:].reshape(count, length)
