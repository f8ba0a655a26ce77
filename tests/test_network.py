"""Networks built from netlang text: parameter counts, forward values, gradients, errors."""
from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

from netlang.api import load_text
from netlang.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def check_json(path, *overrides):
    code, out, err = run_cli("check", path, "--json", "--no-data", *overrides)
    assert code == 0, err
    return json.loads(out)


# ---- parameter counts --------------------------------------------------------------------------

def test_onehidden_mnist_network_has_159010_learnable_parameters():
    doc = check_json(os.path.join(REPO, "configs", "vision", "mnist_onehidden.net"))
    # 784*200 + 200 + 200*10 + 10
    assert doc["actions"]["train"]["parameters"] == 159_010


def test_deeper_mnist_mlp_parameter_count():
    doc = check_json(os.path.join(REPO, "configs", "vision", "mnist_mlp.net"))
    # 784*512 + 512 + 512*256 + 256 + 256*10 + 10
    assert doc["actions"]["train"]["parameters"] == 535_818


def test_synthetic_example_parameter_count():
    doc = check_json(os.path.join(REPO, "examples", "synthetic.net"))
    # 2*16 + 16 + 16*3 + 3
    assert doc["actions"]["train"]["parameters"] == 99


def test_hello_example_network_parameter_count():
    doc = check_json(os.path.join(REPO, "examples", "hello.net"))
    # DenseLayer{2} on 2 features: W 2x2 + b 2
    assert doc["actions"]["train"]["parameters"] == 6


def test_check_lists_every_node_with_shape_in_brainscript_notation():
    doc = check_json(os.path.join(REPO, "configs", "vision", "mnist_onehidden.net"))
    nodes = {n["name"]: n for n in doc["actions"]["train"]["nodes"]}
    assert nodes["features"]["shape"] == "[28 x 28 x 1 x #]"
    assert nodes["ce"]["op"] == "CrossEntropyWithSoftmax" and nodes["ce"]["shape"] == "[1]"
    weights = [n for n in nodes.values() if n["op"] == "LearnableParameter" and n["parameters"] == 156_800]
    assert weights and weights[0]["shape"] == "[200 x 28 x 28 x 1]"


def test_constants_made_from_numbers_are_not_learnable():
    net = load_text("x = Input{3} ; y = x * 2 + 1 ; outputNodes = (y)").network
    assert net.parameter_count() == 0
    assert len(net.parameters) == 2


# ---- forward values and gradients against NumPy ------------------------------------------------

DENSE_SOFTMAX_CE = """
features = Input{4}
labels = Input{3}
h = DenseLayer{5, activation=Tanh}(features)
z = DenseLayer{3}(h)
p = Softmax(z)
ce = CrossEntropyWithSoftmax(labels, z)
errs = ClassificationError(labels, z)
criterionNodes = (ce) ; evaluationNodes = (errs) ; outputNodes = (p)
"""


def test_dense_softmax_crossentropy_forward_equals_numpy():
    runner = load_text(DENSE_SOFTMAX_CE)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4))
    y = np.eye(3)[rng.integers(0, 3, 6)]
    out = runner.forward({"features": x, "labels": y}, ["p", "ce", "errs"])
    weights = [n for n in runner.network.parameters if n.name.endswith("W")]
    biases = [n for n in runner.network.parameters if n.name.endswith("b")]
    by_in = {n.shape[-1]: runner.parameters[n.name] for n in weights}
    b_by = {n.shape[0]: runner.parameters[n.name] for n in biases}
    h = np.tanh(x @ by_in[4] + b_by[5])
    z = h @ by_in[5] + b_by[3]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(out["p"], p, rtol=1e-10)
    np.testing.assert_allclose(out["ce"], [-(y * np.log(p)).sum()], rtol=1e-10)
    assert out["errs"][0] == (p.argmax(1) != y.argmax(1)).sum()


def test_gradients_of_dense_network_match_finite_differences():
    runner = load_text(DENSE_SOFTMAX_CE)
    rng = np.random.default_rng(1)
    feeds = {"features": rng.normal(size=(3, 4)), "labels": np.eye(3)[[0, 2, 1]]}
    grads = runner.gradients(feeds)
    for name, g in grads.items():
        param = runner.parameters[name]
        index = tuple(rng.integers(0, d) for d in param.shape)
        old = param[index]
        param[index] = old + 1e-6
        up = runner.forward(feeds, ["ce"])["ce"][0]
        param[index] = old - 1e-6
        down = runner.forward(feeds, ["ce"])["ce"][0]
        param[index] = old
        assert g[index] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-8), name


def test_plan_releases_intermediate_values_after_last_use():
    runner = load_text(DENSE_SOFTMAX_CE)
    net = runner.network
    plan = runner.executor.plan([net.node("p")])
    released = {nid for step in plan.steps for nid in step.release}
    tanh = next(n for n in net.nodes if n.op == "Tanh")
    assert tanh.id in released


# ---- layer library -----------------------------------------------------------------------------

def test_linear_layer_with_tensor_output_and_input_rank():
    net = load_text("x = Input{3:4} ; z = LinearLayer{(2:5), inputRank=1}(x) ; outputNodes = (z)").network
    z = net.node("z")
    assert z.shape == (2, 5, 4)           # inputRank=1 maps the last input axis
    assert net.parameter_count() == 2 * 5 * 3 + 2 * 5


def test_sequential_applies_functions_in_order_and_layerstack_repeats():
    runner = load_text("x = Input{2} ; f = Sequential((v => v + 1) : (v => v * 3)) ; y = f(x)\n"
                       "g = LayerStack{3, (i => (v => v * 2))} ; w = g(x) ; outputNodes = (y:w)")
    out = runner.forward({"x": np.array([[1.0, 2.0]])}, ["y", "w"])
    np.testing.assert_allclose(out["y"], [[6.0, 9.0]])
    np.testing.assert_allclose(out["w"], [[8.0, 16.0]])


def test_legacy_parameter_and_constant_signatures():
    runner = load_text("W = Parameter(3, 2, init='fixedValue', value=0.5) ; c = Constant(2)\n"
                       "x = Input{2} ; y = Times(W, x) .* c ; outputNodes = (y)")
    out = runner.forward({"x": np.ones((1, 2))}, ["y"])
    # Constant(2) is a [1 x 1] matrix as in CNTK, so the product broadcasts to [3 x 1].
    assert runner.network.node("y").shape == (3, 1)
    np.testing.assert_allclose(out["y"], [[[2.0, 2.0, 2.0]]])


def test_cntk2_aliases_and_node_members():
    runner = load_text("x = Input{5} ; r = CNTK2.ReLU(x) ; d = x.dim ; s = CNTK2.Slice(r, 1, 3)\n"
                       "n = ReduceSum(s) ; outputNodes = (n)")
    rec = runner.network.record
    assert rec.get("d") == 5.0
    out = runner.forward({"x": np.array([[-1.0, 2.0, 3.0, -4.0, 5.0]])}, ["n"])
    np.testing.assert_allclose(out["n"], [[5.0]])


# ---- errors: file:line:col, node names, shapes, exit 78 ----------------------------------------

def _write(tmp_path, text):
    path = tmp_path / "net.net"
    path.write_text(text)
    return str(path)


TRAIN_BLOCK = """
train = {{
    action = "train"
    network = {{
{body}
    }}
    SGD = {{ maxEpochs = 1 ; learningRatesPerSample = 0.1 }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "x.txt" ; input = {{ x = {{ dim = 7 }} }} }}
}}
"""


def test_times_shape_mismatch_names_nodes_shapes_and_position(tmp_path):
    body = ("        x = Input{7}\n"
            "        W = ParameterTensor{(10:5)}\n"
            "        z = Times(W, x)\n"
            "        criterionNodes = (z)")
    code, _, err = run_cli("check", _write(tmp_path, TRAIN_BLOCK.format(body=body)))
    assert code == 78
    assert "net.net:7:13" in err          # the Times call
    assert "'W' [10 x 5]" in err and "'x' [7]" in err


def test_unknown_operation_is_an_error_at_its_line(tmp_path):
    body = ("        x = Input{7}\n"
            "        z = new ComputationNode [ operation = 'Timez' ; inputs = x ]\n"
            "        criterionNodes = (z)")
    code, _, err = run_cli("check", _write(tmp_path, TRAIN_BLOCK.format(body=body)))
    assert code == 78
    assert "net.net:6:13" in err and "unknown operation 'Timez'" in err and "Times" in err


def test_missing_criterion_in_a_train_action_is_an_error(tmp_path):
    body = ("        x = Input{7}\n"
            "        z = DenseLayer{3}(x)\n"
            "        outputNodes = (z)")
    code, _, err = run_cli("check", _write(tmp_path, TRAIN_BLOCK.format(body=body)))
    assert code == 78
    assert "net.net:4:5" in err and "no criterion node" in err


def test_dimension_that_cannot_be_inferred_is_an_error(tmp_path):
    body = ("        x = Input{7}\n"
            "        W = ParameterTensor{(3:0)}\n"
            "        z = ReduceSum(W) + ReduceSum(x)\n"
            "        criterionNodes = (z)")
    code, _, err = run_cli("check", _write(tmp_path, TRAIN_BLOCK.format(body=body)))
    assert code == 78
    assert "net.net:6:13" in err and "cannot infer" in err and "'W'" in err and "[3 x ?]" in err
