"""The backend module: the one place that knows NumPy from CuPy.

Random streams continue exactly from a checkpointed state (on the CPU), kernels never test array
types or import CuPy, the trainer reads the criterion from the device only when it reports, and the
Python API takes a device.
"""
from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from cuda_emulation import EmulatedKernels, have_gxx

from netlang.actions import common
from netlang.api import load_text
from netlang.cli import main
from netlang.datasets.synthetic import prepare_synthetic
from netlang.errors import ConfigError
from netlang.ops import registry
from netlang.ops.registry import OpContext, OpDef
from netlang.runtime.backend import DeviceRandom, NumpyBackend, cpu_backend, gpu_available, select_backend
from netlang.runtime.gpu.random import reference_uniform, stream_key

ROOT = Path(__file__).resolve().parent.parent


# ---- random streams ------------------------------------------------------------------------------

def test_the_host_stream_draws_numpys_default_generator():
    stream = cpu_backend().random_stream(7)
    np.testing.assert_array_equal(stream.random((3, 2)), np.random.default_rng(7).random((3, 2)))


def test_a_restored_host_stream_continues_exactly():
    stream = cpu_backend().random_stream([3, 1])
    stream.random(5)
    state = stream.state()
    expected = stream.random((4, 4))
    again = cpu_backend().random_stream(0)
    again.restore(state)
    np.testing.assert_array_equal(again.random((4, 4)), expected)


@pytest.mark.skipif(not have_gxx(), reason="g++ is needed to run CUDA sources on the CPU")
def test_a_device_stream_draws_by_key_and_device_counter_and_resumes_exactly():
    # The CUDA source runs on the CPU (tests/cuda_emulation.py); NumPy arrays stand in for CuPy's.
    kernels = EmulatedKernels()
    stream = DeviceRandom(np, kernels, [5, 2])
    first, second = stream.random(3), stream.random((2, 3))
    key = stream_key([5, 2])
    np.testing.assert_array_equal(first, reference_uniform(key, 0, 3))
    np.testing.assert_array_equal(second.reshape(-1), reference_uniform(key, 1, 6))
    state = stream.state()
    assert state == {"generator": "counter", "key": key, "counter": 2}
    expected = stream.random((4, 4))
    resumed = DeviceRandom(np, kernels, 0)
    resumed.restore(state)
    np.testing.assert_array_equal(resumed.random((4, 4)), expected)          # the same numbers, resumed
    host = cpu_backend().random_stream(0)
    host.restore(state)                                                       # a GPU checkpoint on a CPU
    assert host.random(2).shape == (2,)


@pytest.mark.skipif(not have_gxx(), reason="g++ is needed to run CUDA sources on the CPU")
def test_device_draws_are_uniform_and_normal_in_distribution():
    stream = DeviceRandom(np, EmulatedKernels(), 11)
    u = stream.random(200_000)
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 19_000          # no empty or thin decile
    z = stream.standard_normal(200_000, np.float32)
    assert z.dtype == np.float32
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(np.mean(np.abs(z) < 1.0) - 0.6827) < 0.005


def test_scatter_add_adds_repeated_indices(backend):
    dest = backend.from_host(np.zeros(4))
    backend.scatter_add(dest, backend.from_host(np.array([1, 1, 3])), backend.from_host(np.array([1.0, 2.0, 5.0])))
    assert backend.to_host(dest).tolist() == [0.0, 3.0, 0.0, 5.0]


def test_a_backend_runs_its_own_kernel_of_an_op_and_the_default_otherwise():
    op = OpDef(name="TestTwice", arity=(1, 1), shape=lambda shapes, attrs: tuple(shapes[0]),
               forward=lambda ctx, xs, attrs: xs[0] * 2, backward=lambda ctx, xs, y, gy, attrs: [gy * 2],
               kernels={"other": (lambda ctx, xs, attrs: xs[0] * 3, None)})
    ctx = OpContext(backend=cpu_backend(), dyn=[1], out_dyn=1)
    assert registry.apply_forward(op, ctx, [np.ones(2)], {}, 1).tolist() == [2.0, 2.0]
    assert op.implementation("other")[0](ctx, [np.ones(2)], {}).tolist() == [3.0, 3.0]
    op.kernels["numpy"] = op.kernels.pop("other")
    assert registry.apply_forward(op, ctx, [np.ones(2)], {}, 1).tolist() == [3.0, 3.0]
    assert registry.apply_backward(op, ctx, [np.ones(2)], None, np.ones(2), {}, 1) == [None]   # its kernel has none


# ---- choosing a device -----------------------------------------------------------------------------

@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
def test_auto_falls_back_to_the_cpu_and_a_gpu_index_is_an_error_without_one():
    assert isinstance(select_backend("auto"), NumpyBackend)
    with pytest.raises(ConfigError, match="asks for a GPU"):
        select_backend(0)


def test_the_api_takes_a_device():
    runner = load_text("x = Input {2}\ny = x .* 2", device="cpu")
    assert runner.backend.name == "numpy"
    assert runner.forward({"x": np.ones((3, 2))}, ["y"])["y"].tolist() == [[2.0, 2.0]] * 3
    if not gpu_available():
        with pytest.raises(ConfigError, match="asks for a GPU"):
            load_text("x = Input {2}\ny = x .* 2", device=0)


# ---- where the backend is used -----------------------------------------------------------------------

def test_kernels_never_test_array_types_or_import_cupy():
    offending = []
    patterns = [r"import cupy", r"cupyx", r"xp is (not )?np", r"__name__\s*==", r"isinstance\([^)]*ndarray"]
    for path in sorted((ROOT / "netlang" / "ops").glob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(re.search(p, line) for p in patterns):
                offending.append(f"{path.name}:{number}: {line.strip()}")
    assert not offending, "\n".join(offending)


def test_only_the_backend_module_imports_cupy():
    importers = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "netlang").rglob("*.py"))
                 if re.search(r"^\s*import cupy|^\s*from cupy", p.read_text(encoding="utf-8"), re.MULTILINE)]
    assert importers == ["netlang/runtime/backend.py"]


# ---- the trainer reads numbers from the device only when it reports ---------------------------------

CONFIG = """
command = train
modelPath = "{out}/model.dnn"
deviceId = "cpu"
train = {{
    action = "train"
    network = {{
        features = Input {{2}} ; labels = Input {{3}}
        z = DenseLayer {{3}} (DenseLayer {{8, activation=Tanh}} (features))
        ce = CrossEntropyWithSoftmax (labels, z) ; errs = ClassificationError (labels, z)
        criterionNodes = (ce) ; evaluationNodes = (errs)
    }}
    SGD = {{ maxEpochs = 2 ; minibatchSize = 32 ; learningRatesPerSample = {lr} ; numMBsToShowResult = 20 }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/Train_cntk_text.txt"
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
"""


class CountingBackend(NumpyBackend):
    """Counts the scalars read back from the device (criterion and metric sums)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.scalar_reads = 0

    def to_host(self, array):
        if np.ndim(array) == 0:
            self.scalar_reads += 1
        return super().to_host(array)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(str(path), seed=3, classes=3, dim=2, samples=640)
    return str(path)


def train(tmp_path, data_dir, monkeypatch, lr=0.01):
    backend = CountingBackend(np.float32, "cpu")
    monkeypatch.setattr(common, "select_backend", lambda device, precision: backend)
    cfg = tmp_path / "cfg.net"
    cfg.write_text(CONFIG.format(out=tmp_path / "out", data=data_dir, lr=lr))
    stderr = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(stderr):
        code = main(["train", str(cfg)])
    return code, stderr.getvalue(), backend


def test_the_criterion_is_read_only_at_reports_and_epoch_ends(tmp_path, data_dir, monkeypatch):
    code, err, backend = train(tmp_path, data_dir, monkeypatch)
    assert code == 0, err
    # 20 minibatches per epoch, one report each (at minibatch 20) and the epoch's end: 2 reads of the
    # criterion and the metric per epoch, where reading every step would be 2 × 20.
    assert backend.scalar_reads == 2 * 2 * 2


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_criterion_stops_training_naming_it(tmp_path, data_dir, monkeypatch):
    code, err, _ = train(tmp_path, data_dir, monkeypatch, lr=1e38)
    assert code != 0
    assert re.search(r"the criterion 'ce' became (nan|inf) in epoch 1", err), err
    assert "cfg.net:" in err                      # where the criterion is defined
