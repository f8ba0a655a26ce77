"""Parallel training end to end: `mpiexec -n 2 netlang train` on small generated data.

The MPI tests launch real jobs of two workers (about two seconds each) and compare what they
write with single-process runs of the same config; tests/mpi_scripts/train_with_failure.py makes
one worker crash, raise or be interrupted at a chosen minibatch. The tests without MPI check how
the `SGD.ParallelTrain` block is read and that a job of one process trains exactly as before.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from launcher_output import reports_a_killed_rank
from training_runs import cli

from netlang.compiler.graph import load_config
from netlang.compiler.lang import settings as typed_settings
from netlang.datasets.synthetic import prepare_synthetic
from netlang.errors import SchemaError
from netlang.ir.modelfile import load_model
from netlang.runtime.distributed.quantization import column_dims, packed_size
from netlang.runtime.flatbuffer import FlatParameters
from netlang.runtime.parallel import WireLayout, check_supported

SCRIPTS = Path(__file__).parent / "mpi_scripts"
MPIEXEC = shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(MPIEXEC is None or find_spec("mpi4py") is None,
                               reason="mpiexec or mpi4py is not installed")
# parallelTrain = true asks for mpi4py even without mpiexec (and says how to install it without it)
needs_mpi4py = pytest.mark.skipif(find_spec("mpi4py") is None, reason="mpi4py is not installed")

CONFIG = """
command = train
modelPath = "{out}/model.dnn"
deviceId = "cpu"
precision = "double"
parallelTrain = {parallel}
train = {{
    action = "train"
    network = {{
        features = Input {{2}} ; labels = Input {{3}}
        h = DenseLayer {{16, activation=Tanh}} (features)
        z = DenseLayer {{3}} (h)
        ce = CrossEntropyWithSoftmax (labels, z) ; errs = ClassificationError (labels, z)
        criterionNodes = (ce) ; evaluationNodes = (errs) ; outputNodes = (z)
    }}
    SGD = {{
        maxEpochs = {epochs} ; minibatchSize = 32 ; learningRatesPerSample = 0.02
        momentumAsTimeConstant = 100 ; numMBsToShowResult = 10
        ParallelTrain = {{
            parallelizationMethod = "{method}"
            parallelizationStartEpoch = {start}
            DataParallelSGD = {{ gradientBits = {bits} ; quantizeAlongLongerAxis = {longer} }}
            BlockMomentumSGD = {{ blockSize = 256 }}
            ModelAveragingSGD = {{ blockSize = 256 }}
        }}
    }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/Train_cntk_text.txt"
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
"""

# Run-time shapes of the parameters: h.W (16:2) is [2, 16], h.b [16], z.W (3:16) is [16, 3], z.b [3].
PARAMETER_SHAPES = [(2, 16), (16,), (16, 3), (3,)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(str(path), seed=3, classes=3, dim=2, samples=1500)
    return str(path)


def write_config(directory, data_dir, name, *, method="DataParallelSGD", bits=64, start=1, epochs=2,
                 parallel="true", longer="false"):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    cfg = directory / f"{name}.net"
    cfg.write_text(CONFIG.format(out=out, data=data_dir, method=method, bits=bits, start=start,
                                 epochs=epochs, parallel=parallel, longer=longer))
    return str(cfg), str(out)



def mpi_train(cfg, *extra, failure=None, timeout=120):
    """`mpiexec -n 2 netlang train cfg` (optionally with a failing worker); (process, seconds)."""
    if failure is None:
        command = [sys.executable, "-m", "netlang"]
    else:
        command = [sys.executable, str(SCRIPTS / "train_with_failure.py"), *map(str, failure), "--"]
    start = time.monotonic()
    proc = subprocess.run([MPIEXEC, "-n", "2", *command, "train", cfg, "--no-progress", *extra],
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - start


def parameters(out, name="model.dnn"):
    return load_model(os.path.join(out, name)).parameters


def epoch_records(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [r for r in map(json.loads, fh) if r["event"] == "epoch"]


def assert_same_parameters(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


class Runs:
    """Each configuration trained once per module, single-process or with two MPI workers."""

    def __init__(self, root, data_dir):
        self.root, self.data_dir, self.done = Path(root), data_dir, {}

    def single(self, **options):
        return self._run("single", options)

    def mpi(self, **options):
        return self._run("mpi", options)

    def _run(self, how, options):
        key = (how, tuple(sorted(options.items())))
        if key not in self.done:
            name = f"{how}_{len(self.done)}"
            cfg, out = write_config(self.root, self.data_dir, name, **options)
            if how == "single":
                code, _, err = cli("train", cfg, "--no-progress")
                assert code == 0, err
                self.done[key] = (cfg, out, err)
            else:
                proc, _ = mpi_train(cfg)
                assert proc.returncode == 0, proc.stderr
                self.done[key] = (cfg, out, proc.stderr)
        return self.done[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    return Runs(tmp_path_factory.mktemp("runs"), data_dir)


# ---- reading the ParallelTrain block --------------------------------------------------------------


def parallel_settings(config, view):
    """What the train action reads from SGD.ParallelTrain, refused where the parallel code cannot run it."""
    settings = typed_settings.parallel_settings(config.top, view.SGD)
    check_supported(settings)
    return settings


def settings_of(tmp_path, data_dir, **options):
    cfg, _ = write_config(tmp_path, data_dir, "cfg", **options)
    config = load_config(cfg)
    name, view = config.actions()[0]
    return parallel_settings(config, view)


def test_parallel_settings_come_from_the_sgd_parallel_train_block(tmp_path, data_dir):
    settings = settings_of(tmp_path, data_dir, bits="32*2:1", start=2)
    assert settings.method == "DataParallelSGD" and settings.start_epoch == 2
    assert [settings.bits(e) for e in (1, 2, 3, 4)] == [32, 32, 1, 1]
    assert settings.zero_threshold is True


def test_no_parallel_settings_without_top_level_parallel_train(tmp_path, data_dir):
    assert settings_of(tmp_path, data_dir, parallel="false") is None


def test_block_methods_read_their_block_size(tmp_path, data_dir):
    settings = settings_of(tmp_path, data_dir, method="BlockMomentumSGD")
    assert settings.block_size == 256 and settings.block_size_per_worker is None
    assert settings.use_nesterov and settings.reset_sgd_momentum and settings.block_learning_rate == 1.0


def test_legacy_sync_period_is_a_block_size_per_worker(tmp_path, data_dir):
    cfg, _ = write_config(tmp_path, data_dir, "cfg", method="ModelAveragingSGD")
    text = open(cfg).read().replace("ModelAveragingSGD = { blockSize = 256 }",
                                    "ModelAveragingSGD = { syncPeriod = 100 }")
    open(cfg, "w").write(text)
    config = load_config(cfg)
    settings = parallel_settings(config, config.actions()[0][1])
    assert settings.block_size is None and settings.block_size_per_worker == 100


def test_unsupported_gradient_bits_is_a_config_error_at_its_line(tmp_path, data_dir):
    with pytest.raises(SchemaError, match="gradientBits = 3 is not supported") as err:
        settings_of(tmp_path, data_dir, bits=3)
    lines = open(tmp_path / "cfg.net").read().splitlines()
    assert "gradientBits = 3" in lines[err.value.span.line - 1]


def test_asynchronous_sgd_under_mpiexec_is_a_config_error(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    cfg, _ = write_config(tmp_path, data_dir, "cfg", method="DataParallelASGD")
    code, _, err = cli("train", cfg)
    assert code == 78 and "DataParallelASGD" in err and "is not supported" in err and "cfg.net:" in err


# ---- the wire layout of quantised gradients -----------------------------------------------------

MNIST_MLP = [("W1", (1, 28, 28, 200)), ("b1", (200,)), ("W2", (200, 10)), ("b2", (10,))]


def test_default_wire_layout_is_cntks_columns():
    flat = FlatParameters(MNIST_MLP, dtype="float64")
    wire = WireLayout(flat, longer_axis=False)
    assert wire.segments == [(flat.offset(n), s) for n, s in MNIST_MLP]
    grad = np.arange(flat.size, dtype=np.float64)
    assert wire.pack(grad) is grad


def test_longer_axis_layout_transposes_matrices_with_short_columns():
    flat = FlatParameters(MNIST_MLP, dtype="float64")
    wire = WireLayout(flat, longer_axis=True)
    # W1: 784 CNTK columns of 200 -> 200 columns of 784; W2: 200 of 10 -> 10 of 200; biases stay
    assert [column_dims(shape) for _, shape in wire.segments] == [(784, 200), (200, 1), (200, 10), (10, 1)]
    grad = np.random.default_rng(0).standard_normal(flat.size)
    packed = wire.pack(grad).copy()
    w1 = flat.view_of(grad, "W1").reshape(784, 200)
    np.testing.assert_array_equal(packed[flat.segment("W1")], w1.T.ravel())
    np.testing.assert_array_equal(packed[flat.segment("b1")], grad[flat.segment("b1")])
    out = np.zeros_like(grad)
    wire.unpack(packed, out)
    np.testing.assert_array_equal(out, grad)


def test_longer_axis_sends_fewer_bytes_for_the_mnist_mlp():
    def wire_bytes(longer_axis):
        flat = FlatParameters(MNIST_MLP, dtype="float32")
        return sum(packed_size(*column_dims(shape), 1, np.float32)
                   for _, shape in WireLayout(flat, longer_axis).segments)
    full = 159010 * 4
    assert full / wire_bytes(False) < 25 < full / wire_bytes(True)


# ---- one process: nothing changes --------------------------------------------------------------------

@needs_mpi4py
def test_parallel_train_without_mpiexec_trains_exactly_like_one_process(runs):
    _, parallel_out, _ = runs.single()
    _, plain_out, _ = runs.single(parallel="false")
    assert_same_parameters(parameters(parallel_out), parameters(plain_out))


def test_mpi_launch_without_parallel_train_is_a_config_error(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    cfg, out = write_config(tmp_path, data_dir, "cfg", parallel="false")
    code, _, err = cli("train", cfg)
    assert code == 78 and "parallelTrain is not true" in err and "parallelTrain = true" in err
    assert not os.path.exists(out)


def test_parallel_train_without_mpi4py_says_how_to_install_it(tmp_path, data_dir, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mpi4py" else real_find_spec(name, *a))
    cfg, _ = write_config(tmp_path, data_dir, "cfg")
    code, _, err = cli("train", cfg)
    assert code == 78 and "needs mpi4py" in err and "pip install" in err and "cfg.net:6:" in err


# ---- two workers -------------------------------------------------------------------------------------


@needs_mpi
@pytest.mark.mpi
def test_full_precision_data_parallel_equals_the_single_process_run(runs):
    _, single_out, _ = runs.single()
    _, mpi_out, _ = runs.mpi()
    one, two = parameters(single_out), parameters(mpi_out)
    for name in one:   # ~90 updates; only the order of the gradient sums differs
        scale = np.max(np.abs(one[name]))
        np.testing.assert_allclose(two[name], one[name], rtol=1e-9, atol=1e-9 * scale, err_msg=name)


@needs_mpi
@pytest.mark.mpi
def test_rank_0_alone_reports_global_totals_and_writes_the_log(runs):
    _, mpi_out, stderr = runs.mpi()
    assert len(re.findall(r"Finished Epoch\[ 1 of 2\]", stderr)) == 1
    assert "ce = " in stderr and "* 1500;" in stderr          # the samples of both workers
    assert "with 2 workers, DataParallelSGD (full precision)" in stderr
    records = epoch_records(mpi_out)
    assert [r["epoch"] for r in records] == [1, 2] and all(r["samples"] == 1500 for r in records)
    assert records[0]["parallel"]["workers"] == 2


@needs_mpi
@pytest.mark.mpi
def test_one_bit_sends_the_packed_gradient_per_step(runs):
    _, out, _ = runs.mpi(bits=1)
    # With two workers each sends the other's quantised stripe and its own re-quantised stripe:
    # every column once (two float64 levels + the packed bits), plus the 8-byte sample count.
    packed = sum(packed_size(*column_dims(shape), 1, np.float64) for shape in PARAMETER_SHAPES)
    for record in epoch_records(out):
        assert record["parallel"]["gradientBits"] == 1
        assert record["parallel"]["bytesSentPerStep"] == packed + 8


@needs_mpi
@pytest.mark.mpi
def test_one_bit_along_the_longer_axis_sends_the_transposed_packed_size(runs):
    _, out, _ = runs.mpi(bits=1, longer="true")
    # z.W [16, 3] has 16 columns of 3 values; along its longer axis it is 3 columns of 16
    shapes = [(2, 16), (16,), (3, 16), (3,)]
    packed = sum(packed_size(*column_dims(shape), 1, np.float64) for shape in shapes)
    assert epoch_records(out)[-1]["parallel"]["bytesSentPerStep"] == packed + 8


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("options", [{"bits": 1}, {"method": "BlockMomentumSGD"},
                                     {"method": "ModelAveragingSGD"}], ids=["1-bit", "BMUF", "MA"])
def test_parallel_methods_converge_like_one_process(runs, options):
    _, single_out, _ = runs.single(epochs=3)
    _, out, _ = runs.mpi(epochs=3, **options)
    single, parallel = epoch_records(single_out), epoch_records(out)
    assert parallel[-1]["criterion"] < parallel[0]["criterion"]
    assert parallel[-1]["metrics"]["errs"] < single[-1]["metrics"]["errs"] + 0.03   # chance: 0.67


@needs_mpi
@pytest.mark.mpi
def test_warm_start_epochs_run_as_one_process_then_in_parallel(runs):
    _, single_out, _ = runs.single()
    _, out, _ = runs.mpi(start=2)
    assert_same_parameters(parameters(out, "model.dnn.1"), parameters(single_out, "model.dnn.1"))
    first, second = epoch_records(out)
    assert first["parallel"]["bytesSentPerStep"] == 0 and second["parallel"]["bytesSentPerStep"] > 0


@needs_mpi
@pytest.mark.mpi
def test_checkpoint_holds_each_workers_residuals(runs):
    _, out, _ = runs.mpi(bits=1)
    state = load_model(os.path.join(out, "model.dnn.2.ckp")).state
    for rank in (0, 1):
        assert state[f"rank{rank}/residual"].shape == state["learner/smoothed_gradient"].shape
        assert np.any(state[f"rank{rank}/residual"])
    assert not np.array_equal(state["rank0/residual"], state["rank1/residual"])


def collectives_per_step(tmp_path, data_dir, name, **options):
    cfg, _ = write_config(tmp_path, data_dir, name, **options)
    prefix = tmp_path / f"{name}_counts"
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(SCRIPTS / "count_collectives.py"), str(prefix),
                           "--", "train", cfg, "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    counts = [json.loads((tmp_path / f"{name}_counts.rank{r}.json").read_text()) for r in (0, 1)]
    assert counts[0] == counts[1]
    return counts[0]["collectives"] / counts[0]["steps"]


@needs_mpi
@pytest.mark.mpi
def test_block_methods_start_fewer_collectives_than_minibatches(tmp_path, data_dir):
    # 2 x 47 steps; per epoch 6 syncs (2 collectives each), 6 stop votes, 5 readings of the totals,
    # a checkpoint (3) — nothing every minibatch
    assert collectives_per_step(tmp_path, data_dir, "bmuf", method="BlockMomentumSGD") < 0.7


@needs_mpi
@pytest.mark.mpi
def test_data_parallel_starts_only_its_gradient_exchange_every_minibatch(tmp_path, data_dir):
    # per step: the gradient (one bucket for this small network) with the sample count
    assert collectives_per_step(tmp_path, data_dir, "dp") < 2.4


@needs_mpi
@pytest.mark.mpi
def test_block_momentum_epoch_model_is_the_filtered_model_not_the_look_ahead(runs):
    _, out, _ = runs.mpi(method="BlockMomentumSGD", epochs=3)
    checkpoint = load_model(os.path.join(out, "model.dnn.3.ckp"))
    model = parameters(out, "model.dnn.3")
    saved = np.concatenate([model[name].ravel() for name in model])   # network order = buffer order
    np.testing.assert_array_equal(saved, checkpoint.state["parallel/model"])
    assert not np.array_equal(saved, checkpoint.state["parallel/global_model"])   # W_g = W + eta D


@needs_mpi
@pytest.mark.mpi
def test_killed_worker_ends_the_job_and_the_rerun_resumes_exactly(runs, tmp_path, data_dir):
    _, reference, _ = runs.mpi(bits=1, epochs=3)
    cfg, out = write_config(tmp_path, data_dir, "killed", bits=1, epochs=3)
    proc, seconds = mpi_train(cfg, failure=("kill", 1, 2, 10), timeout=60)
    assert proc.returncode != 0 and seconds < 30
    assert reports_a_killed_rank(proc.stdout + proc.stderr, 1)
    assert not os.path.exists(os.path.join(out, "model.dnn"))

    proc, _ = mpi_train(cfg)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from epoch 2" in proc.stderr
    assert_same_parameters(parameters(out), parameters(reference))


@needs_mpi
@pytest.mark.mpi
def test_worker_that_raises_ends_the_job_naming_it(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, "raised")
    proc, seconds = mpi_train(cfg, failure=("raise", 1, 1, 5), timeout=60)
    assert proc.returncode != 0 and seconds < 30
    assert "rank 1 of 2 failed: RuntimeError: simulated failure" in proc.stderr
    assert not glob.glob(os.path.join(out, "model.dnn*"))


@needs_mpi
@pytest.mark.mpi
def test_interrupting_one_worker_stops_all_at_a_checkpoint_that_resumes_exactly(runs, tmp_path, data_dir):
    # BMUF between syncs: the workers' models, learners and counters differ and must all come back
    _, reference, _ = runs.mpi(method="BlockMomentumSGD", epochs=3)
    cfg, out = write_config(tmp_path, data_dir, "interrupted", method="BlockMomentumSGD", epochs=3)
    proc, _ = mpi_train(cfg, failure=("interrupt", 1, 2, 7))
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.count("checkpoint written") == 1 and "Traceback" not in proc.stderr
    assert os.path.exists(os.path.join(out, "model.dnn.ckp"))

    proc, _ = mpi_train(cfg)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from epoch 2 (model.dnn.ckp)" in proc.stderr
    assert_same_parameters(parameters(out), parameters(reference))


# ---- real data (slow: four MNIST trainings, 3-10 minutes on two cores) ---------------------------------

REPOSITORY = Path(__file__).resolve().parent.parent
MNIST_CONFIG = REPOSITORY / "configs" / "vision" / "mnist_mlp_parallel.net"
MNIST_DATA = REPOSITORY / "data" / "mnist" / "Train-28x28_cntk_text.txt"


@pytest.mark.slow
@needs_mpi
@pytest.mark.mpi
@pytest.mark.skipif(not MNIST_DATA.exists(), reason="MNIST is not prepared in data/mnist")
def test_mnist_one_bit_and_block_momentum_test_errors_are_within_0_3_percent(tmp_path):
    def trained_test_error(name, *overrides, workers=2):
        out = tmp_path / name
        launcher = [MPIEXEC, "-n", str(workers)] if workers > 1 else []
        paths = [f"RootDir={REPOSITORY}", f"OutputDir={out}"]
        train = launcher + [sys.executable, "-m", "netlang", "train", str(MNIST_CONFIG), *paths, *overrides, "-q"]
        proc = subprocess.run(train, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        code, stdout, err = cli("eval", str(MNIST_CONFIG), *paths, "--json")
        assert code == 0, err
        return json.loads(stdout)["metrics"]["errs"], epoch_records(str(out))[-1].get("parallel")

    full, full_wire = trained_test_error("dp32")
    one_bit, one_bit_wire = trained_test_error("dp1", "GradientBits=1")
    single, _ = trained_test_error("single", "parallelTrain=false", workers=1)
    bmuf, _ = trained_test_error("bmuf", 'Method="BlockMomentumSGD"')
    assert abs(one_bit - full) <= 0.003
    assert abs(bmuf - single) <= 0.003
    assert one_bit_wire["bytesSentPerStep"] < full_wire["bytesSentPerStep"] / 20

