"""The fused OptimizedRNNStack (runtime/ops/rnn.py) against the composed layers of stdlib/sequences.net.

With the composed layer's weights mapped into the fused layout, both compute the same outputs on a
ragged minibatch, and their gradients map onto each other the same way.
"""
from __future__ import annotations

import numpy as np
import pytest

from netlang.compiler.graph import evaluate_text, network
from netlang.compiler.lang.nodes import BuildContext
from netlang.errors import NetworkError
from netlang.ops.rnn import gru_block_from_layer, lstm_block_from_layer, num_parameters, pack_weights
from netlang.runtime.backend import select_backend
from netlang.runtime.executor import Executor

LENGTHS = (5, 2, 4)


def build(body: str):
    return network.build_network(evaluate_text("net = {\n" + body + "\n}").get("net"), BuildContext("", None))


def feeds_for(lengths=LENGTHS, x_dim=3, y_dim=4, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.arange(max(lengths))[:, None] < np.asarray(lengths)[None, :]
    x = rng.standard_normal(mask.shape + (x_dim,)) * mask[..., None]
    y = rng.standard_normal(mask.shape + (y_dim,)) * mask[..., None]
    return {"x": (x, mask), "y": (y, mask)}, mask


def pair(composed: str, fused: str, y_dim=4):
    """A network computing the same thing twice, with a loss on each."""
    return build(f"""
        x = Input{{3}}
        y = Input{{{y_dim}}}
        composed = {composed}
        Wf = ParameterTensor {{(0)}}
        fused = {fused}
        lossC = SquareError (y, composed, tag='criterion')
        lossF = SquareError (y, fused, tag='criterion')""")


def lstm_block(params, prefix):
    return lstm_block_from_layer(params[f"{prefix}.W"], params[f"{prefix}.H"], params[f"{prefix}.B"])


def gradient_block(block):
    """A composed layer's gradient block for the fused weights: both of cuDNN's bias vectors get the
    gradient of the layer's one bias."""
    w, r, b, _ = block
    return w, r, b, b


def run_pair(net, blocks_of, feeds):
    """Load the mapped weights into the fused parameter; return both outputs and gradients."""
    ex = Executor(net, select_backend("cpu", "double"))
    ex.parameters["Wf"][...] = pack_weights(blocks_of(ex.parameters)).reshape(ex.parameters["Wf"].shape)
    outputs = [net.node("composed"), net.node("fused")]
    values = ex.run(feeds, outputs)[0]
    params = [p for p in net.learnable_parameters]
    _, grads_c = ex.run(feeds, [], loss=net.node("lossC"), wrt=params + [net.node("x")])
    _, grads_f = ex.run(feeds, [], loss=net.node("lossF"), wrt=params + [net.node("x")])
    return values, grads_c, grads_f


def assert_real_steps_equal(a, b, mask):
    np.testing.assert_allclose(a[mask], b[mask], rtol=1e-10, atol=1e-12)


# ---- equality with the composed layers ---------------------------------------------------------

def test_fused_lstm_equals_the_composed_lstm_layer():
    net = pair("RecurrentLSTMLayer {4} (x)", "OptimizedRNNStack (Wf, x, 4)")
    feeds, mask = feeds_for()
    values, grads_c, grads_f = run_pair(net, lambda p: [lstm_block(p, "composed.lstm")], feeds)
    assert_real_steps_equal(values["composed"], values["fused"], mask)
    np.testing.assert_allclose(grads_c["x"], grads_f["x"], rtol=1e-10, atol=1e-12)
    mapped = pack_weights([gradient_block(lstm_block(grads_c, "composed.lstm"))])
    np.testing.assert_allclose(grads_f["Wf"], mapped, rtol=1e-10, atol=1e-12)


def test_fused_bidirectional_lstm_equals_forward_and_backward_layers_spliced():
    net = pair("Splice (RecurrentLSTMLayer {2} (x) : RecurrentLSTMLayer {2, goBackwards=true} (x))",
               "OptimizedRNNStack (Wf, x, 2, bidirectional=true)")
    feeds, mask = feeds_for()
    blocks = lambda p: [lstm_block(p, "composed._[0].lstm"), lstm_block(p, "composed._[1].lstm")]  # noqa: E731
    values, grads_c, grads_f = run_pair(net, blocks, feeds)
    assert_real_steps_equal(values["composed"], values["fused"], mask)
    np.testing.assert_allclose(grads_c["x"], grads_f["x"], rtol=1e-10, atol=1e-12)


def test_fused_two_layer_lstm_equals_the_composed_stack():
    net = pair("RecurrentLSTMLayerStack {(4:4)} (x)", "OptimizedRNNStack (Wf, x, 4, numLayers=2)")
    feeds, mask = feeds_for()
    prefix = "composed.arrayOfFunctions.layers"
    blocks = lambda p: [lstm_block(p, f"{prefix}[0].lstm"), lstm_block(p, f"{prefix}[1].lstm")]  # noqa: E731
    values, grads_c, grads_f = run_pair(net, blocks, feeds)
    assert_real_steps_equal(values["composed"], values["fused"], mask)
    np.testing.assert_allclose(grads_c["x"], grads_f["x"], rtol=1e-10, atol=1e-12)


def test_fused_gru_equals_the_composed_gru():
    net = pair("BS.RNNs.RecurrentGRU (4, x).h", "OptimizedRNNStack (Wf, x, 4, recurrentOp='gru')")
    feeds, mask = feeds_for()

    def blocks(p):
        s = "composed.gruState"
        return [gru_block_from_layer(p[f"{s}.W"], p[f"{s}.H"], p[f"{s}.Hc"], p[f"{s}.B"])]

    values, grads_c, grads_f = run_pair(net, blocks, feeds)
    assert_real_steps_equal(values["composed"], values["fused"], mask)
    np.testing.assert_allclose(grads_c["x"], grads_f["x"], rtol=1e-10, atol=1e-12)
    s = "composed.gruState"
    mapped = pack_weights([gradient_block(gru_block_from_layer(grads_c[f"{s}.W"], grads_c[f"{s}.H"],
                                                               grads_c[f"{s}.Hc"], grads_c[f"{s}.B"]))])
    np.testing.assert_allclose(grads_f["Wf"], mapped, rtol=1e-10, atol=1e-12)


def test_fused_tanh_rnn_equals_the_formula_written_out():
    net = pair("""{ W = ParameterTensor {(4:3)} ; R = ParameterTensor {(4:4)} ; b = ParameterTensor {4, initValue=0.1}
                    h = Tanh (W * x + R * BS.Loop.Previous (h) + b) }.h""",
               "OptimizedRNNStack (Wf, x, 4, recurrentOp='rnnTanh')")
    feeds, mask = feeds_for()
    values, _, _ = run_pair(net, lambda p: [(p["composed.W"], p["composed.R"], p["composed.b"],
                                             np.zeros_like(p["composed.b"]))], feeds)
    assert_real_steps_equal(values["composed"], values["fused"], mask)


# ---- the fused op on its own -------------------------------------------------------------------

def test_fused_stack_on_a_ragged_minibatch_equals_each_sequence_alone():
    net = build("x = Input{3}\nW = ParameterTensor {(0)}\nh = OptimizedRNNStack (W, x, 3, numLayers=2, bidirectional=true)")
    ex = Executor(net, select_backend("cpu", "double"))
    feeds, mask = feeds_for()
    x, _ = feeds["x"]
    together = ex.run({"x": feeds["x"]}, [net.node("h")])[0]["h"]
    for n, length in enumerate(LENGTHS):
        alone = ex.run({"x": (x[:length, n:n + 1], mask[:length, n:n + 1])}, [net.node("h")])[0]["h"]
        np.testing.assert_allclose(together[:length, n], alone[:, 0], rtol=1e-12, atol=1e-12)
    assert np.all(together[~mask] == 0)


def test_weights_shape_is_inferred_from_the_stack():
    net = build("x = Input{3}\nW = ParameterTensor {(4:0)}\nh = OptimizedRNNStack (W, x, 4, recurrentOp='gru')")
    count = 3 * 4 * (3 + 4 + 2)              # cuDNN's layout: an input and a recurrent bias
    assert net.node("W").shape == (4, count // 4)
    assert num_parameters(3, {"hiddenDims": 4, "recurrentOp": "gru"}) == count


def test_weights_of_the_wrong_size_are_an_error():
    with pytest.raises(NetworkError, match="needs 144"):        # 4·4·(3 + 4 + 2): two bias vectors
        build("x = Input{3}\nW = ParameterTensor {(10)}\nh = OptimizedRNNStack (W, x, 4)")


def test_unknown_recurrent_op_is_an_error():
    with pytest.raises(NetworkError, match="unknown recurrentOp 'lstmm'"):
        build("x = Input{3}\nW = ParameterTensor {(0)}\nh = OptimizedRNNStack (W, x, 4, recurrentOp='lstmm')")


def test_lstm_layer_uses_the_fused_engine_when_allowed():
    net = build("x = Input{3}\nh = RecurrentLSTMLayer {4, allowOptimizedEngine=true} (x)")
    assert net.node("h").op == "OptimizedRNNStack"
    assert not any(n.op == "PastValue" for n in net.nodes)


def test_lstm_layer_with_peepholes_keeps_the_composed_form():
    net = build("x = Input{3}\nh = RecurrentLSTMLayer {4, usePeepholes=true, allowOptimizedEngine=true} (x)")
    assert not any(n.op == "OptimizedRNNStack" for n in net.nodes)
