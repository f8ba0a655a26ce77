"""Model reuse: a loaded network as a record, BS.Network.CloneFunction, BS.Network.Edit, freezing.

A small source model (2 → 8 → 3) is saved once; configs load it, clone parts of it with each
parameter mode and train. The acceptance of issue 15: "constant" copies do not change during
training, "learnable" copies change while the source model stays unchanged, "shared" parameters are
the source's own nodes, one buffer for every use.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from training_runs import cli

from netlang.api import NetworkRunner
from netlang.compiler.graph import evaluate_text
from netlang.compiler.graph.network import network_from_value
from netlang.datasets.synthetic import prepare_synthetic
from netlang.errors import NetlangError
from netlang.ir.modelfile import load_model, save_model
from netlang.runtime.executor import initial_parameters

SOURCE = """
    features = Input {2} ; labels = Input {3}
    h = LinearLayer {8} (features)
    t = Tanh (h)
    z = LinearLayer {3} (t)
    ce = CrossEntropyWithSoftmax (labels, z)
    criterionNodes = (ce) ; outputNodes = (z)
"""

TRAIN = """
command = train
modelPath = "{out}/model.dnn"
deviceId = "cpu"
precision = "double"
train = {{
    action = "train"
    network = {{
        m = BS.Network.Load ("{source}")
{body}
        ce = CrossEntropyWithSoftmax (labels, z)
        criterionNodes = (ce) ; outputNodes = (z)
    }}
    SGD = {{ maxEpochs = 1 ; minibatchSize = 32 ; learningRatesPerSample = 0.05 ; momentumPerMB = 0 }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/Train_cntk_text.txt"
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
"""



@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(path of the source model file, its parameters)."""
    folder = tmp_path_factory.mktemp("source")
    network = network_from_value(evaluate_text(SOURCE))
    params = initial_parameters(network, seed=5)
    path = str(folder / "source.dnn")
    save_model(path, network, params)
    return path, params


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(str(path), seed=3, classes=3, dim=2, samples=500)
    return str(path)


def build(text: str):
    return network_from_value(evaluate_text(text))


def copy_of(trained: dict, name: str) -> np.ndarray:
    """The trained value of the one copy of source parameter `name` (named `<call path>.<name>`)."""
    copies = [key for key in trained if key.endswith("." + name)]
    assert len(copies) == 1, (name, sorted(trained))
    return trained[copies[0]]


def train(tmp_path, source_path, data_dir, body: str) -> dict:
    """Train a config whose network loads the source model and holds `body`; the trained parameters."""
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.net"
    cfg.write_text(TRAIN.format(out=out, source=source_path, data=data_dir, body=body))
    code, _, err = cli("train", str(cfg), "-q")
    assert code == 0, err
    return load_model(str(out / "model.dnn")).parameters


# ---- a loaded network is a record of its nodes -----------------------------------------------------

def test_a_loaded_network_is_a_record_of_its_nodes(source):
    path, _ = source
    net = build(f'm = BS.Network.Load ("{path}")\nz = m.z\nW = m.h_W\nt = m.t')
    assert net.node("z").op == "Plus" and net.node("t").op == "Tanh"
    assert net.record.get("W") is net.node("h.W")             # the model's own node, under its own name


def test_names_with_dots_and_brackets_are_reached_with_underscores(tmp_path):
    net = build("x = Input {2}\nd = DenseLayer {4} (x)")
    path = str(tmp_path / "dense.dnn")
    save_model(path, net, initial_parameters(net))
    loaded = build(f'm = BS.Network.Load ("{path}")\nW = m.d_arrayOfFunctions_0__W')
    assert loaded.record.get("W").name == "d.arrayOfFunctions[0].W"


def test_an_unknown_member_of_a_loaded_network_suggests_the_node(source):
    path, _ = source
    with pytest.raises(NetlangError, match=r"the network has no node 'h_w'.*h_W"):
        build(f'm = BS.Network.Load ("{path}")\nW = m.h_w')


# ---- CloneFunction -------------------------------------------------------------------------------

def test_a_clone_computes_what_the_source_computes(source):
    path, params = source
    net = build(f"""
        m = BS.Network.Load ("{path}")
        f = BS.Network.CloneFunction (m.features, m.z, parameters = "constant")
        x = Input {{2}}
        y = f (x)""")
    x = np.random.default_rng(0).normal(size=(4, 2))
    h = np.tanh(x @ params["h.W"] + params["h.b"])          # run-time layout: BS (8:2) is (2, 8)
    out = NetworkRunner(net).forward({"x": x}, ["y"])["y"]
    np.testing.assert_allclose(out, h @ params["z.W"] + params["z.b"], rtol=1e-12)


def test_constant_copies_do_not_change_during_training(tmp_path, source, data_dir):
    path, params = source
    trained = train(tmp_path, path, data_dir, """
        hidden = BS.Network.CloneFunction (m.features, m.t, parameters = "constant")
        features = Input {2} ; labels = Input {3}
        z = LinearLayer {3} (hidden (features))""")
    np.testing.assert_array_equal(copy_of(trained, "h.W"), params["h.W"])
    np.testing.assert_array_equal(copy_of(trained, "h.b"), params["h.b"])
    assert np.abs(trained["z.b"]).sum() > 0                  # the new layer (bias initially 0) trained


def test_learnable_copies_change_and_the_source_model_stays_unchanged(tmp_path, source, data_dir):
    path, params = source
    before = Path(path).read_bytes()
    trained = train(tmp_path, path, data_dir, """
        net = BS.Network.CloneFunction (m.features, m.z, parameters = "learnable")
        features = Input {2} ; labels = Input {3}
        z = net (features)""")
    for name in ("h.W", "h.b", "z.W", "z.b"):
        assert not np.allclose(copy_of(trained, name), params[name]), name
    assert Path(path).read_bytes() == before
    for name, value in load_model(path).parameters.items():
        np.testing.assert_array_equal(value, params[name])


def test_shared_parameters_are_the_source_nodes_one_buffer_for_every_use(tmp_path, source, data_dir):
    path, params = source
    net = build(f"""
        m = BS.Network.Load ("{path}")
        f = BS.Network.CloneFunction (m.features, m.t, parameters = "shared")
        a = Input {{2}} ; b = Input {{2}}
        ya = f (a) ; yb = f (b)""")
    assert {n.name for n in net.parameters} == {"h.W", "h.b"}
    for output in ("ya", "yb"):
        product = net.node(output).inputs[0].inputs[0]            # Tanh(Plus(Times(W, x), b))
        assert product.inputs[0] is net.node("h.W")
    trained = train(tmp_path, path, data_dir, """
        f = BS.Network.CloneFunction (m.features, m.t, parameters = "shared")
        features = Input {2} ; labels = Input {3}
        z = LinearLayer {3} (f (features) + f (features .* 0.5))""")
    assert [key for key in trained if key.endswith("h.W")] == ["h.W"]     # one buffer for both calls
    assert not np.allclose(trained["h.W"], params["h.W"])


def test_a_record_of_output_nodes_gives_a_record_of_copies(source):
    path, _ = source
    net = build(f"""
        m = BS.Network.Load ("{path}")
        f = BS.Network.CloneFunction (m.features, {{ hidden = m.t ; out = m.z }})
        x = Input {{2}}
        r = f (x)
        t = r.hidden ; z = r.out""")
    t, z = net.record.get("t"), net.record.get("z")
    assert (t.name, t.shape, z.name, z.shape) == ("r.t", (8,), "r.z", (3,))   # named after the call and the source
    assert z.inputs[0].inputs[1] is t


def test_a_clone_reading_an_input_it_was_not_given_is_an_error(source):
    path, _ = source
    with pytest.raises(NetlangError, match=r"<string>:2:.*read 'labels', which is not one of the inputNodes"):
        build(f'm = BS.Network.Load ("{path}")\nf = BS.Network.CloneFunction (m.t, m.ce)\nx = Input {{8}}\ny = f (x)')


def test_an_unknown_parameter_mode_is_an_error_with_a_suggestion(source):
    path, _ = source
    with pytest.raises(NetlangError, match="did you mean 'constant'"):
        build(f'm = BS.Network.Load ("{path}")\nf = BS.Network.CloneFunction (m.features, m.z, parameters="constnt")')


def test_a_cloned_convolution_takes_a_larger_image(tmp_path):
    source_net = build("""
        image = Input {8:8:1}
        conv = ConvolutionalLayer {2, (3:3), pad=true, activation=ReLU} (image)
        pool = MaxPoolingLayer {(2:2), stride=2} (conv)""")
    path = str(tmp_path / "conv.dnn")
    save_model(path, source_net, initial_parameters(source_net))
    net = build(f"""
        m = BS.Network.Load ("{path}")
        f = BS.Network.CloneFunction (m.image, m.pool, parameters = "constant")
        big = Input {{16:12:1}}
        out = f (big)""")
    assert net.node("out").shape == (8, 6, 2)


# ---- Edit ----------------------------------------------------------------------------------------

def test_edit_replaces_a_node_and_relinks_its_readers(source):
    path, _ = source
    net = build(f"""
        m = BS.Network.Load ("{path}")
        newT = ReLU (LinearLayer {{8}} (m.features))
        edited = BS.Network.Edit (m, BS.Network.Editing.ReplaceLinksToNode (m.t, newT), BS.Constants.None)
        z = edited.z""")
    z = net.node("z")
    assert z.inputs[0].inputs[1] is net.node("newT")        # z = W * newT + b: a copy that reads newT
    assert {n.name for n in net.parameters} == {"newT._.W", "newT._.b", "z.W", "z.b"}


def test_edit_by_node_name_keeps_the_models_special_nodes(source):
    path, _ = source
    edited = build(f"""
        m = BS.Network.Load ("{path}")
        scores = Softmax (m.h)
        edited = BS.Network.Edit (m, BS.Network.Editing.ReplaceLinksToNamedNode ("t", ReLU (m.h)),
                                  scores)""").record.get("edited")
    assert [n.name for n in edited.groups["criterion"]] == ["ce"] and [n.name for n in edited.groups["output"]] == ["z"]
    assert edited.node("z").inputs[0].inputs[1].op == "ReLU"
    assert edited.node("scores") is not None and edited.node("t") is None


# ---- learningRateMultiplier = 0 --------------------------------------------------------------------

def test_a_parameter_with_learning_rate_multiplier_zero_is_frozen(tmp_path, source, data_dir):
    path, _ = source
    trained = train(tmp_path, path, data_dir, """
        features = Input {2} ; labels = Input {3}
        frozen = ParameterTensor {(8:2), init='uniform', learningRateMultiplier=0}
        W = ParameterTensor {(3:8), init='uniform'}
        z = W * Tanh (frozen * features)""")
    initial = build("""features = Input {2}
        frozen = ParameterTensor {(8:2), init='uniform', learningRateMultiplier=0}
        W = ParameterTensor {(3:8), init='uniform'}
        z = W * Tanh (frozen * features)""")
    start = initial_parameters(initial, seed=1)
    np.testing.assert_array_equal(trained["frozen"], start["frozen"])
    assert not np.allclose(trained["W"], start["W"])


# ---- the edit action and netlang inspect -------------------------------------------------------------

EDIT = """
command = makeDetector
makeDetector = {{
    action = "edit"
    outputModelPath = "{out}"
    BrainScriptNetworkBuilder = {{
        m = BS.Network.Load ("{source}")
        frozen = BS.Network.CloneFunction (m.features, m.t, parameters = "constant")
        features = Input {{2}}
        z = LinearLayer {{5}} (frozen (features))
        outputNodes = (z)
    }}
}}
"""


def test_the_edit_action_writes_the_network_with_the_models_values(tmp_path, source):
    path, params = source
    out = tmp_path / "edited.dnn"
    cfg = tmp_path / "edit.net"
    cfg.write_text(EDIT.format(out=out, source=path))
    code, stdout, err = cli("edit", str(cfg))
    assert code == 0, err
    assert f"makeDetector: wrote {out} (45 learnable parameters)" in stdout     # z: 5·8 + 5; the copy is frozen
    edited = load_model(str(out))
    np.testing.assert_array_equal(copy_of(edited.parameters, "h.W"), params["h.W"])
    assert [n.name for n in edited.network.groups["output"]] == ["z"]
    code, stdout, _ = cli("run", str(cfg))
    assert code == 0 and "exists; nothing to do" in stdout


def test_inspect_lists_names_members_shapes_and_frozen_parameters(tmp_path, source):
    path, _ = source
    out = tmp_path / "edited.dnn"
    cfg = tmp_path / "edit.net"
    cfg.write_text(EDIT.format(out=out, source=path))
    assert cli("edit", str(cfg), "-q")[0] == 0
    code, stdout, err = cli("inspect", str(out), "--json")
    assert code == 0, err
    document = json.loads(stdout)
    nodes = {n["name"]: n for n in document["nodes"]}
    frozen = next(n for name, n in nodes.items() if name.endswith(".h.W"))
    assert frozen["frozen"] and frozen["parameters"] == 16 and frozen["shape"] == "[8 x 2]"
    assert frozen["member"] == frozen["name"].replace(".", "_")
    assert nodes["z"]["op"] == "Plus" and not nodes["z.W"]["frozen"]
    assert (document["parameters"], document["frozen"]) == (45, 24)
    code, stdout, _ = cli("inspect", str(out))
    assert code == 0 and "frozen" in stdout and "45 learnable and 24 frozen parameters" in stdout
