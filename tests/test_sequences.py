"""Sequences end to end: networks written in netlang, built, and run by the executor on ragged minibatches.

Covers recurrence (gradients through PastValue/FutureValue loops against float64 finite differences,
LSTM and GRU layers, state reset at sequence starts, ragged equivalence), the dynamic-axis operations
(First/Last, Slice on the time axis, Gather/Scatter, BS.Loop, reductions that respect the mask,
per-sequence labels), errors for incompatible dynamic axes, frame mode, and sparse inputs.
"""
from __future__ import annotations

import numpy as np
import pytest

from netlang.compiler.graph import evaluate_text, network
from netlang.compiler.lang.nodes import BuildContext
from netlang.errors import DataError, NetworkError
from netlang.ops.sparse import SparseRows
from netlang.readers.batch import SparseSequence, StreamBatch, StreamInfo
from netlang.runtime.backend import select_backend
from netlang.runtime.executor import Executor
from netlang.runtime.feeding import input_feed

LENGTHS = (4, 2, 3)          # a ragged minibatch: the second and third sequences are padded


# ---- helpers -----------------------------------------------------------------------------------

def build(body: str):
    """A network from the members of `net = { … }`."""
    return network.build_network(evaluate_text("net = {\n" + body + "\n}").get("net"), BuildContext("", None))


def executor(net, seed=1):
    return Executor(net, select_backend("cpu", "double"), seed=seed)


def mask_of(lengths):
    return np.arange(max(lengths))[:, None] < np.asarray(lengths)[None, :]


def padded(rng, lengths, dim):
    """A (T, N, dim) array with random real steps and zeros in the padding, plus its mask."""
    mask = mask_of(lengths)
    return rng.standard_normal(mask.shape + (dim,)) * mask[..., None], mask


def sequence_feeds(rng, lengths=LENGTHS, x_dim=3, y_dim=4):
    x, mask = padded(rng, lengths, x_dim)
    y, _ = padded(rng, lengths, y_dim)
    return {"x": (x, mask), "y": (y, mask)}


def one_sequence(feeds, n):
    """The feeds of sequence n alone (its real steps only)."""
    out = {}
    for name, (array, mask) in feeds.items():
        steps = int(mask[:, n].sum())
        out[name] = (array[:steps, n:n + 1], mask[:steps, n:n + 1])
    return out


def loss_and_gradients(ex, net, feeds, loss="ce"):
    values, grads = ex.run(feeds, [], loss=net.node(loss), wrt=net.learnable_parameters)
    return float(values[loss][0]), grads


def numeric_gradient(ex, net, feeds, name, loss="ce", eps=1e-6):
    param = ex.parameters[name]
    grad = np.zeros_like(param)
    for k in range(param.size):
        keep = param.flat[k]
        param.flat[k] = keep + eps
        up = loss_and_gradients(ex, net, feeds, loss)[0]
        param.flat[k] = keep - eps
        down = loss_and_gradients(ex, net, feeds, loss)[0]
        param.flat[k] = keep
        grad.flat[k] = (up - down) / (2 * eps)
    return grad


def assert_gradients_match_finite_differences(net, feeds, seed=1):
    ex = executor(net, seed)
    _, grads = loss_and_gradients(ex, net, feeds)
    assert grads
    for name, analytic in grads.items():
        numeric = numeric_gradient(ex, net, feeds, name)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def with_loss(body: str, out="h") -> str:
    return f"x = Input{{3}}\n{body}\ny = Input{{4}}\nce = SquareError (y, {out}, tag='criterion')"


# ---- gradients through loops -------------------------------------------------------------------

def test_past_value_chain_gradient_matches_finite_differences():
    net = build(with_loss("""
        W = ParameterTensor {(4:0)}
        R = ParameterTensor {(4:4)}
        h = Tanh (W * x + R * PastValue (4, h, timeStep=1) + 0.5 * PastValue (4, h, timeStep=2))"""))
    assert_gradients_match_finite_differences(net, sequence_feeds(np.random.default_rng(1)))


def test_future_value_chain_with_trained_initial_state_gradient_matches():
    net = build(with_loss("""
        W = ParameterTensor {(4:0)}
        R = ParameterTensor {(4:4)}
        h0 = ParameterTensor {4, initValue=0.3}
        h = Tanh (W * x + R * FutureValue (0, h, initialState=h0))"""))
    assert_gradients_match_finite_differences(net, sequence_feeds(np.random.default_rng(2)))


def test_delay_outside_a_loop_gradient_matches():
    net = build(with_loss("""
        W = ParameterTensor {(4:0)}
        t = Tanh (W * x)
        h = t + PastValue (0, t, timeStep=2, defaultHiddenActivation=0.25) .* FutureValue (0, t)"""))
    assert_gradients_match_finite_differences(net, sequence_feeds(np.random.default_rng(3)))


def test_lstm_layer_gradient_on_ragged_minibatch():
    net = build(with_loss("h = RecurrentLSTMLayer {4} (x)"))
    assert_gradients_match_finite_differences(net, sequence_feeds(np.random.default_rng(4)))


@pytest.mark.parametrize("options", ["usePeepholes=true, cellShape=5", "goBackwards=true, trainInitialState=true",
                                     "enableSelfStabilization=true"])
def test_lstm_layer_variants_gradient(options):
    net = build(with_loss(f"h = RecurrentLSTMLayer {{4, {options}}} (x)"))
    assert_gradients_match_finite_differences(net, sequence_feeds(np.random.default_rng(5)))


def test_gru_layer_gradient_on_ragged_minibatch():
    net = build(with_loss("h = BS.RNNs.RecurrentGRU (4, x).h"))
    assert_gradients_match_finite_differences(net, sequence_feeds(np.random.default_rng(6)))


def test_bidirectional_gru_stack_gradient():
    net = build(with_loss("""
        layers = BS.RNNs.RecurrentBidirectionalGRUStack (2, x)
        h = DenseLayer {4} (layers[0].h)"""))
    assert_gradients_match_finite_differences(net, sequence_feeds(np.random.default_rng(7)))


def test_gradient_reaches_the_input_through_the_loop():
    net = build(with_loss("h = RecurrentLSTMLayer {4} (x)"))
    ex = executor(net)
    feeds = sequence_feeds(np.random.default_rng(8))
    x = net.node("x")
    _, grads = ex.run(feeds, [], loss=net.node("ce"), wrt=[x])
    array, mask = feeds["x"]
    numeric = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        for sign in (1, -1):
            shifted = array.copy()
            shifted[index] += sign * 1e-6
            numeric[index] += sign * ex.run({**feeds, "x": (shifted, mask)}, [], loss=net.node("ce"))[0]["ce"][0]
    numeric /= 2e-6
    np.testing.assert_allclose(grads["x"], numeric, rtol=1e-5, atol=1e-7)
    assert np.all(grads["x"][~mask] == 0)          # padding gets no gradient


# ---- ragged equivalence: a padded minibatch computes what each sequence computes alone ---------

LSTM_STACK = with_loss("""
    fwd = RecurrentLSTMLayer {4} (x)
    bwd = RecurrentLSTMLayer {4, goBackwards=true} (x)
    h = DenseLayer {4} (Splice (fwd : bwd))""")


def test_ragged_minibatch_outputs_equal_each_sequence_alone():
    net = build(LSTM_STACK)
    ex = executor(net)
    feeds = sequence_feeds(np.random.default_rng(9))
    together = ex.run(feeds, [net.node("h")])[0]["h"]
    for n, length in enumerate(LENGTHS):
        alone = ex.run(one_sequence(feeds, n), [net.node("h")])[0]["h"]
        np.testing.assert_allclose(together[:length, n], alone[:, 0], rtol=1e-12, atol=1e-12)


def test_ragged_minibatch_gradients_equal_the_sum_over_sequences_alone():
    net = build(LSTM_STACK)
    ex = executor(net)
    feeds = sequence_feeds(np.random.default_rng(10))
    loss, grads = loss_and_gradients(ex, net, feeds)
    total_loss, total = 0.0, {k: np.zeros_like(v) for k, v in grads.items()}
    for n in range(len(LENGTHS)):
        part_loss, part = loss_and_gradients(ex, net, one_sequence(feeds, n))
        total_loss += part_loss
        for k in total:
            total[k] += part[k]
    assert loss == pytest.approx(total_loss, rel=1e-12)
    for k in grads:
        np.testing.assert_allclose(grads[k], total[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_state_is_reset_at_each_sequence_start():
    # The same sequence placed second in a minibatch after a different, longer one gives the same
    # output as alone: no state leaks from one sequence into the next.
    net = build("x = Input{2}\nh = BS.Loop.Previous (Tanh (x) + BS.Loop.Previous (h))")
    ex = executor(net)
    rng = np.random.default_rng(11)
    x, mask = padded(rng, (5, 3), 2)
    both = ex.run({"x": (x, mask)}, [net.node("h")])[0]["h"]
    alone = ex.run({"x": (x[:3, 1:], mask[:3, 1:])}, [net.node("h")])[0]["h"]
    np.testing.assert_allclose(both[:3, 1], alone[:, 0], rtol=1e-12)
    np.testing.assert_array_equal(both[0], 0.0)   # every sequence starts from the initial state 0


# ---- dynamic-axis operations -------------------------------------------------------------------

SEQ = np.arange(4 * 2 * 2, dtype=float).reshape(4, 2, 2) - 5     # sequence 0: 4 steps, sequence 1: 2
SEQ_MASK = mask_of((4, 2))


def run_outputs(body, names, x=SEQ, mask=SEQ_MASK):
    net = build("x = Input{2}\n" + body)
    ex = executor(net)
    values = ex.run({"x": (x, mask)}, [net.node(n) for n in names])[0]
    return values, ex.output_masks, net


def test_first_and_last_give_one_value_per_sequence():
    values, _, net = run_outputs("f = BS.Sequences.First (x)\nl = BS.Sequences.Last (x)", ["f", "l"])
    np.testing.assert_array_equal(values["f"], SEQ[0])
    np.testing.assert_array_equal(values["l"], [SEQ[3, 0], SEQ[1, 1]])
    assert str(net.node("l").layout) == "#"


def test_slice_on_the_time_axis_makes_shorter_sequences():
    values, masks, _ = run_outputs("s = Slice (1, 0, x, axis=-1)\nt = Slice (-2, 0, x, axis=-1)", ["s", "t"])
    np.testing.assert_array_equal(values["s"][:, 0], SEQ[1:, 0])
    np.testing.assert_array_equal(values["s"][0, 1], SEQ[1, 1])
    np.testing.assert_array_equal(masks["s"], [[True, True], [True, False], [True, False]])
    np.testing.assert_array_equal(values["t"][:, 1], SEQ[:2, 1])           # the last two of 2 steps


def test_time_reverse_reverses_each_sequence_within_its_length():
    values, _, _ = run_outputs("r = TimeReverse (x)", ["r"])
    np.testing.assert_array_equal(values["r"][:, 0], SEQ[::-1, 0])
    np.testing.assert_array_equal(values["r"][:2, 1], SEQ[1::-1, 1])
    np.testing.assert_array_equal(values["r"][2:, 1], 0.0)


def test_gather_keeps_flagged_steps_and_scatter_puts_them_back():
    body = """cond = Greater (Slice (0, 1, x), Constant (0))
              g = BS.Sequences.Gather (cond, x)
              s = BS.Sequences.Scatter (cond, g)"""
    values, masks, _ = run_outputs(body, ["g", "s"])
    np.testing.assert_array_equal(values["g"][:, 0], SEQ[2:, 0])            # x[...,0] > 0 at t = 2, 3
    np.testing.assert_array_equal(values["g"][0, 1], SEQ[1, 1])             # and at t = 1
    np.testing.assert_array_equal(masks["g"], [[True, True], [True, False]])
    expected = np.where((SEQ[..., :1] > 0) & SEQ_MASK[..., None], SEQ, 0)
    np.testing.assert_array_equal(values["s"], expected)


def test_loop_flags_mark_first_and_last_steps():
    values, _, _ = run_outputs("a = BS.Loop.IsFirst (x)\nb = BS.Loop.IsLast (x)", ["a", "b"])
    np.testing.assert_array_equal(values["a"][:, 0, 0], [1, 0, 0, 0])
    np.testing.assert_array_equal(values["b"][:, 0, 0], [0, 0, 0, 1])
    np.testing.assert_array_equal(values["b"][:2, 1, 0], [0, 1])


def test_iteration_counts_steps_and_count_gives_lengths():
    values, _, _ = run_outputs("i = BS.Loop.Iteration (x)\nc = BS.Loop.Count (x)", ["i", "c"])
    np.testing.assert_array_equal(values["i"][:, 0, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(values["c"][:, 0], [4, 2])


def test_previous_and_next_read_neighbours_with_defaults():
    values, _, _ = run_outputs("p = BS.Loop.Previous (x)\nn = BS.Loop.NextOrDefault (x, defaultValue=7)", ["p", "n"])
    np.testing.assert_array_equal(values["p"][1:, 0], SEQ[:3, 0])
    np.testing.assert_array_equal(values["p"][0], 0.0)
    np.testing.assert_array_equal(values["n"][0, 1], SEQ[1, 1])
    np.testing.assert_array_equal(values["n"][1, 1], [7, 7])                # past the end of sequence 1


def test_sequence_reductions_ignore_padding():
    padding = np.where(SEQ_MASK[..., None], SEQ, 1000.0)                   # padding must not count
    body = "s = BS.Sequences.ReduceSum (x)\nm = BS.Sequences.ReduceMax (x)\nmean = BS.Sequences.ReduceMean (x)"
    values, _, _ = run_outputs(body, ["s", "m", "mean"], x=padding)
    np.testing.assert_array_equal(values["s"], [SEQ[:, 0].sum(0), SEQ[:2, 1].sum(0)])
    np.testing.assert_array_equal(values["m"], [SEQ[3, 0], SEQ[1, 1]])
    np.testing.assert_allclose(values["mean"], [SEQ[:, 0].mean(0), SEQ[:2, 1].mean(0)])


def test_fold_left_accumulates_over_each_sequence():
    values, _, _ = run_outputs("add (a, b) = a + b\nf = BS.Sequences.FoldL (add, 0, x)", ["f"])
    np.testing.assert_array_equal(values["f"], [SEQ[:, 0].sum(0), SEQ[:2, 1].sum(0)])


def test_broadcast_sequence_as_spreads_a_per_sequence_value_over_steps():
    values, _, _ = run_outputs("b = BS.Sequences.BroadcastSequenceAs (x, BS.Sequences.Last (x))", ["b"])
    np.testing.assert_array_equal(values["b"][:, 0], np.broadcast_to(SEQ[3, 0], (4, 2)))
    np.testing.assert_array_equal(values["b"][2:, 1], 0.0)                 # padding stays 0


def test_dims_of_a_delay_in_a_loop_are_inferred():
    net = build("x = Input{3}\nW = ParameterTensor {(5:0)}\nh = Tanh (W * x + BS.Loop.Previous (h))")
    assert net.node("h").shape == (5,)


# ---- per-sequence labels, incompatible axes, frame mode ----------------------------------------

INTENT = """
    x = Input{3}
    intent = Input{2, dynamicAxis=DynamicAxis()}
    z = DenseLayer {2} (BS.Sequences.Last (RecurrentLSTMLayer {4} (x)))
    ce = CrossEntropyWithSoftmax (intent, z, tag='criterion')
"""


def test_per_sequence_label_on_its_own_axis_trains_with_last():
    net = build(INTENT)
    rng = np.random.default_rng(12)
    x, mask = padded(rng, LENGTHS, 3)
    labels = np.eye(2)[[0, 1, 1]][None]                                    # one step per sequence
    feeds = {"x": (x, mask), "intent": (labels, np.ones((1, 3), bool))}
    assert_gradients_match_finite_differences(net, feeds)


def test_inputs_with_incompatible_dynamic_axes_are_an_error_naming_both():
    with pytest.raises(NetworkError) as err:
        build("""
            x = Input{3}
            intent = Input{3, dynamicAxis=DynamicAxis()}
            ce = SquareError (intent, x, tag='criterion')""")
    assert "'intent'" in str(err.value) and "'x'" in str(err.value)
    assert "incompatible dynamic axes" in str(err.value)


def test_inputs_sharing_an_axis_with_different_lengths_are_a_data_error():
    net = build(with_loss("h = DenseLayer {4} (BS.Loop.Previous (x))"))
    rng = np.random.default_rng(13)
    x, x_mask = padded(rng, (3, 2), 3)
    y, y_mask = padded(rng, (3, 3), 4)
    with pytest.raises(DataError, match="'x' and 'y' share the dynamic axis"):
        executor(net).run({"x": (x, x_mask), "y": (y, y_mask)}, [], loss=net.node("ce"))


def test_network_without_sequence_operations_runs_in_frame_mode_on_packed_frames():
    net = build(with_loss("h = DenseLayer {4} (x)"))
    assert str(net.node("x").layout) == "#"
    rng = np.random.default_rng(14)
    feeds = sequence_feeds(rng)
    values = executor(net).run(feeds, [net.node("h")], loss=net.node("ce"))[0]
    assert values["h"].shape == (sum(LENGTHS), 4)                           # the real frames only


def test_frame_mode_loss_equals_sequence_mode_loss():
    feeds = sequence_feeds(np.random.default_rng(15))
    frames = build(with_loss("h = DenseLayer {4} (x)"))
    # Reversing twice is the identity on every sequence, but needs the time axis.
    sequences = build(with_loss("h = DenseLayer {4} (TimeReverse (TimeReverse (x)))"))
    assert str(sequences.node("x").layout) == "*"
    a = executor(frames, seed=3).run(feeds, [], loss=frames.node("ce"))[0]["ce"]
    b = executor(sequences, seed=3).run(feeds, [], loss=sequences.node("ce"))[0]["ce"]
    np.testing.assert_allclose(a, b, rtol=1e-12)


# ---- sparse inputs -----------------------------------------------------------------------------

SPARSE_NET = """
    w = SparseInput{10}
    e = EmbeddingLayer {4} (w)
    h = RecurrentLSTMLayer {3} (e)
    y = Input{3}
    ce = SquareError (y, h, tag='criterion')
"""


def word_batch():
    """Two sentences of word ids (3 and 1 words) as a sparse reader stream."""
    def sentence(ids):
        return SparseSequence(np.array(ids, np.int32), np.ones(len(ids)), np.arange(len(ids) + 1))
    return StreamBatch.from_sequences(StreamInfo("w", (10,), is_sparse=True), [sentence([1, 4, 2]), sentence([7])])


def test_product_with_a_sparse_input_is_compiled_to_a_gather():
    net = build(SPARSE_NET)
    assert net.node("e").op == "SparseTimes"


def test_sparse_feed_is_bound_sparse_and_equals_the_dense_one_hot_feed():
    net = build(SPARSE_NET)
    ex = executor(net)
    words = word_batch()
    y, _ = padded(np.random.default_rng(16), (3, 1), 3)
    sparse = {"w": input_feed(net.node("w"), words, np.float64), "y": (y, mask_of((3, 1)))}
    assert isinstance(sparse["w"][0], SparseRows)
    dense = {**sparse, "w": words.to_padded(np.float64)}
    loss_s, grads_s = loss_and_gradients(ex, net, sparse)
    loss_d, grads_d = loss_and_gradients(ex, net, dense)
    assert loss_s == pytest.approx(loss_d, rel=1e-12)
    for k in grads_s:
        np.testing.assert_allclose(grads_s[k], grads_d[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_embedding_gradient_touches_only_the_rows_of_seen_words():
    net = build(SPARSE_NET)
    ex = executor(net)
    y, _ = padded(np.random.default_rng(17), (3, 1), 3)
    feeds = {"w": input_feed(net.node("w"), word_batch(), np.float64), "y": (y, mask_of((3, 1)))}
    _, grads = loss_and_gradients(ex, net, feeds)
    touched = np.flatnonzero(np.abs(grads["e.E"]).sum(axis=1))
    assert touched.tolist() == [1, 2, 4, 7]


def test_sparse_embedding_gradient_matches_finite_differences():
    net = build(SPARSE_NET)
    y, _ = padded(np.random.default_rng(18), (3, 1), 3)
    feeds = {"w": input_feed(net.node("w"), word_batch(), np.float64), "y": (y, mask_of((3, 1)))}
    assert_gradients_match_finite_differences(net, feeds)


# ---- the rest of the layer library -------------------------------------------------------------

def test_lstmp_stack_with_projection_gradient():
    net = build(with_loss("""
        layers = BS.RNNs.RecurrentLSTMPStack ((2:2), x, cellDims=(3:2))
        h = DenseLayer {4} (layers[1].h)"""))
    assert_gradients_match_finite_differences(net, sequence_feeds(np.random.default_rng(20), lengths=(3, 1)))


def test_bidirectional_lstmp_stack_splices_both_directions():
    net = build("x = Input{3}\nlayers = BS.RNNs.RecurrentBidirectionalLSTMPStack ((2:3), x)\nh = layers[1].h")
    assert net.record.get("h").shape == (6,)
    assert {d.op for d in net.nodes if d.op in ("PastValue", "FutureValue")} == {"PastValue", "FutureValue"}


def test_gru_stack_output_has_the_top_layer_dimension():
    net = build("x = Input{3}\nh = BS.RNNs.RecurrentGRUStack ((4:5), x)[1].h")
    assert net.record.get("h").shape == (5,)


def test_lstm_layer_stack_applies_layers_in_order():
    net = build("x = Input{3}\nh = RecurrentLSTMLayerStack {(4:6)} (x)")
    assert net.record.get("h").shape == (6,)
    values, _, _ = run_outputs("h = RecurrentLSTMLayerStack {(4:6)} (x)", ["h"], x=np.zeros((3, 1, 2)),
                               mask=np.ones((3, 1), bool))
    assert values["h"].shape == (3, 1, 6)


def test_delay_layer_shifts_by_t_steps_either_way():
    values, _, net = run_outputs("p = DelayLayer {T=2} (x)\nf = DelayLayer {T=-1, defaultHiddenActivation=9} (x)\n"
                                 "z = DelayLayer {T=0} (x)", ["p", "f"])
    np.testing.assert_array_equal(values["p"][2:, 0], SEQ[:2, 0])
    np.testing.assert_array_equal(values["p"][:2], 0.0)
    np.testing.assert_array_equal(values["f"][:3, 0], SEQ[1:, 0])
    np.testing.assert_array_equal(values["f"][3, 0], [9, 9])
    assert net.record.get("z") is net.node("x")


def test_stabilizer_starts_as_the_identity_and_learns_a_gain():
    net = build(with_loss("h = DenseLayer {4} (StabilizerLayer {} (x))"))
    ex = executor(net)
    x, mask = padded(np.random.default_rng(21), LENGTHS, 3)
    stabilized = ex.run({"x": (x, mask)}, [net.node("h.x")])[0]["h.x"]
    # Frame mode: the real steps, sequence after sequence (the reader's order).
    np.testing.assert_allclose(stabilized, x.swapaxes(0, 1)[mask.T], rtol=1e-12, atol=1e-12)
    assert_gradients_match_finite_differences(net, sequence_feeds(np.random.default_rng(22)))


def test_transposed_embedding_gathers_rows_of_its_matrix():
    net = build("w = SparseInput{10}\ne = EmbeddingLayer {4, transpose=true} (w)")
    assert net.node("e").op == "SparseTransposeTimes"
    assert net.node("e.E").shape == (10, 4)
    ex = executor(net)
    values = ex.run({"w": input_feed(net.node("w"), word_batch(), np.float64)}, [net.node("e")])[0]
    E = ex.parameters["e.E"]                                   # run-time (4, 10): column k is word k
    # Frame mode packs the real steps in the reader's order: the first sentence, then the second.
    np.testing.assert_allclose(values["e"], E[:, [1, 4, 2, 7]].T)


def test_delay_of_a_value_without_time_steps_is_an_error():
    with pytest.raises(NetworkError, match="PastValue 'h' delays one value per sequence"):
        build("x = Input{3}\nh = BS.Loop.Previous (BS.Sequences.Last (x))")
