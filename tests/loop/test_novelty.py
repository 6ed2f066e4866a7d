"""The novelty filter rejects the same experiment (the same canonical form), never a merely similar one: a
changed constant is a new experiment, a reformatted, re-commented or renamed copy is not."""

from __future__ import annotations

import ast
import io
import random
import re
import tokenize

import pytest

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
from kubevolve.loop.engineer.canonical import canonical_hash
from kubevolve.loop.engineer.novelty import NoveltyFilter, fingerprint
from tests.kit.paths import REPO

PROGRAM = '''\
import math

# EVOLVE-BLOCK-START
def pack(n, radius=0.1):
    """Place n circles on rings."""
    centres = []
    rings = int(math.sqrt(n)) + 1
    for ring in range(rings):
        count = max(1, 6 * ring)  # six more per ring
        for k in range(count):
            angle = 2 * math.pi * k / count
            centres.append((0.5 + 0.09 * ring * math.cos(angle), 0.5 + 0.09 * ring * math.sin(angle)))
    scale = [radius * 1.0 for _ in centres[:n]]
    return centres[:n], scale
# EVOLVE-BLOCK-END
'''

FORMATTED = """\
import math

# EVOLVE-BLOCK-START
def pack( n, radius = .1 ):
    centres=[]
    rings=int( math.sqrt( n ) )+1
    for ring in range( rings ):
        count=max( 1,6*ring )
        for k in range(count):
            angle=(2*math.pi*k)/count
            centres.append( (0.5+0.09*ring*math.cos(angle),
                             0.5+0.09*ring*math.sin(angle)) )
    scale=[ radius*1. for _ in centres[ :n ] ]
    return (centres[:n], scale)
# EVOLVE-BLOCK-END
"""

COMMENTED = PROGRAM.replace(
    '    """Place n circles on rings."""\n', "    # rings of circles\n    'a string statement'\n"
)

RENAMED = (
    PROGRAM.replace("centres", "points")
    .replace("rings", "layers")
    .replace("ring ", "layer ")
    .replace("ring)", "layer)")
    .replace("ring *", "layer *")
    .replace("count", "m")
    .replace("angle", "theta")
    .replace("scale", "sizes")
)


def node(code: str, stage: Stage = Stage.EVALUATED, failure: FailureKind | None = None) -> Node:
    n = Node(run_id="r", code=code, stage=stage, failure=failure)
    fingerprint(n)
    return n


def test_the_renamed_copy_renames_every_local_but_two():
    def stored(code: str) -> set[str]:
        return {
            n.id
            for n in ast.walk(ast.parse(code))
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }

    assert stored(PROGRAM) & stored(RENAMED) == {"k", "_"}


@pytest.mark.parametrize("copy", [FORMATTED, COMMENTED, RENAMED], ids=["formatting", "comments", "names"])
def test_a_copy_written_otherwise_is_the_same_experiment(copy):
    novelty = NoveltyFilter()
    first = node(PROGRAM)
    novelty.remember(first)
    again = node(copy)
    assert again.code_hash != first.code_hash  # not an exact duplicate: this filter's case
    reason = novelty.check(again)
    assert reason is not None and reason.startswith(f"the same experiment as node {first.id}")


def _one_constant_edits(code: str, count: int, rng: random.Random) -> list[str]:
    """`count` programs, each `code` with one number of its evolve block changed (numbers in comments and
    strings are not constants: changing them changes no experiment)."""
    lines = code.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    start, end = code.index("EVOLVE-BLOCK-START"), code.index("EVOLVE-BLOCK-END")
    numbers = []
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        at = offsets[token.start[0] - 1] + token.start[1]
        if (
            token.type == tokenize.NUMBER
            and start < at < end
            and re.fullmatch(r"[\d.]+(e-?\d+)?", token.string)
        ):
            numbers.append((at, token.string))
    edits = []
    for _ in range(count):
        at, text = rng.choice(numbers)
        if re.fullmatch(r"\d+", text):
            new = str(int(text) + rng.randint(1, 50))
        else:
            new = repr(float(text) * rng.uniform(0.5, 1.5) + rng.uniform(0.001, 0.01))
        edits.append(code[:at] + new + code[at + len(text) :])
    return edits


def test_a_stream_of_one_constant_edits_is_not_rejected():
    """100 candidates, each one constant of its parent changed, the parent being the last one evaluated (a
    search tuning numbers): under 5% may be rejected, and only a candidate that really repeats a program."""
    rng = random.Random(16)
    novelty = NoveltyFilter()
    parent = node(PROGRAM)
    novelty.remember(parent)
    rejected, seen = 0, {parent.code_hash}
    for _ in range(100):
        child = node(_one_constant_edits(parent.code, 1, rng)[0])
        if novelty.check(child) is not None:
            rejected += 1
            assert child.code_hash in seen  # nothing new was rejected
            continue
        seen.add(child.code_hash)
        novelty.remember(child)
        parent = child
    assert rejected < 5


@pytest.mark.parametrize("task", ["circle_packing", "linear_attention", "data_curation", "rl_algorithm"])
def test_every_constant_of_a_real_task_makes_a_new_experiment(task):
    code = (REPO / "tasks" / task / "initial.py").read_text()
    novelty = NoveltyFilter()
    novelty.remember(node(code))
    edits = {e for e in _one_constant_edits(code, 100, random.Random(task)) if e != code}
    rejected = [e for e in edits if novelty.check(node(e)) is not None]
    assert edits and not rejected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("def f():\n    x = 1\n    return x\n", "def f():\n    x = 1.0\n    return x\n"),  # int and float
        ("X = 1\ndef f():\n    return X\n", "X = 1\ndef f():\n    Y = 1\n    return Y\n"),  # global, local
        (
            "def f(a):\n    p = a\n    q = 2\n    return p - q\n",
            "def f(a):\n    p = a\n    q = 2\n    return q - p\n",
        ),
        ("def f(a):\n    return a\n", "def f(b):\n    return b\n"),  # a parameter: callers may name it
        ("def f():\n    return 1\n", "def g():\n    return 1\n"),  # the program's interface
        ("import math as m\nY = m.pi\n", "import math as n\nY = n.pi\n"),  # imported names
        ("def f():\n    x = 1\n    return eval('x')\n", "def f():\n    y = 1\n    return eval('x')\n"),
        ("class C:\n    a = 1\n", "class C:\n    b = 1\n"),  # class attributes
        (
            "def f():\n    x = 1\n    def g():\n        return x\n    return g\n",
            "def f():\n    x = 1\n    def g():\n        x = 2\n        return x\n    return g\n",
        ),
    ],
    ids=[
        "int-float",
        "global-local",
        "swapped",
        "parameter",
        "function-name",
        "import",
        "eval",
        "class",
        "closure",
    ],
)
def test_different_programs_stay_apart(a, b):
    assert canonical_hash(a) and canonical_hash(a) != canonical_hash(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "def f():\n    x = 1\n    def g():\n        return x\n    return g\n",
            "def f():\n    y = 1\n    def g():\n        return y\n    return g\n",
        ),  # a closure follows its local
        (
            "def f(xs):\n    return [v * v for v in xs if v]\n",
            "def f(xs):\n    return [w * w for w in xs if w]\n",
        ),
        (
            "def f(xs):\n    if (n := len(xs)) > 2:\n        return n\n",
            "def f(xs):\n    if (k := len(xs)) > 2:\n        return k\n",
        ),
        (
            "def f():\n    try:\n        pass\n    except ValueError as e:\n        return e\n",
            "def f():\n    try:\n        pass\n    except ValueError as err:\n        return err\n",
        ),
        (
            "def f():\n    c = 0\n    def g():\n        nonlocal c\n        c += 1\n    g()\n    return c\n",
            "def f():\n    t = 0\n    def g():\n        nonlocal t\n        t += 1\n    g()\n    return t\n",
        ),
        ("S = u'x'\n", "S = 'x'\n"),
        ("def f():\n    '''doc'''\n", "def f():\n    pass\n"),
    ],
    ids=["closure", "comprehension", "walrus", "except", "nonlocal", "string-prefix", "docstring-only"],
)
def test_the_same_program_written_otherwise(a, b):
    assert canonical_hash(a) and canonical_hash(a) == canonical_hash(b)


def test_a_program_that_does_not_parse_has_no_canonical_form():
    assert canonical_hash("def f(:\n") == ""
    novelty = NoveltyFilter()
    assert novelty.check(node("def f(:\n")) is None


def test_only_experiments_that_ran_are_compared():
    novelty = NoveltyFilter()
    for stage, failure in [
        (Stage.FAILED_QUICK, FailureKind.SANDBOX_FAILED),  # the sandbox failed, not the program
        (Stage.FAILED_QUICK, FailureKind.JOB_FAILED),
        (Stage.REJECTED_STATIC, FailureKind.FORBIDDEN_IMPORT),
        (Stage.REJECTED_NOVELTY, FailureKind.NEAR_DUPLICATE),
    ]:
        novelty.remember(node(PROGRAM, stage, failure))
    assert novelty.check(node(FORMATTED)) is None
    timed_out = node(PROGRAM, Stage.FAILED_QUICK, FailureKind.TIMEOUT)  # a verdict on the program
    novelty.remember(timed_out)
    assert f"node {timed_out.id}" in (novelty.check(node(FORMATTED)) or "")


def test_a_candidate_being_evaluated_counts():
    novelty = NoveltyFilter()
    evaluating = node(PROGRAM)
    reason = novelty.check(node(RENAMED), in_flight={evaluating.canonical_hash})
    assert reason is not None and "a candidate being evaluated" in reason


def test_a_node_stored_before_canonical_forms_is_not_compared():
    old = Node(run_id="r", code=PROGRAM, stage=Stage.EVALUATED)  # no canonical_hash: an older store's node
    novelty = NoveltyFilter()
    novelty.remember(old)
    assert novelty.check(node(FORMATTED)) is None
