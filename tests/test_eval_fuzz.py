"""Fuzzing the front end and the evaluator: whatever the program, only NetlangError escapes."""
from __future__ import annotations

import os
import random
import signal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlang.compiler.graph import evaluate_text, load_config
from netlang.compiler.graph.network import build_action_network
from netlang.compiler.lang import values
from netlang.compiler.lang.evaluator import force_all
from netlang.errors import NetlangError

MEMBER_NAMES = ["a", "b", "c", "r", "arr", "f", "g"]
LEAF_NAMES = MEMBER_NAMES + ["x", "y", "None", "Length", "Format", "Substr", "Min", "Repeat", "Fail",
                             "IsSameObject", "_ConcatArrays", "Mod", "Print", "Sign", "undefined"]
NUMBERS = ["0", "1", "2", "3", "-1", "0.5", "1e3", "10", ".5"]
STRINGS = ['"s"', "'ab'", '""', '"$a$x"', '"%d"', '".2"']
BINARY = ["+", "-", "*", "/", "%", "**", ".*", "==", "!=", "<", "<=", ">", ">=", "&&", "||", ">>", "<<", "with"]


def random_expression(rng: random.Random, depth: int = 0) -> str:
    """A random expression of the BrainScript grammar (names from a small pool, so they often resolve)."""
    if depth > 3 or rng.random() < 0.3:
        return rng.choice([rng.choice(NUMBERS), rng.choice(STRINGS), rng.choice(["true", "false"]),
                           rng.choice(LEAF_NAMES)])
    sub = lambda: random_expression(rng, depth + 1)  # noqa: E731
    form = rng.randrange(13)
    if form == 0:
        return f"({sub()} {rng.choice(BINARY)} {sub()})"
    if form == 1:
        return rng.choice(["-", "!", "+"]) + sub()
    if form == 2:
        return f"(if {sub()} then {sub()} else {sub()})"
    if form == 3:
        return f"({sub()} : {sub()})"
    if form == 4:
        return "[| " + " ; ".join(sub() for _ in range(rng.randrange(3))) + " |]"
    if form == 5:
        return f"{{ a = {sub()} ; b = {sub()} }}"
    if form == 6:
        return f"{sub()}.{rng.choice(['a', 'b', 'x'])}"
    if form == 7:
        return f"{sub()}[{sub()}]"
    if form == 8:
        return rng.choice(LEAF_NAMES) + "(" + ", ".join(sub() for _ in range(rng.randrange(4))) + ")"
    if form == 9:
        return f"{rng.choice(LEAF_NAMES)}(x, opt={sub()})"
    if form == 10:
        return f"(x => {sub()})"
    if form == 11:
        return f"array[{sub()}..{sub()}](x => {sub()})"
    return f"new Mystery [ v = {sub()} ]"


def random_program(seed: int) -> str:
    rng = random.Random(seed)
    lines = []
    for name in rng.sample(MEMBER_NAMES, rng.randint(1, 6)):
        if name in ("f", "g") and rng.random() < 0.7:
            lines.append(f"{name}(x, y=1) = {random_expression(rng)}")
        elif name == "arr" and rng.random() < 0.5:
            lines.append(f"arr[x:0..2] = {random_expression(rng)}")
        else:
            lines.append(f"{name} = {random_expression(rng)}")
    return "\n".join(lines)


SEEDS = [
    "f(x, y=1) = x + y\na = f(2, y=5)\nb = if a > 3 then 'big' else 'small'\n",
    "arr[i:1..3] = i * i\nr = { s = arr[2] ; t = Length(Format(s, '5')) }\nc = r.t\n",
    "Fib(n) = if n < 2 then n else Fib(n-1) + Fib(n-2)\nv = Fib(8)\nw = (x => x * 2) >> (y => y + 1)\n",
    "a = 1:2:3\nb = (a << 1)[0]\nc = _ConcatArrays(a, Repeat(2, 0))\nd = \"n=$b$\"\n",
    "x = { a = 1 ; b = { c = a + 1 } }\ny = x.b.c\nz = Substr('hello', -3, 2) + Chr(65)\n",
]


class StillComputing(Exception):
    """A case ran past its time: a valid program can compute for long (a mutated `Fib(8)` becomes
    `Fib(88)`), which is no error of netlang's; the case ends there."""


def _stop(signum, frame):
    raise StillComputing


def _evaluate_everything(text: str, seconds: float = 2.0) -> None:
    saved = values.MAX_NESTING
    values.MAX_NESTING = 300  # keep runaway recursions short; the limit itself is tested elsewhere
    previous = signal.signal(signal.SIGALRM, _stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        force_all(evaluate_text(text, "<fuzz>"))
    except (NetlangError, StillComputing):
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        values.MAX_NESTING = saved


# The same cases every run (CI stays deterministic); NETLANG_FUZZ_RANDOM=1 draws new ones.
DERANDOMIZE = not os.environ.get("NETLANG_FUZZ_RANDOM")


@settings(max_examples=1500, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32))
def test_generated_programs_raise_only_netlang_errors(seed):
    _evaluate_everything(random_program(seed))


@st.composite
def mutated_programs(draw):
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["delete", "insert", "duplicate"]))
        if kind == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 5)):]
        elif kind == "insert":
            piece = draw(st.sampled_from(list("()[]{}:;,.=+-*/<>!|&$\"'# \n0aX") + ["=>", "..", "[|", "|]", "if", "new"]))
            text = text[:pos] + piece + text[pos:]
        else:
            end = min(len(text), pos + draw(st.integers(1, 20)))
            text = text[:end] + text[pos:end] + text[end:]
    return text


@settings(max_examples=1000, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_programs())
def test_mutated_programs_raise_only_netlang_errors(text):
    _evaluate_everything(text)


# ---- CNTK's legacy layer: whole .cntk configs, validated and their networks built ---------------

LEGACY_SEEDS = [
    "RootDir = .\nDataDir = $RootDir$/data\ncommand = train\ndim = 2\nmodelPath = $rootdir$/m.dnn\n"
    "train = [\n    action = train\n    BrainScriptNetworkBuilder = {\n"
    "        f = Input {$dim$} ; l = Input {3} ; z = DenseLayer {3} (f)\n"
    "        ce = CrossEntropyWithSoftmax (l, z) ; criterionNodes = (ce)\n    }\n"
    "    SGD = [ maxEpochs = 1 ; learningRatesPerMB = 0.5*2:0.1 ; momentumPerMB = 0.9 ; loadBestModel = true ]\n"
    "    reader = [ readerType = CNTKTextFormatReader ; file = $DataDir$/t.txt\n"
    "        input = [ f = [ dim = 2 ; format = dense ] ; l = [ dim = 3 ] ] ]\n]\n",
    "command = t\nt = [\n  action = train\n  SimpleNetworkBuilder = [ layerSizes = 4:8*2:3 ; layerTypes = Sigmoid ; needPrior = true ]\n"
    "  SGD = [ maxEpochs = 1 ; learningRatesPerSample = 0.01 ]\n"
    "  reader = [ readerType = CNTKTextFormatReader ; file = d.txt ; input = [ features = [ dim = 4 ] ; labels = [ dim = 3 ] ] ]\n]\n",
]


def _check_legacy_config(text: str, tmp_dir) -> None:
    path = tmp_dir / "fuzz.cntk"
    path.write_text(text)
    saved = values.MAX_NESTING
    values.MAX_NESTING = 300
    try:
        config = load_config(str(path))
        for _, view in config.actions():
            ref = view.network_expr()
            if ref is not None:
                build_action_network(ref)
    except NetlangError:
        pass
    finally:
        values.MAX_NESTING = saved


@st.composite
def mutated_legacy_configs(draw):
    text = draw(st.sampled_from(LEGACY_SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["delete", "insert"]))
        if kind == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 5)):]
        else:
            piece = draw(st.sampled_from(list("[]{}():;,=$\"'# \n0aX") + ["1#INF", "$dim$", "$nope$", "include=", "//"]))
            text = text[:pos] + piece + text[pos:]
    return text


@settings(max_examples=300, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(text=mutated_legacy_configs())
def test_mutated_legacy_configs_raise_only_netlang_errors(text, tmp_path):
    _check_legacy_config(text, tmp_path)
