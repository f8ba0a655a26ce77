"""`netlang explain` on any config: values of the user's own on request, evaluated lazily; --schedule."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from netlang import cli
from netlang.ir import graph

ROOT = Path(__file__).resolve().parents[1]

VALUES = """
f (x) = x * 2
g = f (10)
lr = 0.5
r = { a = 1 ; b = g + 1 ; boom = Fail ("r.boom was evaluated") }
net = { x = Input {3} ; y = DenseLayer {2} (x) }
never = Fail ("never was evaluated")
"""

TRAIN = """
command = train
modelPath = "out/m.dnn"
train = {
    action = "train"
    network = {
        features = Input {4} ; labels = Input {3}
        h = DenseLayer {5, activation=ReLU} (features)
        z = DenseLayer {3} (h)
        ce = CrossEntropyWithSoftmax (labels, z)
        criterionNodes = (ce) ; outputNodes = (z)
    }
    SGD = { maxEpochs = 6 ; minibatchSize = 32*2:64 ; learningRatesPerMB = 0.5*3:0.1
            momentumAsTimeConstant = 0*1:320 ; dropoutRate = 0.1*4:0 }
    reader = { readerType = "CNTKTextFormatReader" ; file = "x.ctf"
               input = { features = { dim = 4 } ; labels = { dim = 3 } } }
}
"""


def explain(capsys, path, *words):
    code = cli.main(["explain", str(path), *words])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def values_config(tmp_path):
    path = tmp_path / "values.net"
    path.write_text(VALUES)
    return path


@pytest.fixture
def train_config(tmp_path):
    path = tmp_path / "train.net"
    path.write_text(TRAIN)
    return path


def test_a_config_of_values_alone_is_explained_without_a_command(capsys, values_config):
    code, out, err = explain(capsys, values_config, "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["lr"] == {"value": 0.5, "origin": f"{values_config}:4:1"}
    assert document["command"]["origin"] == "default"


def test_a_computed_value_is_evaluated_when_asked_for(capsys, values_config):
    code, out, _ = explain(capsys, values_config, "g", "--json")
    assert code == 0
    assert json.loads(out) == {"g": {"value": 20, "origin": f"{values_config}:3:1"}}


def test_a_record_shows_its_plain_members_and_how_to_ask_for_the_others(capsys, values_config):
    code, out, err = explain(capsys, values_config, "r")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines["r.a"].split()[1] == "1"
    assert "netlang explain … r.b" in lines["r.b"] and "netlang explain … r.boom" in lines["r.boom"]
    code, out, _ = explain(capsys, values_config, "r.b")
    assert code == 0 and out.split()[:2] == ["r.b", "21"]


def test_asking_for_one_value_evaluates_nothing_else(capsys, values_config):
    before = next(graph._ids)
    for key in ("g", "r.a", "lr", "f"):
        assert explain(capsys, values_config, key)[0] == 0
    assert next(graph._ids) == before + 1          # no node was made: the network was never built


def test_a_node_is_shown_with_its_op_shape_and_inputs(capsys, values_config):
    code, out, _ = explain(capsys, values_config, "net.y", "--json")
    assert code == 0
    node = json.loads(out)["net.y"]["value"]
    assert node["op"] == "Plus" and node["shape"] == [2] and len(node["inputs"]) == 2


def test_a_node_of_an_action_network_has_its_inferred_shape(capsys, train_config):
    code, out, _ = explain(capsys, train_config, "train.network.h", "--json")
    assert code == 0
    entry = json.loads(out)["train.network.h"]
    assert entry["value"]["op"] == "ReLU" and entry["value"]["shape"] == [5]
    assert entry["origin"].startswith(f"{train_config}:8:")


def test_an_unknown_path_is_a_usage_error_with_a_suggestion(capsys, values_config):
    code, _, err = explain(capsys, values_config, "r.bb")
    assert code == 2 and "no setting or value 'r.bb'" in err and "r.b" in err


def test_schedule_gives_every_epochs_rates_momentum_minibatch_and_dropout(capsys, train_config):
    code, out, _ = explain(capsys, train_config, "train.SGD", "--schedule", "--json")
    assert code == 0
    rows = json.loads(out)["train.SGD"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["minibatchSize"] for r in rows] == [32, 32, 64, 64, 64, 64]
    assert [r["learningRatePerMinibatch"] for r in rows] == pytest.approx([0.5, 0.5, 0.5, 0.1, 0.1, 0.1])
    assert rows[2]["learningRatePerSample"] == pytest.approx(0.5 / 64)
    assert rows[0]["momentumPerMinibatch"] == 0 and rows[0]["momentumTimeConstant"] == 0
    assert rows[1]["momentumTimeConstant"] == pytest.approx(320)
    assert rows[1]["momentumPerMinibatch"] == pytest.approx(0.9048374, rel=1e-6)     # exp(-32/320)
    assert [r["dropoutRate"] for r in rows] == pytest.approx([0.1] * 4 + [0, 0])


def test_schedule_table_joins_epochs_with_equal_values(capsys, train_config):
    code, out, _ = explain(capsys, train_config, "--schedule")
    assert code == 0
    firsts = [line.split()[0] for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert firsts == ["1", "2", "3", "4", "5-6"]


def test_schedule_without_a_train_action_is_a_usage_error(capsys, values_config):
    assert explain(capsys, values_config, "--schedule")[0] == 2
