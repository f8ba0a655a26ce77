"""The one graph walk (ir/graph.depth_first) that ordering, reachability and late inputs share."""
from __future__ import annotations

import pytest

from netlang.ir.graph import CycleError, Node, depth_first


def chain():
    a = Node("X", [], name="a")
    b = Node("X", [a], name="b")
    c = Node("X", [a, b], name="c")
    return a, b, c


def test_every_reachable_node_once_after_the_nodes_it_reads():
    a, b, c = chain()
    assert [n.name for n in depth_first([c])] == ["a", "b", "c"]
    assert [n.name for n in depth_first([b, c, a])] == ["a", "b", "c"]


def test_a_cycle_is_ignored_for_reachability_and_an_error_when_ordering():
    a, b, c = chain()
    a.inputs = [c]
    assert {n.name for n in depth_first([c])} == {"a", "b", "c"}
    with pytest.raises(CycleError):
        depth_first([c], acyclic=True)


def test_inputs_are_asked_once_when_the_walk_enters_a_node():
    a, b, c = chain()
    entered = []

    def inputs_of(node):
        entered.append(node.name)
        return node.inputs

    depth_first([c, b], inputs_of)
    assert entered == ["c", "a", "b"]


def test_deferred_nodes_become_roots_once_their_node_is_done():
    a, b, c = chain()
    late = Node("X", [], name="late")
    order = depth_first([c], deferred_of=lambda node: [late] if node is a else [])
    assert [n.name for n in order] == ["a", "b", "c", "late"]
