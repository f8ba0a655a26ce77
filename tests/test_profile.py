"""Where a training step's time goes (`netlang train --profile`), and the executor's hooks that a
data-parallel trainer uses to exchange gradients while backward goes on."""
from __future__ import annotations

import io
import json
import os
import time
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

from netlang.cli import main
from netlang.compiler.graph import evaluate_text, network
from netlang.compiler.lang.nodes import BuildContext
from netlang.datasets.synthetic import prepare_synthetic
from netlang.runtime.backend import select_backend
from netlang.runtime.executor import Executor, RunHooks
from netlang.runtime.profile import PHASES, StepProfile, format_profile

# ---- the step profile ----------------------------------------------------------------------------


def test_nested_phases_charge_their_time_to_the_innermost_one():
    profile = StepProfile()
    with profile.phase("forward"):
        time.sleep(0.02)
        with profile.phase("wait"):
            time.sleep(0.03)
        profile.switch("backward")
        time.sleep(0.01)
    profile.step_done()
    seconds = profile.seconds_per_step()
    assert 0.02 <= seconds["forward"] < 0.03 + 0.02
    assert 0.03 <= seconds["wait"] < 0.03 + 0.02
    assert 0.01 <= seconds["backward"] < 0.01 + 0.02
    assert set(seconds) == set(PHASES)


def test_time_no_phase_claims_is_other_and_figures_are_per_step():
    profile = StepProfile()
    time.sleep(0.02)
    with profile.phase("read"):
        time.sleep(0.02)
    profile.step_done()
    profile.step_done()
    seconds = profile.seconds_per_step()
    assert 0.005 <= seconds["other"] and 0.01 <= seconds["read"] < 0.02
    profile.reset()
    assert profile.steps == 0 and not any(profile.seconds.values())


def test_a_disabled_profile_records_nothing():
    profile = StepProfile(enabled=False)
    with profile.phase("read"):
        profile.switch("backward")
    assert not any(profile.seconds.values())


def test_the_table_has_a_row_per_rank_and_a_total():
    text = format_profile(2, [dict.fromkeys(PHASES, 0.001), dict.fromkeys(PHASES, 0.002)])
    head, first, second = text.splitlines()
    assert head.startswith("profile of epoch 2, ms per step:") and head.split()[-9:] == [*PHASES, "total"]
    assert first.split()[:2] == ["rank", "0"] and first.split()[-1] == "8.000"
    assert second.split()[-1] == "16.000"


# ---- the executor says when a gradient is final -------------------------------------------------------


class Recorder(RunHooks):
    def __init__(self, grads):
        self.grads, self.events = grads, []

    def backward_begins(self):
        self.events.append("backward")

    def gradient_ready(self, name):
        self.events.append((name, self.grads[name].copy()))


def mlp():
    text = """net = {
        features = Input {3} ; labels = Input {2}
        W1 = ParameterTensor {(4:3)} ; b1 = ParameterTensor {4}
        W2 = ParameterTensor {(2:4)} ; b2 = ParameterTensor {2}
        h = Tanh (W1 * features + b1)
        z = W2 * h + b2
        ce = CrossEntropyWithSoftmax (labels, z)
    }"""
    return network.build_network(evaluate_text(text).get("net"), BuildContext("", None))


def test_every_gradient_is_announced_once_when_final_last_layer_first():
    net = mlp()
    ex = Executor(net, select_backend("cpu", "double"))
    params = net.parameters
    grads = {p.name: np.zeros(ex.parameters[p.name].shape) for p in params}
    hooks = Recorder(grads)
    rng = np.random.default_rng(0)
    feeds = {"features": rng.standard_normal((5, 3)), "labels": np.eye(2)[[0, 1, 1, 0, 1]]}
    _, final = ex.run(feeds, [], loss=net.node("ce"), wrt=params, grads=grads, training=True, hooks=hooks)
    assert hooks.events[0] == "backward"
    announced = [name for name, _ in hooks.events[1:]]
    assert sorted(announced) == sorted(p.name for p in params)
    assert announced.index("b2") < announced.index("W1") and announced.index("W2") < announced.index("b1")
    for name, value in hooks.events[1:]:   # what was there when announced is the final gradient
        np.testing.assert_array_equal(value, final[name])


# ---- netlang train --profile -------------------------------------------------------------------------

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
    SGD = {{ maxEpochs = 2 ; minibatchSize = 32 ; learningRatesPerSample = 0.01 }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/Train_cntk_text.txt"
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(str(path), seed=3, classes=3, dim=2, samples=600)
    return str(path)


def test_train_profile_prints_and_logs_every_epochs_step_breakdown(tmp_path, data_dir):
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.net"
    cfg.write_text(CONFIG.format(out=out, data=data_dir))
    stderr = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(stderr):
        assert main(["train", str(cfg), "--profile", "--no-progress"]) == 0
    assert stderr.getvalue().count("profile of epoch") == 2 and "rank 0" in stderr.getvalue()
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        records = [r for r in map(json.loads, fh) if r["event"] == "profile"]
    assert [r["epoch"] for r in records] == [1, 2] and records[0]["steps"] == 19   # 600 samples / 32
    (rank0,) = records[0]["secondsPerStep"]
    assert set(rank0) == set(PHASES) and rank0["forward"] > 0 and rank0["backward"] > 0
    assert rank0["quantize"] == rank0["wait"] == 0


def test_train_without_profile_logs_no_profile(tmp_path, data_dir):
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.net"
    cfg.write_text(CONFIG.format(out=out, data=data_dir))
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main(["train", str(cfg), "--no-progress"]) == 0
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        assert not [r for r in map(json.loads, fh) if r["event"] == "profile"]
