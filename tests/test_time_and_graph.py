"""`netlang time` (per-node forward and backward time) and `netlang graph` (the network as DOT)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from netlang import cli
from netlang.actions.graph import network_dot
from netlang.api import load

ROOT = Path(__file__).resolve().parents[1]
HELLO = str(ROOT / "examples" / "hello.net")

RECURRENT = """
command = train
train = {
    action = "train"
    network = {
        x = Input {4} ; labels = Input {3}
        h = RecurrentLSTMLayer {5} (x)
        z = DenseLayer {3} (h)
        ce = CrossEntropyWithSoftmax (labels, z)
        criterionNodes = (ce) ; outputNodes = (z)
    }
    SGD = { maxEpochs = 1 ; minibatchSize = 12 ; learningRatesPerSample = 0.1 }
    reader = { readerType = "CNTKTextFormatReader" ; file = "unused.ctf"
               input = { x = { dim = 4 } ; labels = { dim = 3 } } }
}
"""


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def recurrent_config(tmp_path):
    path = tmp_path / "lstm.net"
    path.write_text(RECURRENT)
    return str(path)


# ---- netlang time -----------------------------------------------------------------------------------

def test_time_lists_every_computed_node_sorted_with_its_share_and_config_line(capsys):
    code, out, _ = run(capsys, "time", HELLO, "-n", "2", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["minibatches"] == 2 and report["minibatchSize"] == 16 and report["action"] == "train"
    names = [n["name"] for n in report["nodes"]]
    network = load(HELLO).network("train").network
    computed = [n.name for n in network.nodes if n.inputs]
    assert sorted(names) == sorted(computed)
    totals = [n["total_ms"] for n in report["nodes"]]
    assert totals == sorted(totals, reverse=True)
    assert sum(n["share"] for n in report["nodes"]) == pytest.approx(1.0)
    ce = next(n for n in report["nodes"] if n["name"] == "ce")
    line = next(i for i, text in enumerate(Path(HELLO).read_text().splitlines(), 1) if "ce = CrossEntropy" in text)
    assert ce["op"] == "CrossEntropyWithSoftmax" and ce["where"].startswith(f"{line}:")
    assert ce["backward_ms"] >= 0 and ce["forward_ms"] > 0


def test_time_prints_a_table_and_the_time_per_minibatch(capsys):
    code, out, _ = run(capsys, "time", HELLO, "-n", "1", "SGD.minibatchSize=8")
    assert code == 0
    assert "1 minibatches of 8 samples on cpu (float32)" in out
    assert re.search(r"share", out) and re.search(r"per minibatch: [\d.]+ ms \(forward", out)


def test_time_counts_a_recurrent_loop_as_one_unit(capsys, recurrent_config):
    code, out, _ = run(capsys, "time", recurrent_config, "-n", "1", "--sequence-length", "4", "--json")
    assert code == 0
    loops = [n for n in json.loads(out)["nodes"] if n["op"] == "loop"]
    assert len(loops) == 1 and "in its loop" in loops[0]["name"]


def test_time_reads_the_actions_data_with_reader(capsys):
    code, out, _ = run(capsys, "time", HELLO, "-n", "9", "--reader", "--json")    # 4 minibatches per sweep
    assert code == 0 and json.loads(out)["nodes"] and json.loads(out)["minibatches"] == 9


def test_time_of_an_action_without_a_network_is_an_error(capsys):
    code, _, err = run(capsys, "time", HELLO, "--action", "test")
    assert code == 78 and "has no network of its own" in err


# ---- netlang graph ----------------------------------------------------------------------------------

def test_graph_labels_every_node_with_name_op_and_shape_and_draws_every_edge(capsys):
    code, out, _ = run(capsys, "graph", HELLO)
    assert code == 0 and out.startswith("digraph network {")
    network = load(HELLO).network("train").network
    for index, node in enumerate(network.nodes):
        assert re.search(rf'n{index} \[label="{re.escape(node.name)}\\n{node.op}\\n\[', out)
    edges = re.findall(r"^  n\d+ -> n\d+", out, flags=re.M)
    assert len(edges) == sum(len(n.inputs) for n in network.nodes)


def test_graph_draws_a_recurrent_loop_as_a_cluster_with_dashed_delay_edges(recurrent_config):
    network = load(recurrent_config).network("train").network
    text = network_dot(network)
    cluster = text[text.index("subgraph cluster_loop0"):]
    cluster = cluster[:cluster.index("  }")]
    delays = [i for i, n in enumerate(network.nodes) if n.op == "PastValue"]
    assert delays and all(f"n{index} [" in cluster for index in delays)
    assert "recurrent loop (PastValue)" in cluster
    assert text.count("[style=dashed]") == len(delays)


def test_graph_writes_dot_to_a_file(capsys, tmp_path):
    target = tmp_path / "hello.dot"
    assert run(capsys, "graph", HELLO, "-o", str(target))[0] == 0
    assert target.read_text().startswith("digraph network {")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("fmt, magic", [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_graph_renders_svg_and_png_with_graphviz(capsys, tmp_path, fmt, magic, recurrent_config):
    target = tmp_path / f"lstm.{fmt}"
    assert run(capsys, "graph", recurrent_config, "-o", str(target))[0] == 0
    assert magic in target.read_bytes()[:1000]


def test_graph_without_graphviz_asks_for_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code, _, err = run(capsys, "graph", HELLO, "-o", str(tmp_path / "x.svg"))
    assert code == 2 and "Graphviz" in err and "-o model.dot" in err
