"""The compiled step (runtime/stepgraph.py, runtime/buckets.py) on the CPU, with an emulated graph
service: a capture records the step's body without running it, a replay runs it again on the
bucket's static buffers (refilled with the new minibatch). What the emulation checks is everything
but CUDA itself: buckets and padding, the static uploads of inputs, masks and the learner's
per-step numbers, host sample counts, the eager fallbacks and their notes, and that replayed steps
compute what eager steps compute. tests/test_gpu.py runs the same on a GPU with real graphs."""
from __future__ import annotations

import io
import json
from contextlib import nullcontext, redirect_stderr, redirect_stdout

import numpy as np
import pytest
from cuda_emulation import EmulatedKernels, have_gxx

from netlang.actions import common
from netlang.cli import main
from netlang.compiler.graph import evaluate_text, network
from netlang.compiler.lang.nodes import BuildContext
from netlang.datasets.synthetic import prepare_synthetic
from netlang.runtime import buckets
from netlang.runtime.backend import NumpyBackend
from netlang.runtime.executor import Executor, host_sample_count
from netlang.runtime.stepgraph import CompiledStep

needs_gxx = pytest.mark.skipif(not have_gxx(), reason="g++ runs the fused learner's CUDA source on the CPU")


class EmulatedGraphs:
    def __init__(self):
        self.captures = 0
        self.launches = 0

    def scope(self):
        return nullcontext()

    def capture(self, body):
        self.captures += 1
        return body

    def launch(self, handle):
        self.launches += 1
        return handle()

    def memory_bytes(self, handle):
        return 0


def graph_backend(dtype=np.float64, kernels=False):
    backend = NumpyBackend(dtype, "emulated-gpu")
    backend.graphs = EmulatedGraphs()
    if kernels:
        backend.kernels = EmulatedKernels()
    return backend


# ---- buckets ---------------------------------------------------------------------------------------

def test_bucket_sizes_grow_by_at_most_half():
    assert [buckets.bucket_size(n) for n in (1, 8, 9, 17, 25, 33, 49, 65, 100)] == [8, 8, 16, 24, 32, 48, 64, 96, 128]
    assert all(b / a <= 1.5 for a, b in zip(buckets.LADDER[2:], buckets.LADDER[3:]))


def test_sequences_are_padded_to_their_bucket_batches_are_not():
    mask = np.array([[1, 1], [1, 0], [1, 0]], dtype=bool)
    feeds = {"x": (np.ones((3, 2, 4)), mask), "img": np.ones((5, 1, 2, 2))}
    key = buckets.bucket_of(feeds, {"dropoutRate": 0.5})
    padded = buckets.padded(feeds, key)
    x, m = padded["x"]
    assert x.shape == (8, 8, 4) and m.shape == (8, 8) and m.sum() == mask.sum()
    assert padded["img"] is feeds["img"]
    assert key != buckets.bucket_of(feeds, {"dropoutRate": 0.25})      # a baked option is part of the key


# ---- a recurrent step: replays on padded buckets equal eager steps ----------------------------------

LSTM = """
    x = Input{3}
    y = Input{4}
    h = RecurrentLSTMLayer {5} (x)
    z = DenseLayer {4} (h)
    loss = SquareError (y, z, tag='criterion')"""


def _sequences(seed, lengths):
    rng = np.random.default_rng(seed)
    mask = np.arange(max(lengths))[:, None] < np.asarray(lengths)[None, :]
    x = rng.standard_normal(mask.shape + (3,)) * mask[..., None]
    y = rng.standard_normal(mask.shape + (4,)) * mask[..., None]
    return {"x": (x, mask), "y": (y, mask)}


def test_replayed_recurrent_steps_equal_eager_steps():
    net = network.build_network(evaluate_text("net = {\n" + LSTM + "\n}").get("net"), BuildContext("", None))
    loss, params = net.node("loss"), net.learnable_parameters
    eager = Executor(net, NumpyBackend(np.float64))
    backend = graph_backend()
    replayed = Executor(net, backend)
    compiled = CompiledStep(backend, backend.graphs, True, state_of=lambda: replayed.state)

    def body(feeds):
        values, grads = replayed.run(feeds, [], loss=loss, wrt=params)
        return {"loss": values["loss"].sum(), **{k: v.copy() for k, v in grads.items()}}

    for step, lengths in enumerate([(5, 2, 4), (3, 3, 1), (6, 2, 2), (4, 1, 5), (2, 6, 3)]):
        feeds = _sequences(step, lengths)
        values, grads = eager.run(feeds, [], loss=loss, wrt=params)
        result = compiled.run(feeds, body)
        np.testing.assert_allclose(result["loss"], values["loss"].sum(), rtol=1e-12)
        for name, g in grads.items():
            np.testing.assert_allclose(result[name], g, rtol=1e-10, atol=1e-14)
        assert host_sample_count(net, loss, feeds) == eager.sample_counts["loss"] == sum(lengths)
    assert backend.graphs.captures == 1 and backend.graphs.launches == 3 and compiled.captured == 1


def test_a_step_that_reads_the_device_runs_eagerly_with_one_note():
    net = network.build_network(evaluate_text("net = {\n" + LSTM + "\n}").get("net"), BuildContext("", None))
    backend = graph_backend()
    executor = Executor(net, backend)
    notes = []
    compiled = CompiledStep(backend, backend.graphs, True, say=notes.append)

    def body(feeds):
        values, _ = executor.run(feeds, [net.node("loss")])
        return {"loss": float(backend.to_host(values["loss"]).sum())}      # a host read inside the step

    results = [compiled.run(_sequences(0, (5, 2, 4)), body)["loss"] for _ in range(5)]
    assert backend.graphs.captures == 0 and len(set(results)) == 1
    assert len(notes) == 1 and "reads the device from the host (to_host)" in notes[0]


def test_state_an_op_replaces_every_step_is_not_captured():
    backend = graph_backend()
    state = {1: {"count": 0}}
    notes = []
    compiled = CompiledStep(backend, backend.graphs, True, say=notes.append, state_of=lambda: state)

    def body(feeds):
        state[1]["count"] += 1                  # host state a replay would not advance
        return {"x": backend.upload("x", feeds["x"][0]).sum()}

    for _ in range(4):
        compiled.run({"x": (np.ones((2, 2, 1)), np.ones((2, 2), bool))}, body)
    assert state[1]["count"] == 4 and backend.graphs.captures == 0
    assert "replaced its state" in notes[0]


def test_cuda_graphs_off_runs_every_step_eagerly():
    backend = graph_backend()
    notes = []
    compiled = CompiledStep(backend, backend.graphs, False, say=notes.append)
    for _ in range(4):
        compiled.run({"x": np.ones((2, 3))}, lambda feeds: {"x": feeds["x"].sum()})
    assert backend.graphs.captures == 0 and notes == ["CUDA graphs are off (cudaGraph = false or --no-cuda-graph)"]


# ---- training: 60 steps replayed equal 60 eager steps -------------------------------------------------

CONFIG = """
command = train
modelPath = "{out}/model.dnn"
deviceId = "cpu"
features = Input {{2}}
labels = Input {{3}}
train = {{
    action = "train"
    network = {{
        h = DenseLayer {{16, activation=ReLU}} (features)
        z = DenseLayer {{3}} (h)
        ce = CrossEntropyWithSoftmax (labels, z)
        errs = ClassificationError (labels, z)
        criterionNodes = (ce) ; evaluationNodes = (errs)
    }}
    SGD = {{ maxEpochs = 3 ; minibatchSize = 32 ; learningRatesPerSample = 0.02 ; momentumPerMB = 0.9
             L2RegWeight = 0.0001 ; numMBsToShowResult = 1 }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/Train_cntk_text.txt"
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
"""


def _train(tmp_path, data, backend, monkeypatch, *flags):
    monkeypatch.setattr(common, "select_backend", lambda device, precision: backend)
    tmp_path.mkdir()
    cfg = tmp_path / "cfg.net"
    cfg.write_text(CONFIG.format(out=tmp_path / "out", data=data))
    stderr = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(stderr):
        assert main(["train", str(cfg), "--no-progress", *flags]) == 0, stderr.getvalue()
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    return [r["criterion"]["ce"] for r in records if r["event"] == "minibatch"], stderr.getvalue()


@needs_gxx
def test_sixty_replayed_training_steps_equal_eager_steps(tmp_path, monkeypatch):
    data = tmp_path / "data"
    prepare_synthetic(str(data), seed=3, classes=3, dim=2, samples=640)
    graphs = graph_backend(np.float32, kernels=True)
    replayed, _ = _train(tmp_path / "graphs", data, graphs, monkeypatch)
    eager, notes = _train(tmp_path / "eager", data, graph_backend(np.float32, kernels=True), monkeypatch,
                          "--no-cuda-graph")
    assert len(replayed) == len(eager) == 60
    np.testing.assert_allclose(replayed, eager, rtol=1e-6)
    assert graphs.graphs.captures == 1 and graphs.graphs.launches == 60 - 2
    assert "CUDA graphs are off" in notes


def test_no_cuda_graph_is_the_cudagraph_key(tmp_path):
    cfg = tmp_path / "cfg.net"
    cfg.write_text(CONFIG.format(out=tmp_path, data=tmp_path))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["explain", str(cfg), "train.cudaGraph", "--json"]) == 0
    assert json.loads(out.getvalue())["train.cudaGraph"]["value"] is True
