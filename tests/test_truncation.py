"""Truncated BPTT: the window packer (readers/truncation.py) and the state carried across minibatches
(runtime/truncation.py, the delay kernels and recurrent loops), plus the train action's settings."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from netlang.compiler.graph import evaluate_text, network
from netlang.compiler.lang.nodes import BuildContext
from netlang.errors import DataError
from netlang.readers.ctf import CtfDeserializer, CtfStream
from netlang.readers.prefetch import PrefetchingSource
from netlang.readers.source import MinibatchSource
from netlang.readers.windows import TruncatedSource
from netlang.runtime.backend import cpu_backend, select_backend
from netlang.runtime.carryover import CarryOver
from netlang.runtime.executor import Executor

CPU = cpu_backend()
X = CtfStream("x", 2)                 # x = [key, step]
Y = CtfStream("y", 3, is_sparse=True)


def write_sequences(tmp_path, lengths, label_steps=None, name="seqs.ctf") -> str:
    lines = []
    for key, length in enumerate(lengths):
        for t in range(length):
            label = f" |y {(key + t) % 3}:1" if label_steps is None or t < label_steps else ""
            lines.append(f"{key} |x {key} {t}{label}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def truncated_source(tmp_path, lengths, length=3, parallel=None, label_steps=None, **options):
    d = CtfDeserializer(write_sequences(tmp_path, lengths, label_steps), [X, Y])
    options.setdefault("randomize", False)
    return TruncatedSource(MinibatchSource([d], **options), length, parallel)


def epoch(src, num_samples=6, rank=0, num_ranks=1):
    out = []
    while True:
        mb = src.next_minibatch(num_samples, rank, num_ranks)
        out.append(mb)
        if mb.end_of_epoch:
            return out


def steps_of(mb):
    """Per sequence of the minibatch: (slot, continues, key, [steps])."""
    return [(int(slot), bool(before > 0), int(seq[0, 0]), [int(v) for v in seq[:, 1]])
            for slot, before, seq in zip(mb.slots, mb.steps_before, mb["x"].sequences)]


# ---- the packer ------------------------------------------------------------------------------

def test_windows_continue_in_their_slot_and_new_sequences_take_free_slots(tmp_path):
    src = truncated_source(tmp_path, [5, 2, 7, 3], length=3)
    mbs = epoch(src, num_samples=6)          # 6 / 3 = 2 parallel slots
    assert [steps_of(mb) for mb in mbs] == [
        [(0, False, 0, [0, 1, 2]), (1, False, 1, [0, 1])],
        [(0, True, 0, [3, 4]), (1, False, 2, [0, 1, 2])],
        [(0, False, 3, [0, 1, 2]), (1, True, 2, [3, 4, 5])],
        [(1, True, 2, [6])],
    ]
    assert [mb.num_samples for mb in mbs] == [5, 5, 6, 1]
    assert [mb.end_of_epoch for mb in mbs] == [False, False, False, True]


def test_every_step_of_every_sequence_is_delivered_once_in_order(tmp_path):
    lengths = [int(v) for v in np.random.default_rng(3).integers(1, 30, 40)]
    src = truncated_source(tmp_path, lengths, length=4, randomize=True, randomization_window=1)
    seen = {}
    for mb in epoch(src, num_samples=20):
        for slot, cont, key, steps in steps_of(mb):
            assert cont == (key in seen)
            seen.setdefault(key, []).extend(steps)
            assert len(steps) <= 4
    assert seen == {k: list(range(n)) for k, n in enumerate(lengths)}
    # The sparse stream is cut at the same steps.
    src.start_epoch(0)
    mb = src.next_minibatch(20)
    for seq_x, seq_y in zip(mb["x"].sequences, mb["y"].sequences):
        assert len(seq_y) == len(seq_x)
        np.testing.assert_array_equal(seq_y.indices, (seq_x[:, 0] + seq_x[:, 1]).astype(int) % 3)


def test_the_next_epoch_starts_every_slot_afresh(tmp_path):
    src = truncated_source(tmp_path, [4, 4], length=3, epoch_size=0)
    first, second = epoch(src), epoch(src)
    assert [steps_of(mb) for mb in first] == [steps_of(mb) for mb in second]
    assert second[0].epoch == 1 and not second[0].steps_before.any()


def test_workers_share_the_slots(tmp_path):
    lengths = [6, 2, 5, 3, 4, 7]
    whole = [steps_of(mb) for mb in epoch(truncated_source(tmp_path, lengths), num_samples=9)]
    for rank in range(2):
        parts = epoch(truncated_source(tmp_path, lengths), num_samples=9, rank=rank, num_ranks=2)
        assert [steps_of(mb) for mb in parts] == [[s for s in mb if s[0] % 2 == rank] for mb in whole]
        assert all(mb.global_num_samples == sum(len(s[3]) for s in w) for mb, w in zip(parts, whole))


def test_state_and_restore_replay_to_the_same_window(tmp_path):
    lengths = [9, 4, 11, 2, 6]
    src = truncated_source(tmp_path, lengths, length=2)
    src.next_minibatch(6)
    src.next_minibatch(6)
    state = json.loads(json.dumps(src.state()))
    expected = [steps_of(src.next_minibatch(6)) for _ in range(3)]
    again = truncated_source(tmp_path, lengths, length=2)
    again.restore(state)
    assert [steps_of(again.next_minibatch(6)) for _ in range(3)] == expected


def test_prefetching_a_truncated_source_gives_the_same_minibatches(tmp_path):
    lengths = [int(v) for v in np.random.default_rng(5).integers(1, 12, 25)]
    plain = [steps_of(mb) for mb in epoch(truncated_source(tmp_path, lengths), num_samples=9)]
    with PrefetchingSource(truncated_source(tmp_path, lengths)) as src:
        fetched = [steps_of(mb) for mb in epoch(src, num_samples=9)]
        src.start_epoch(0)
        again = [steps_of(mb) for mb in epoch(src, num_samples=9)]
    assert fetched == plain == again


def test_streams_of_different_lengths_cannot_be_cut(tmp_path):
    src = truncated_source(tmp_path, [4, 3], label_steps=1)
    with pytest.raises(DataError, match="different lengths"):
        src.next_minibatch(6)


# ---- carried state ---------------------------------------------------------------------------

def build(body: str):
    return network.build_network(evaluate_text("net = {\n" + body + "\n}").get("net"), BuildContext("", None))


RECURRENT = """
    x = Input{2}
    y = Input{3}
    W = ParameterTensor {(3:2), init='gaussian', initValueScale=3}
    R = ParameterTensor {(3:3), init='gaussian', initValueScale=3}
    h0 = ParameterTensor {3, init='gaussian'}
    h = Tanh (W * x + R * PastValue (0, h, timeStep=2, initialState=h0))
    x0 = ParameterTensor {2, init='gaussian'}
    prev = PastValue (0, x, initialState=x0)    # a delay outside the loop
    z = Times (ParameterTensor {(3:2), init='gaussian'}, prev) + h
    loss = SquareError (y, z, tag='criterion')
"""


def run_windows(ex, net, x, y, length, outputs):
    """Feed the sequences `x`, `y` (T, N, …) window by window with state carried; outputs per window."""
    values = []
    slots = np.arange(x.shape[1])
    for start in range(0, x.shape[0], length):
        feeds = {"x": x[start:start + length], "y": y[start:start + length]}
        carry = CarryOver.of(slots, np.full(len(slots), start), CPU)
        values.append(ex.run(feeds, outputs, carry=carry)[0])
    return values


@pytest.mark.parametrize("length", [1, 2, 3, 5])
def test_windows_with_carried_state_give_the_whole_sequence_outputs(length):
    net = build(RECURRENT)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 4, 2)), rng.standard_normal((10, 4, 3))
    ex = Executor(net, select_backend("cpu", "double"))
    whole = ex.run({"x": x, "y": y}, [net.node("z"), net.node("h")])[0]
    pieces = run_windows(ex, net, x, y, length, [net.node("z"), net.node("h")])
    for name in ("z", "h"):
        np.testing.assert_allclose(np.concatenate([p[name] for p in pieces]), whole[name], rtol=1e-12)


def test_a_sequence_that_starts_anew_in_a_slot_reads_its_initial_state():
    net = build(RECURRENT)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 2, 2)), rng.standard_normal((4, 2, 3))
    ex = Executor(net, select_backend("cpu", "double"))
    ex.run({"x": x, "y": y}, [net.node("z")], carry=CarryOver.of([0, 1], [0, 0], CPU))
    fresh = ex.run({"x": x, "y": y}, [net.node("z")])[0]["z"]
    # Slot 1 starts a new sequence, slot 0 continues: only slot 0 differs from a fresh start.
    mixed = ex.run({"x": x, "y": y}, [net.node("z")], carry=CarryOver.of([0, 1], [4, 0], CPU))[0]["z"]
    np.testing.assert_allclose(mixed[:, 1], fresh[:, 1], rtol=1e-12)
    assert not np.allclose(mixed[:2, 0], fresh[:2, 0])
    ex.forget_carried()
    forgotten = ex.run({"x": x, "y": y}, [net.node("z")],
                       carry=CarryOver.of([0, 1], [4, 4], CPU))[0]["z"]
    np.testing.assert_allclose(forgotten, fresh, rtol=1e-12)


def test_gradients_stop_at_the_window_edge():
    """The gradient of a continuing window is the exact derivative with the carried steps held fixed
    (float64 central differences), and the initial state gets nothing from continuing sequences."""
    net = build(RECURRENT)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((7, 3, 2)), rng.standard_normal((7, 3, 3))
    ex = Executor(net, select_backend("cpu", "double"))
    slots = np.arange(3)
    loss, wrt = net.node("loss"), list(net.learnable_parameters)
    ex.run({"x": x[:4], "y": y[:4]}, [loss], carry=CarryOver.of(slots, [0] * 3, CPU))
    assert any("carried" in state for state in ex.state.values())
    carried = {nid: {k: np.copy(v) for k, v in state.items()} for nid, state in ex.state.items()}
    second = {"x": x[4:], "y": y[4:]}
    steps_before = [4, 0, 4]

    def run(grad=False):
        for nid, state in carried.items():
            ex.state[nid] = {k: np.copy(v) for k, v in state.items()}
        carry = CarryOver.of(slots, steps_before, CPU)
        if grad:
            return ex.run(second, [], loss=loss, wrt=wrt, carry=carry)[1]
        return float(ex.run(second, [loss], carry=carry)[0]["loss"].sum())

    grads = run(grad=True)
    for p in wrt:
        value = ex.parameters[p.name]
        numeric = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            keep = value[i]
            value[i] = keep + 1e-6
            up = run()
            value[i] = keep - 1e-6
            down = run()
            value[i] = keep
            numeric[i] = (up - down) / 2e-6
        np.testing.assert_allclose(grads[p.name], numeric, rtol=1e-5, atol=1e-7, err_msg=p.name)


# ---- the train action ------------------------------------------------------------------------

def config(tmp_path, reader_extra, sgd_extra="", layer="RecurrentLSTMLayer {8} (embed)"):
    data = tmp_path / "train.ctf"
    rng = np.random.default_rng(0)
    lines = []
    for key in range(30):
        words = rng.integers(0, 6, rng.integers(5, 25))
        for t, w in enumerate(words):
            nxt = words[t + 1] if t + 1 < len(words) else 0
            # `topic`, one per sequence, is declared in the reader but not read by the network.
            lines.append(f"{key} |w {w}:1 |next {nxt}:1" + (f" |topic {key % 2}:1" if t == 0 else ""))
    data.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "lm.net"
    cfg.write_text(f"""
command = train
deviceId = "cpu"
modelPath = "{tmp_path}/model.dnn"
train = {{
    action = "train"
    network = {{
        w = Input {{6, sparse=true}}
        next = Input {{6}}
        embed = EmbeddingLayer {{4}} (w)
        z = DenseLayer {{6}} ({layer})
        ce = CrossEntropyWithSoftmax (next, z)
        criterionNodes = (ce) ; evaluationNodes = (ce)
    }}
    SGD = {{ minibatchSize = 40 ; maxEpochs = 2 ; learningRatesPerSample = 0.02 {sgd_extra} }}
    reader = {{
        readerType = "CNTKTextFormatReader" ; file = "{data}" ; randomize = false
        input = {{ w = {{ dim = 6 ; format = "sparse" }} ; next = {{ dim = 6 ; format = "sparse" }}
                  topic = {{ dim = 2 ; format = "sparse" }} }}
        {reader_extra}
    }}
}}
""")
    return cfg


def netlang(*args):
    return subprocess.run([sys.executable, "-m", "netlang", *args], capture_output=True, text=True)


def test_training_with_truncated_bptt(tmp_path):
    cfg = config(tmp_path, "truncated = true ; truncationLength = 10")
    done = netlang("train", str(cfg))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["samples"] for r in epochs] == [epochs[0]["samples"]] * 2
    total = sum(1 for line in open(tmp_path / "train.ctf"))
    assert epochs[0]["samples"] == total           # every word once per epoch
    assert epochs[1]["criterion"] < epochs[0]["criterion"]


def test_the_legacy_sgd_spelling_uses_the_minibatch_as_window(tmp_path):
    cfg = config(tmp_path, "nbruttsineachrecurrentiter = 3", sgd_extra="; truncated = true")
    done = netlang("train", str(cfg))
    assert done.returncode == 0, done.stderr


def test_truncation_needs_a_length(tmp_path):
    cfg = config(tmp_path, "truncated = true")
    done = netlang("train", str(cfg))
    assert done.returncode == 78
    assert "truncationLength" in done.stderr and "lm.net:" in done.stderr and "Traceback" not in done.stderr


def test_future_value_cannot_be_truncated(tmp_path):
    cfg = config(tmp_path, "truncated = true ; truncationLength = 10",
                 layer="RecurrentLSTMLayer {8, goBackwards=true} (embed)")
    done = netlang("train", str(cfg))
    assert done.returncode == 78
    assert "FutureValue" in done.stderr and "truncated = false" in done.stderr
