"""Loop detection (compiler/loops.py): strongly connected components, their order and their checks.

Graphs are built by hand from IR nodes (a cycle without a delay cannot be written in BrainScript: the
evaluator reports it as a cyclic reference first), and from netlang text for the plan tests.
"""
from __future__ import annotations

import pytest

from netlang.compiler.graph import evaluate_text, loops, network
from netlang.compiler.graph.loops import Loop
from netlang.compiler.graph.plan import make_plan
from netlang.compiler.lang.nodes import BuildContext
from netlang.errors import NetworkError
from netlang.ir.graph import DEFAULT_SEQ, Node


def node(op, *inputs, name, shape=(2,), layout=DEFAULT_SEQ):
    return Node(op, list(inputs), {}, name=name, shape=shape, layout=layout)


def rnn_cell(x, name, delay="PastValue"):
    """h = Tanh(x + delay(h)): a one-delay loop of three nodes."""
    prev = node(delay, name=f"{name}.prev")
    plus = node("Plus", x, prev, name=f"{name}.plus")
    h = node("Tanh", plus, name=name)
    prev.inputs = [h]
    return prev, plus, h


def units_of(*roots):
    """Execution units of everything reachable from roots (inputs first, as the network orders them)."""
    seen, order, stack = set(), [], list(roots)
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        order.append(n)
        stack.extend(n.inputs)
    return loops.execution_units(sorted(order, key=lambda n: n.id))


def names(units):
    return [u.describe() if isinstance(u, Loop) else u.name for u in units]


# ---- components and their order ----------------------------------------------------------------

def test_graph_without_cycles_has_no_loops():
    x = node("InputValue", name="x")
    y = node("Tanh", node("Negate", x, name="n"), name="y")
    units = units_of(y)
    assert all(isinstance(u, Node) for u in units)
    assert names(units) == ["x", "n", "y"]


def test_cycle_through_past_value_is_one_forward_loop():
    x = node("InputValue", name="x")
    prev, plus, h = rnn_cell(x, "h")
    (loop,) = [u for u in units_of(h) if isinstance(u, Loop)]
    assert loop.direction == +1
    assert {n.name for n in loop.nodes} == {"h.prev", "h.plus", "h"}
    assert loop.delays == [prev]


def test_steps_within_a_loop_run_in_order_with_delay_edges_cut():
    x = node("InputValue", name="x")
    prev, plus, h = rnn_cell(x, "h")
    (loop,) = [u for u in units_of(h) if isinstance(u, Loop)]
    order = [n.name for n in loop.nodes]
    assert order.index("h.prev") < order.index("h.plus") < order.index("h")


def test_cycle_through_future_value_is_a_backward_loop():
    x = node("InputValue", name="x")
    _, _, h = rnn_cell(x, "h", delay="FutureValue")
    (loop,) = [u for u in units_of(h) if isinstance(u, Loop)]
    assert loop.direction == -1


def test_stacked_loops_are_separate_components_in_data_order():
    x = node("InputValue", name="x")
    _, _, h1 = rnn_cell(x, "h1")
    _, _, h2 = rnn_cell(h1, "h2")
    units = units_of(h2)
    found = [u for u in units if isinstance(u, Loop)]
    assert len(found) == 2
    first, second = found
    assert h1.id in first.ids and h2.id in second.ids
    assert units.index(first) < units.index(second)


def test_cycles_sharing_nodes_form_one_loop():
    # An LSTM-like pair: c = f(c_prev, h_prev), h = g(c); both delays close cycles through c.
    x = node("InputValue", name="x")
    h_prev = node("PastValue", name="h_prev")
    c_prev = node("PastValue", name="c_prev")
    gate = node("Sigmoid", node("Plus", x, h_prev, name="proj"), name="gate")
    c = node("Plus", node("ElementTimes", gate, c_prev, name="keep"), gate, name="c")
    h = node("Tanh", c, name="h")
    h_prev.inputs, c_prev.inputs = [h], [c]
    found = [u for u in units_of(h) if isinstance(u, Loop)]
    assert len(found) == 1
    assert set(found[0].delays) == {h_prev, c_prev}


def test_loop_nested_in_a_larger_cycle_is_merged_into_it():
    # Inner cycle a -> inner_prev -> a, outer cycle b -> outer_prev -> a -> b.
    x = node("InputValue", name="x")
    inner_prev = node("PastValue", name="inner_prev")
    outer_prev = node("PastValue", name="outer_prev")
    a = node("Plus", node("Plus", x, inner_prev, name="a_in"), outer_prev, name="a")
    b = node("Tanh", a, name="b")
    inner_prev.inputs, outer_prev.inputs = [a], [b]
    found = [u for u in units_of(b) if isinstance(u, Loop)]
    assert len(found) == 1
    assert {n.name for n in found[0].nodes} == {"inner_prev", "outer_prev", "a_in", "a", "b"}


def test_delay_outside_any_cycle_is_an_ordinary_node_after_its_input():
    x = node("InputValue", name="x")
    t = node("Tanh", x, name="t")
    shifted = node("PastValue", t, name="shifted")
    units = units_of(node("Plus", shifted, x, name="out"))
    assert not any(isinstance(u, Loop) for u in units)
    assert names(units).index("t") < names(units).index("shifted")


def test_loop_lists_what_it_reads_from_outside():
    x = node("InputValue", name="x")
    _, _, h = rnn_cell(x, "h")
    (loop,) = [u for u in units_of(h) if isinstance(u, Loop)]
    assert [n.name for n in loop.external_inputs()] == ["x"]


# ---- errors ------------------------------------------------------------------------------------

def test_cycle_without_delay_is_an_error_naming_its_nodes():
    x = node("InputValue", name="x")
    a = node("Plus", x, name="a")
    b = node("Tanh", a, name="b")
    a.inputs.append(b)
    with pytest.raises(NetworkError) as err:
        units_of(b)
    message = str(err.value)
    assert "cycle without PastValue/FutureValue" in message
    assert "a -> b -> a" in message


def test_delay_free_cycle_next_to_a_delayed_one_is_named():
    x = node("InputValue", name="x")
    prev, plus, h = rnn_cell(x, "h")
    extra = node("Negate", h, name="extra")
    plus.inputs.append(extra)                  # h.plus -> extra -> h -> h.plus, no delay on it
    with pytest.raises(NetworkError) as err:
        units_of(h)
    assert "h.plus -> h -> extra -> h.plus" in str(err.value)


def test_loop_mixing_past_and_future_values_is_an_error():
    x = node("InputValue", name="x")
    past = node("PastValue", name="past")
    future = node("FutureValue", name="future")
    h = node("Tanh", node("Plus", node("Plus", x, past, name="p1"), future, name="p2"), name="h")
    past.inputs, future.inputs = [h], [h]
    with pytest.raises(NetworkError, match="mixes PastValue 'past' and FutureValue 'future'"):
        units_of(h)


def test_whole_sequence_operation_inside_a_loop_is_an_error():
    x = node("InputValue", name="x")
    prev = node("PastValue", name="prev")
    rev = node("TimeReverse", node("Plus", x, prev, name="plus"), name="rev")
    prev.inputs = [rev]
    with pytest.raises(NetworkError, match="TimeReverse 'rev' needs the whole sequence"):
        units_of(rev)


def test_delay_in_a_loop_without_sequence_axis_is_an_error():
    x = node("InputValue", name="x", layout=None)
    prev = node("PastValue", name="prev", layout=None)
    h = node("Tanh", node("Plus", x, prev, name="plus", layout=None), name="h", layout=None)
    prev.inputs = [h]
    with pytest.raises(NetworkError, match="no sequence axis"):
        units_of(h)


# ---- from netlang text to a plan ---------------------------------------------------------------

def build(text):
    return network.build_network(evaluate_text(text).get("net"), BuildContext("", None))


LSTM_NET = """
net = {
    x = Input{3}
    h = RecurrentLSTMLayer{4} (x)
    y = Input{4}
    ce = SquareError (y, h, tag='criterion')
}
"""


def test_lstm_input_projection_runs_once_outside_the_loop():
    net = build(LSTM_NET)
    plan = make_plan(net, [net.node("h")])
    loop_steps = [s for s in plan.steps if s.kind == "loop"]
    assert len(loop_steps) == 1
    in_loop = loop_steps[0].loop.ids
    projections = [n for n in net.nodes if n.op == "Times" and n.inputs[1].name == "x"]
    assert len(projections) == 1 and projections[0].id not in in_loop
    recurrent = [n for n in net.nodes if n.op == "Times" and n.id in in_loop]
    assert len(recurrent) == 1                     # H * h_prev is the only product per step


def test_lstm_has_one_loop_with_two_delays():
    net = build(LSTM_NET)
    (loop,) = loops.find_loops(net.nodes)
    assert sorted(d.op for d in loop.delays) == ["PastValue", "PastValue"]


def test_backpropagation_through_time_is_a_plan_step():
    net = build(LSTM_NET)
    plan = make_plan(net, [], loss=net.node("ce"), wrt=net.learnable_parameters)
    kinds = [s.kind for s in plan.steps]
    assert kinds.index("loop") < kinds.index("loop_backward")
    assert "loop_backward" in plan.describe()


def test_loop_mixing_directions_in_text_fails_when_the_network_is_built():
    text = """
    net = {
        x = Input{2}
        h = Tanh (x + Loop.Previous (h) + Loop.Next (h))
    }
    """
    with pytest.raises(NetworkError, match="mixes PastValue"):
        build(text)
