"""The judge's probes of a candidate's TokenMixer: causality and sub-quadratic cost, decided in the trusted
judge process from outputs it receives and times it measures itself (docs/tasks.md, rule 6).

- `causality_probe`: before training, a fresh mixer gets inputs the judge drew and copies of them changed from
  position t on; an output before t that moved means the mixer reads the future.
- `time_probe`: before training, the judge times a forward pass of one sequence at a short length and at 4x
  that length, several times each with its own clock, and fits the exponent of the least times; a linear
  layer gives about 1, softmax attention about 2. The short length is the first (doubling from 1024) at
  which a forward takes at least `TIME_MIN_SECONDS`, so that the fixed costs of a request do not hide the
  growth.
- `add_twins` / `check_twins`: after training, some held-out rows the judge scores are sent a second time with
  the tokens from a cut on replaced by random ones; the trained model's logits before the cut must be the
  same for both. This checks the very outputs that are scored, mixed into the request that scores them.

The sandbox also runs the FLOP-counting probe and a gradient test (mixer_checks.py) as a cheap first filter;
those run in the candidate's process, so only the probes here are the boundary.

What a probe cannot see: a candidate that recognises a probe (its request, its lengths, twin rows in a batch)
and answers it with other code than what it is scored with. The probes catch a layer that is non-causal or
quadratic; they are not proof against code written to defeat them. The ranking score does not rest on them:
the scored MQAR sequences hold no answer after its query (evaluate.py, `hide_answers`), so reading later
tokens gains nothing there (README.md, "What the judge guarantees").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from kubevolve.sdk.judging import Candidate, CandidateCrashed

CAUSAL_LENGTH = 48
CAUSAL_CUTS = (1, 5, 16, 24, 47)
CAUSAL_TOLERANCE = 1e-5  # a fresh mixer in float32, relative to 1 + max |output|
TWIN_TOLERANCE = 1e-3  # trained logits, relative to 1 + max |logit|: same prefix, other rows of the batch
TWINS = 32  # rows sent twice, per MQAR length and for the LM

TIME_START = 1024
TIME_MAX_LENGTH = 1 << 19
TIME_MIN_SECONDS = 0.05  # the short length takes at least this long (the least of 2 forwards)
TIME_RATIO = 4
TIME_ROUNDS = (3, 9)  # rounds of one request at each length: at least 3, at most 9
TIME_CLEAR = 0.1  # stop after 3 rounds once the exponent is this far from the limit
MAX_TIME_EXPONENT = 1.7  # DeltaNet measures 1.19-1.26 here, softmax attention 1.95 (README)
TIME_CUTOFF_EXPONENT = 2.5  # a long request slower than RATIO^2.5 x the short one (+1 s): stopped
TIME_SLACK_SECONDS = 1.0


class ProbeFailed(ValueError):
    pass


def checked_array(reply: Any, key: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """`reply[key]` as a float array of exactly `shape`, all finite: the candidate's data, checked."""
    if not isinstance(reply, dict) or not isinstance(reply.get(key), np.ndarray):
        raise ValueError(f"{what}: the runner must send {{{key!r}: array}}")
    array = reply[key]
    if array.dtype.kind != "f" or array.shape != shape:
        raise ValueError(f"{what}: expected a float array of shape {shape}, got {array.dtype} {array.shape}")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        raise ValueError(f"{what}: non-finite value at index {tuple(int(i) for i in bad[0])}")
    return array


def causality_probe(candidate: Candidate, settings: dict[str, Any], seed: int) -> str:
    """Send a fresh mixer inputs and copies changed from each cut on; raise ProbeFailed if an output before a
    cut moved. The inputs come from the judge's seed."""
    dim = settings["model"]["dim"]
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(2, CAUSAL_LENGTH, dim, generator=generator)
    rows = [base]
    for cut in CAUSAL_CUTS:
        changed = base.clone()
        changed[:, cut:] = 3.0 * torch.randn(2, CAUSAL_LENGTH - cut, dim, generator=generator)
        rows.append(changed)
    inputs = torch.cat(rows).numpy()
    reply = candidate.request({"op": "mixer", "settings": settings, "seed": seed, "inputs": inputs})
    outputs = checked_array(reply, "outputs", inputs.shape, "the mixer's outputs")
    reference = outputs[:2]
    scale = 1.0 + float(np.abs(reference).max())
    for i, cut in enumerate(CAUSAL_CUTS):
        diff = np.abs(outputs[2 + 2 * i : 4 + 2 * i, :cut] - reference[:, :cut]).max(axis=(0, 2))
        if float(diff.max()) > CAUSAL_TOLERANCE * scale:
            position = int(np.flatnonzero(diff > CAUSAL_TOLERANCE * scale)[0])
            raise ProbeFailed(
                f"not causal (the judge's probe): changing the tokens from position {cut} on changed the "
                f"output at position {position} by {float(diff[position]):.2e}"
            )
    return f"causal (the judge's probe: cuts at {', '.join(map(str, CAUSAL_CUTS))} of {CAUSAL_LENGTH} tokens)"


def _time(candidate: Candidate, settings: dict[str, Any], seed: int, length: int, timeout=None) -> float:
    reply = candidate.request(
        {"op": "time", "settings": settings, "seed": seed, "length": length}, timeout=timeout
    )
    checksum = reply.get("checksum") if isinstance(reply, dict) else None
    if not isinstance(checksum, float) or not math.isfinite(checksum):
        raise ValueError(f"the mixer's output at length {length} is not finite (or no checksum came back)")
    return candidate.seconds


def _time_long(
    candidate: Candidate, settings: dict[str, Any], seed: int, lengths: tuple[int, int], cutoff: float
) -> float:
    """One request at the long length, stopped at `cutoff` seconds: past it the layer is quadratic."""
    short, long = lengths
    try:
        return _time(candidate, settings, seed, long, timeout=cutoff)
    except CandidateCrashed as err:
        if err.kind != "timeout":
            raise
        raise ProbeFailed(
            f"quadratic cost: one forward pass of {long} tokens ran past {cutoff:.2f} s (the judge's clock), "
            f"{TIME_RATIO**TIME_CUTOFF_EXPONENT:.0f} times a forward pass of {short} tokens and more; a "
            f"linear-attention layer must stay below T^{MAX_TIME_EXPONENT}"
        ) from None


def time_probe(candidate: Candidate, settings: dict[str, Any], seed: int) -> tuple[float, str]:
    """(the exponent of the forward time in the sequence length, a summary); ProbeFailed over the limit.

    The exponent is that of the ratio of the least time at the long length to the least at the short one,
    over rounds of one request at each: a busy machine only ever adds time (other processes, the first
    allocation of a length), so the least of several requests is the nearest to the layer's own cost. The
    first request at the long length is not counted (it allocates)."""
    short = TIME_START
    while True:
        least = min(_time(candidate, settings, seed, short) for _ in range(2))
        if least >= TIME_MIN_SECONDS or short * 2 * TIME_RATIO > TIME_MAX_LENGTH:
            break
        short *= 2
    lengths = (short, short * TIME_RATIO)
    cutoff = TIME_RATIO**TIME_CUTOFF_EXPONENT * least + TIME_SLACK_SECONDS
    _time_long(candidate, settings, seed, lengths, cutoff)
    shorts: list[float] = []
    longs: list[float] = []
    while True:
        shorts.append(_time(candidate, settings, seed, short))
        longs.append(_time_long(candidate, settings, seed, lengths, cutoff))
        exponent = math.log(max(min(longs) / min(shorts), 1e-9)) / math.log(TIME_RATIO)
        if len(longs) >= TIME_ROUNDS[1] or (
            len(longs) >= TIME_ROUNDS[0] and abs(exponent - MAX_TIME_EXPONENT) >= TIME_CLEAR
        ):
            break
    summary = (
        f"timing (the judge's clock, one sequence, least of {len(longs)} requests each): {short} tokens "
        f"{min(shorts) * 1e3:.1f} ms, {lengths[1]} tokens {min(longs) * 1e3:.1f} ms: time grows as "
        f"T^{exponent:.2f} (limit T^{MAX_TIME_EXPONENT})"
    )
    if exponent > MAX_TIME_EXPONENT:
        raise ProbeFailed(f"quadratic cost: {summary}")
    return exponent, summary


def add_twins(
    inputs: torch.Tensor, firsts: torch.Tensor, count: int, vocab: int, generator: torch.Generator
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """`inputs` (N, T) followed by `count` twins: a copy of row r whose tokens from `cut` on are random (the
    token at the cut differs). `firsts[r]` lists the cuts allowed in row r ((N, C) int). Returns the rows and
    each twin's (r, cut)."""
    rows, length = inputs.shape
    twins, pairs = [], []
    for r in torch.randperm(rows, generator=generator)[: min(count, rows)].tolist():
        cut = int(firsts[r, int(torch.randint(firsts.shape[1], (1,), generator=generator))])
        twin = inputs[r].clone()
        twin[cut:] = torch.randint(vocab, (length - cut,), generator=generator)
        twin[cut] = (inputs[r, cut] + 1 + int(torch.randint(vocab - 1, (1,), generator=generator))) % vocab
        twins.append(twin)
        pairs.append((r, cut))
    return torch.cat([inputs, torch.stack(twins)]) if twins else inputs, pairs


def check_twins(logits: np.ndarray, positions: np.ndarray, pairs: list[tuple[int, int]], what: str) -> float:
    """Raise ProbeFailed where a twin's logits before its cut differ from its original's. `logits` (N + K, P,
    V) are at `positions` (N + K, P) of each row; twin k is row N + k. Returns the largest relative difference."""
    first_twin = len(logits) - len(pairs)
    worst = 0.0
    for k, (row, cut) in enumerate(pairs):
        before = positions[row] < cut
        original, twin = logits[row][before], logits[first_twin + k][before]
        if not len(original):
            continue
        diff = np.abs(twin - original).max(axis=-1)
        relative = float(diff.max()) / (1.0 + float(np.abs(original).max()))
        worst = max(worst, relative)
        if relative > TWIN_TOLERANCE:
            position = int(positions[row][before][int(np.argmax(diff))])
            raise ProbeFailed(
                f"not causal (the judge's check on the trained model's outputs): {what} {row}, and its copy "
                f"with the tokens from position {cut} on replaced, gave logits differing by "
                f"{float(diff.max()):.2e} at position {position}"
            )
    return worst
