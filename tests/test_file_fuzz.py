"""Property: whatever a data file or a model file holds, reading it ends in a NetlangError or in
data, never in another exception and never in a hang (every case runs under a time limit).

Data files are CTF files with lines mutated at random (characters, tokens such as nan, '|' or
'3:1', whole lines repeated or dropped) or cut off anywhere; they are read to the end through the
deserializer, in small chunks, with and without maxErrors. Model files are a trained checkpoint
with random bytes flipped, cut off, with zip members added, replaced or dropped, or with its graph
document changed (ops, inputs, shapes, attributes, names); each is loaded, checked, and run forward
on a minibatch.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlang.actions.common import select_nodes
from netlang.cli import main, numeric_warnings_silenced
from netlang.compiler.graph.modelcheck import load_checked_model
from netlang.datasets.synthetic import prepare_synthetic
from netlang.errors import NetlangError
from netlang.readers.ctf import CtfDeserializer, CtfStream
from netlang.runtime.backend import select_backend
from netlang.runtime.executor import Executor

TIME_LIMIT = 10.0          # seconds per case: far beyond what any case needs, so only a hang trips it


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float = TIME_LIMIT):
    def expired(signum, frame):
        raise Hang(f"no result within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# NETLANG_FUZZ_EXAMPLES=5000 runs longer campaigns (and with NETLANG_FUZZ_RANDOM=1, new cases each time).
FUZZ = settings(max_examples=int(os.environ.get("NETLANG_FUZZ_EXAMPLES", "300")), deadline=None,
                derandomize=not os.environ.get("NETLANG_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ---- data files ------------------------------------------------------------------------------------

STREAMS = [CtfStream("features", 2), CtfStream("labels", 3), CtfStream("words", 5, is_sparse=True, alias="w")]
LINES = [
    "0 |features 0.5 -1.25 |labels 0 1 0 |w 1:1 3:0.5",
    "0 |features 1e-3 2 |w 0:1",
    "1 |features -3 4.5e2 |labels 1 0 0 |# a comment |w 4:1",
    "2\t|features .5 5. |labels 0 0 1 |words 2:1",
    "2 |features +1 -0 |w 3:2",
    "3 |features 7 8 |labels 0.25 0.25 0.5 |w 0:1 1:1",
]
TOKENS = ["|", "|features", "|labels", "|w", "|#", "#", " ", "\t", "\r", "\n", ":", "3:1", "9:1", "-1:1", "x",
          "nan", "-inf", "1e39", "1e-39", "0", "1", "-", ".", "e", "99999999999999999999", "é", "\x00", "\ufeff",
          "0 ", "1 ", "12 "]


@st.composite
def mutated_ctf(draw) -> bytes:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        action = draw(st.sampled_from(["insert", "replace", "delete", "drop line", "repeat line", "swap lines"]))
        at = draw(st.integers(0, len(line)))
        if action == "insert":
            lines[i] = line[:at] + draw(st.sampled_from(TOKENS)) + line[at:]
        elif action == "replace":
            lines[i] = line[:at] + draw(st.sampled_from(TOKENS)) + line[at + draw(st.integers(1, 4)):]
        elif action == "delete":
            lines[i] = line[:at] + line[at + draw(st.integers(1, 6)):]
        elif action == "drop line" and len(lines) > 1:
            del lines[i]
        elif action == "repeat line":
            lines.insert(i, line)
        elif action == "swap lines":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    data = "\n".join(lines).encode("utf-8")
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]          # a truncated file, perhaps mid-character
    return data


def read_everything(path: str, **options) -> None:
    reader = CtfDeserializer(path, STREAMS, chunk_size_bytes=60, **options)
    reader.expect_distributions({"labels": "CrossEntropyWithSoftmax 'ce'"})
    for chunk in range(reader.num_chunks()):
        reader.read_chunk(chunk)


@FUZZ
@given(data=mutated_ctf(), max_errors=st.sampled_from([0, 2, 100]), skip_ids=st.booleans())
def test_mutated_and_truncated_ctf_files_give_data_or_netlang_errors(tmp_path, data, max_errors, skip_ids):
    path = tmp_path / "fuzz.ctf"
    path.write_bytes(data)
    with time_limit():
        try:
            read_everything(str(path), max_errors=max_errors, skip_sequence_ids=skip_ids)
        except NetlangError as err:
            assert err.message and err.exit_code == 65, err


def test_the_unmutated_ctf_file_reads(tmp_path):
    path = tmp_path / "clean.ctf"
    path.write_text("\n".join(LINES))
    read_everything(str(path))


# ---- model files -----------------------------------------------------------------------------------

MODEL_CONFIG = """
precision = "float" ; deviceId = "cpu"
train = {{
    action = "train" ; modelPath = "{out}/model.dnn"
    network = {{
        features = Input {{2}} ; labels = Input {{3}}
        h = DenseLayer {{4, activation=Tanh}} (features)
        z = BatchNormalizationLayer {{}} (DenseLayer {{3}} (h))
        ce = CrossEntropyWithSoftmax (labels, z) ; errs = ClassificationError (labels, z)
        criterionNodes = (ce) ; evaluationNodes = (errs) ; outputNodes = (z)
    }}
    SGD = {{ maxEpochs = 1 ; minibatchSize = 50 ; learningRatesPerSample = 0.01 ; momentumPerMB = 0.9 }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/Train_cntk_text.txt"
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A checkpoint of a small trained network (parameters, batch-norm state, learner state)."""
    root = tmp_path_factory.mktemp("model")
    prepare_synthetic(str(root), seed=1, classes=3, dim=2, samples=200)
    config = root / "cfg.net"
    config.write_text(MODEL_CONFIG.format(out=root / "out", data=root))
    assert main(["train", str(config), "-q"]) == 0
    return str(root / "out" / "model.dnn.1.ckp")


FEEDS = {"features": np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32),
         "labels": np.eye(3, dtype=np.float32)[np.arange(8) % 3]}


def run_model(path: str) -> None:
    """Load, check and run a model file forward, as eval does."""
    model = load_checked_model(path)
    backend = select_backend("cpu", "float")
    executor = Executor(model.network, backend, {k: backend.from_host(v, backend.dtype) for k, v in model.parameters.items()})
    executor.load_state_arrays(model.state)
    nodes = select_nodes(model.network, None, ("criterion", "evaluation", "output"), "evalNodeNames")
    with numeric_warnings_silenced():
        executor.run(FEEDS, nodes)


def members_of(blob: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return {info.filename: archive.read(info.filename) for info in archive.infolist()}


def archive_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def npy(array) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=True)
    return out.getvalue()


RANDOM_JSON = [None, True, 0, -1, 1, 3, 2 ** 40, 1.5, float("nan"), "", "x", "../../x", "Times", "#", [], [1], [0, 0],
               {}, {"__tuple__": [1, 2]}, {"__seqaxis__": "*"}, {"__tuple__": "no"}, {"seq": 1}, [[[]]], "param/x"]
NODE_FIELDS = ["name", "op", "inputs", "attrs", "shape", "layout", "tags", "parameter", "learningRateMultiplier"]
OPS = ["Times", "Plus", "Tanh", "ReLU", "InputValue", "LearnableParameter", "Constant", "PastValue", "Convolution",
       "Pooling", "BatchNormalization", "Reshape", "Slice", "Splice", "ReduceSum", "CrossEntropyWithSoftmax", "NoSuchOp"]


def mutate_graph(rng: random.Random, document: dict) -> dict:
    """One change to the graph document (changes compound: a node may already be anything)."""
    nodes = document["graph"]["nodes"]
    node = rng.choice(nodes)
    if not isinstance(node, dict):
        return document
    names = [n["name"] for n in nodes if isinstance(n, dict) and isinstance(n.get("name"), str)]
    attrs = node.get("attrs") if isinstance(node.get("attrs"), dict) else None
    choice = rng.randrange(9)
    if choice == 0:
        node["op"] = rng.choice(OPS)
    elif choice == 1:
        node["inputs"] = rng.sample(names + ["nothere"], k=min(rng.randrange(0, 4), len(names) + 1))
    elif choice == 2:
        node["shape"] = [rng.choice([0, 1, 2, 3, 4, 5, 1000, -1]) for _ in range(rng.randrange(0, 4))]
    elif choice == 3 and attrs:
        attrs[rng.choice(sorted(attrs))] = rng.choice(RANDOM_JSON)
    elif choice == 4 and attrs is not None:
        attrs[rng.choice(["axis", "shape", "stride", "outputRank", "epsilon", "op", "x"])] = rng.choice(RANDOM_JSON)
    elif choice == 5:
        node[rng.choice(NODE_FIELDS)] = rng.choice(RANDOM_JSON)
    elif choice == 6:
        node["layout"] = rng.choice([None, "#", {"seq": "*"}, {"seq": "other"}])
    elif choice == 7:
        rng.shuffle(nodes)
    else:
        group = rng.choice(["criterion", "evaluation", "output", "feature", "nonsense"])
        document["graph"]["groups"][group] = rng.sample(names, k=min(rng.randrange(0, 3), len(names)))
    return document


def mutate_model(rng: random.Random, blob: bytes) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:                                     # flip bytes anywhere
        data = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 1:                                     # cut off
        return blob[:rng.randrange(len(blob))]
    members = members_of(blob)
    names = sorted(members)
    if kind == 2:                                     # a member more, of any kind
        name = rng.choice(["param/", "state/", "", "__training__", "state/node/z/"]) + rng.choice(["x", "h.W", ".npy"])
        payload = rng.choice([npy(np.zeros((2, 3))), npy(np.array(["s"])), npy(np.array([object()], dtype=object)),
                              bytes(rng.randrange(256) for _ in range(40)), b""])
        members[name if name.endswith(".npy") or rng.random() < 0.3 else name + ".npy"] = payload
    elif kind == 3:                                   # a member replaced
        members[rng.choice(names)] = rng.choice([npy(np.float32(rng.random())), npy(np.ones((3, 3))),
                                                 npy(np.array([object()], dtype=object)),
                                                 npy(np.frombuffer(b'{"format": 1}', dtype=np.uint8)),
                                                 bytes(rng.randrange(256) for _ in range(60))])
    elif kind == 4:                                   # a member dropped
        del members[rng.choice(names)]
    else:                                             # the graph document changed
        header = np.load(io.BytesIO(members["__netlang__.npy"]))
        document = json.loads(header.tobytes())
        for _ in range(rng.randint(1, 3)):
            document = mutate_graph(rng, document)
        members["__netlang__.npy"] = npy(np.frombuffer(json.dumps(document).encode(), dtype=np.uint8))
    return archive_of(members)


@FUZZ
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_damaged_and_crafted_model_files_give_netlang_errors(tmp_path, checkpoint, seed):
    path = tmp_path / "fuzz.dnn"
    with open(checkpoint, "rb") as original:
        path.write_bytes(mutate_model(random.Random(seed), original.read()))
    with time_limit():
        try:
            run_model(str(path))
        except NetlangError as err:
            assert err.message, err


def test_the_unmutated_model_file_runs(checkpoint):
    run_model(checkpoint)
