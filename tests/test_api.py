"""The Python API: trained models, train and evaluate from Python, ops written in Python."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import netlang
from netlang import cli
from netlang.api import load_text
from netlang.compiler.graph.user_ops import import_op_modules
from netlang.errors import ConfigError, NetworkError
from netlang.ir import modelfile
from netlang.ops import registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
HELLO = str(EXAMPLES / "hello.net")


@pytest.fixture
def trained_hello(tmp_path):
    """hello.net trained for its 3 epochs into a temporary directory: (overrides, model path)."""
    model = tmp_path / "hello.dnn"
    overrides = [f"modelPath={model}"]
    results = netlang.train(HELLO, overrides)
    return overrides, model, results


@pytest.fixture
def user_ops():
    """Registers what examples/user_ops.py registers, for one test only."""
    before = {op.name for op in registry.all_ops()}
    yield str(EXAMPLES / "user_ops.py")
    for op in registry.all_ops():
        if op.name not in before:
            registry.unregister(op.name)
    for name in [m for m in sys.modules if m.startswith("netlang_user_ops.")]:
        del sys.modules[name]


# ---- train and evaluate from Python -----------------------------------------------------------------

def test_train_returns_the_figures_of_each_epoch(trained_hello):
    _, model, results = trained_hello
    epochs = results["train"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(e["samples"] == 64 for e in epochs)
    assert set(epochs[0]["metrics"]) == {"errs"} and epochs[0]["criterion_name"] == "ce"
    assert epochs[0]["learning_rate"] == pytest.approx(0.01) and epochs[2]["learning_rate"] == pytest.approx(0.005)
    assert model.exists()


def test_evaluate_returns_what_eval_json_prints(trained_hello, capsys):
    overrides, _, _ = trained_hello
    metrics = netlang.evaluate(HELLO, overrides)
    assert cli.main(["eval", HELLO, "--json", *overrides]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert metrics["test"]["metrics"] == pytest.approx(printed["metrics"])
    assert metrics["test"]["samples"] == printed["samples"] == 32


# ---- trained models ---------------------------------------------------------------------------------

def test_load_model_predicts_with_the_trained_parameters(trained_hello):
    _, model_path, _ = trained_hello
    model = netlang.load_model(str(model_path), device="auto")
    saved = modelfile.load_model(str(model_path)).parameters
    assert set(model.parameters) == set(saved)
    for name, value in saved.items():
        np.testing.assert_array_equal(model.parameters[name], value)
    x = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float32)
    z = model.predict({"features": x})["z"]
    weight = next(v for k, v in saved.items() if k.endswith(".W"))
    bias = next(v for k, v in saved.items() if k.endswith(".b"))
    np.testing.assert_allclose(z, x @ weight + bias, rtol=1e-6)


def test_a_model_lists_its_nodes(trained_hello):
    _, model_path, _ = trained_hello
    model = netlang.load_model(str(model_path))
    names = [n.name for n in model.nodes]
    assert {"features", "labels", "z", "ce", "errs"} <= set(names)
    assert names.index("features") < names.index("z") < names.index("ce")


def test_a_config_gives_fresh_and_trained_networks(trained_hello):
    overrides, model_path, _ = trained_hello
    config = netlang.load(HELLO, overrides)
    fresh = config.network("train", device="cpu")
    trained = config.trained("test")
    assert trained.path == str(model_path)
    x = np.ones((1, 2))
    assert not np.allclose(fresh.forward({"features": x})["z"], trained.predict({"features": x})["z"])


# ---- ops written in Python --------------------------------------------------------------------------

def test_a_config_trains_a_network_with_ops_written_in_python(user_ops, tmp_path):
    results = netlang.train(str(EXAMPLES / "user_op.net"), [f"modelPath={tmp_path / 'm.dnn'}"])
    assert len(results["train"]) == 2
    model = netlang.load_model(str(tmp_path / "m.dnn"), op_modules=[user_ops])
    out = model.predict({"features": np.array([[1.0, -1.0]], dtype=np.float32)})
    assert set(np.unique(out["active"])) <= {0.0, 1.0}


def test_a_python_op_has_its_gradient(user_ops):
    import_op_modules([user_ops])
    net = load_text("""
        x = Input {3}
        W = ParameterTensor {(3:3), init='uniform', initValueScale=1}
        y = new ComputationNode [ operation = "Swish" ; inputs = (W * x) ]
        loss = ReduceSum (y .* y) ; criterionNodes = (loss) ; outputNodes = (y)
    """)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3))
    grad = net.gradients({"x": x})["W"]
    w = net.parameters["W"]
    numeric = np.zeros_like(w)
    for index in np.ndindex(w.shape):
        saved = w[index]
        values = []
        for step in (1e-6, -1e-6):
            w[index] = saved + step
            values.append(float(net.forward({"x": x}, ["loss"])["loss"].sum()))
        w[index] = saved
        numeric[index] = (values[0] - values[1]) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_a_python_op_without_gradient_stops_it(user_ops):
    import_op_modules([user_ops])
    net = load_text("""
        x = Input {3}
        W = ParameterTensor {(3:3), init='uniform', initValueScale=1}
        y = new ComputationNode [ operation = "HardStep" ; inputs = (W * x) ; threshold = 0.1 ]
        loss = ReduceSum (y) ; criterionNodes = (loss) ; outputNodes = (y)
    """)
    x = np.ones((2, 3))
    assert not net.gradients({"x": x})["W"].any()
    y = net.forward({"x": x})["y"]
    product = x @ net.parameters["W"]
    np.testing.assert_array_equal(y, (product > 0.1).astype(y.dtype))


def test_a_model_with_an_unknown_op_names_it(user_ops, tmp_path):
    netlang.train(str(EXAMPLES / "user_op.net"), [f"modelPath={tmp_path / 'm.dnn'}"])
    for op in ("Swish", "HardStep"):
        registry.unregister(op)
    with pytest.raises(NetworkError, match="Swish") as raised:
        netlang.load_model(str(tmp_path / "m.dnn"))
    assert "op_modules" in raised.value.hint


def test_a_missing_op_module_is_a_config_error(tmp_path):
    config = tmp_path / "c.net"
    shutil.copy(HELLO, config)
    with pytest.raises(ConfigError, match="opModules: no file"):
        netlang.load(str(config), ['opModules="nowhere/ops.py"'])
