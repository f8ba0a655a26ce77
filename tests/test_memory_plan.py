"""The memory plan (compiler/graph/memory.py): lifetimes from the executable plan, one arena per bucket."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import netlang
from netlang.cli import main
from netlang.compiler.graph.memory import ALIGNMENT, Buffer, assumed_bucket, peak_live, place, plan_memory
from netlang.compiler.graph.plan import make_plan

ROOT = Path(__file__).resolve().parents[1]


def _training_plan(config: str):
    network = netlang.load(str(ROOT / config), precision="float").network("train", precision="float").network
    criterion = network.groups["criterion"][0]
    evaluation = [n for n in network.groups.get("evaluation", []) if n is not criterion]
    return network, make_plan(network, evaluation, criterion, network.parameters)


def _assert_disjoint(memory):
    size = {b.name: -(-b.nbytes // ALIGNMENT) * ALIGNMENT for b in memory.buffers}
    for i, a in enumerate(memory.buffers):
        for b in memory.buffers[i + 1:]:
            if a.overlaps(b):
                a0, b0 = memory.offsets[a.name], memory.offsets[b.name]
                assert a0 + size[a.name] <= b0 or b0 + size[b.name] <= a0, (a, b)


@pytest.mark.parametrize("config", ["configs/vision/mnist_convnet.net", "configs/text/atis_slots_lstm.net",
                                    "configs/vision/resnet20_cifar10.net"])
def test_no_two_live_buffers_share_memory(config):
    network, plan = _training_plan(config)
    batch, steps = assumed_bucket(network, 64)
    memory = plan_memory(plan, batch, steps)
    assert memory.buffers
    _assert_disjoint(memory)
    assert memory.peak_live_bytes <= memory.arena_bytes <= sum(-(-b.nbytes // ALIGNMENT) * ALIGNMENT
                                                               for b in memory.buffers)
    assert all(b.first <= b.last for b in memory.buffers)


def test_buffers_whose_lifetimes_do_not_meet_reuse_memory():
    chain = [Buffer("a", 4096, 0, 1), Buffer("b", 4096, 1, 2), Buffer("c", 4096, 2, 3), Buffer("d", 4096, 3, 4)]
    offsets, arena = place(chain)
    assert arena == 2 * 4096                   # a and c, b and d take turns
    assert offsets["a"] == offsets["c"] and offsets["b"] == offsets["d"] != offsets["a"]
    assert peak_live(chain) == arena


def test_a_larger_bucket_plans_a_proportionally_larger_arena():
    _, plan = _training_plan("configs/vision/mnist_convnet.net")
    small, large = plan_memory(plan, 32), plan_memory(plan, 128)
    assert 3.5 * small.arena_bytes < large.arena_bytes <= 4.1 * small.arena_bytes


def test_values_die_where_the_plan_releases_them():
    network, plan = _training_plan("configs/vision/mnist_convnet.net")
    memory = plan_memory(plan, 8)
    end = len(plan.steps) - 1
    criterion = network.groups["criterion"][0].name
    by_name = {b.name: b for b in memory.buffers}
    assert by_name[criterion].last == end                     # the loss is an output
    assert any(b.last < end for b in memory.buffers)          # activations die during backward
    assert all(by_name[f"grad:{p.name}"].last == end for p in network.parameters)


def test_check_json_reports_the_planned_step_memory():
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["check", str(ROOT / "configs/vision/mnist_convnet.net"), "--no-data", "--json"]) == 0
    memory = json.loads(out.getvalue())["actions"]["train"]["memory"]
    _, plan = _training_plan("configs/vision/mnist_convnet.net")
    assert memory["minibatchSize"] == 64 and memory["batch"] == 64
    assert memory["arenaBytes"] == plan_memory(plan, 64).arena_bytes
    assert memory["stepBytes"] == memory["arenaBytes"] + memory["persistentBytes"]
    assert memory["persistentBytes"] > 0
