"""OptimizedRNNStack: a stack of LSTM, GRU or plain RNN layers over sequences as one fused op.

`OptimizedRNNStack(weights, input, hiddenDims, numLayers=1, bidirectional=false, recurrentOp='lstm')`
computes what the composed layers of stdlib/sequences.net compute — RecurrentLSTMLayer without
peepholes, projection or stabilizer; BS.RNNs.GRU; a tanh or ReLU RNN — with all weights in one
parameter and the loop over time inside the kernel: one matrix product per layer for the input
projection over all steps, then one small product per step.

Weight layout: the weights parameter, read in its run-time (row-major) order, holds for each layer
and, within a layer, for the forward then the backward direction, one block

    W (inputDim, G·H)   input weights; inputDim is the input's dim for layer 0, then H or 2H
    R (H, G·H)          recurrent weights
    bW (G·H)            input bias
    bR (G·H)            recurrent bias

with G gates side by side: lstm 4 (i, f, g, o: input, forget, cell candidate, output — cuDNN's
order), gru 3 (z, r, n: update, reset, candidate), rnnTanh / rnnReLU 1. Pre-activations are
x·W + h·R + bW + bR. The two bias vectors are cuDNN's, so a stack holds as many values as CNTK
counts for it (G·H·(inputDim + H + 2) per block). The parameter's BS shape is inferred: (P) for a
rank-1 parameter, (H : P/H) for rank 2.

Math, per direction, with h and c at 0 before each sequence's first real step:
    lstm:    i, f, g, o = σ, σ, tanh, σ of the gate blocks;  c = f⊙c + i⊙g;  h = o⊙tanh(c)
    gru:     as BS.RNNs.GRU, reset applied before the recurrent product (cuDNN applies it after):
             z = σ(x W_z + h R_z + b_z),  r = σ(x W_r + h R_r + b_r),
             n = tanh(x W_n + b_n + (r⊙h) R_n),  h = (1 - z)⊙n + z⊙h
    rnnTanh, rnnReLU:  h = act(x W + h R + b)
A bidirectional layer splices its forward and backward outputs (forward first) into 2H; the backward
direction starts at each sequence's own last step. Outputs are 0 at padded steps.

`lstm_block_from_layer` and `gru_block_from_layer` map the parameters of the composed layers into
one (W, R, bW, bR) block (the layer's bias as bW, bR zero); `pack_weights` concatenates blocks into
the weights parameter.
"""
from __future__ import annotations

import numpy as np

from netlang.ir.shapes import num_elements
from netlang.ops.registry import InputSpec, OpCheck, OpDef, Param, ShapeMismatch, ShapeResult, Signature, register
from netlang.ops.sequence import valid_steps

GATES = {"lstm": 4, "gru": 3, "rnnTanh": 1, "rnnReLU": 1}


# ---- configuration and weight layout -----------------------------------------------------------

SIGNATURE = Signature((
    Param("hiddenDims", aliases=("hiddenSize",)), Param("numLayers", 1), Param("bidirectional", False),
    Param("recurrentOp", "lstm"), Param("axis", -1)))


def _config(attrs) -> tuple[int, int, int, str]:
    """(hidden size, layers, directions, recurrentOp) of a node's attributes."""
    kind = SIGNATURE.value(attrs, "recurrentOp")
    if kind not in GATES:
        raise ShapeMismatch(f"unknown recurrentOp '{kind}' (one of {', '.join(GATES)})")
    hidden = SIGNATURE.given(attrs, "hiddenDims")
    if isinstance(hidden, tuple):
        hidden = hidden[0] if len(hidden) == 1 else None
    if not isinstance(hidden, int) or hidden < 1:
        raise ShapeMismatch(f"hiddenDims must be a positive number, got {hidden}")
    layers = int(SIGNATURE.value(attrs, "numLayers"))
    if layers < 1:
        raise ShapeMismatch(f"numLayers must be 1 or more, got {layers}")
    return hidden, layers, 2 if SIGNATURE.value(attrs, "bidirectional") else 1, kind


def block_sizes(input_dim: int, attrs) -> list[tuple[int, int, int]]:
    """(inputDim, H, G) of each block in storage order (layer by layer, forward then backward)."""
    hidden, layers, directions, kind = _config(attrs)
    sizes = []
    for layer in range(layers):
        width = input_dim if layer == 0 else hidden * directions
        sizes += [(width, hidden, GATES[kind])] * directions
    return sizes


def num_parameters(input_dim: int, attrs) -> int:
    return sum(g * h * (i + h + 2) for i, h, g in block_sizes(input_dim, attrs))


def _blocks(blob, input_dim: int, attrs) -> list:
    """Views (W, R, bW, bR) into the flat weights, in storage order."""
    out, at = [], 0
    for i, h, g in block_sizes(input_dim, attrs):
        w = blob[at:at + i * g * h].reshape(i, g * h)
        at += i * g * h
        r = blob[at:at + h * g * h].reshape(h, g * h)
        at += h * g * h
        out.append((w, r, blob[at:at + g * h], blob[at + g * h:at + 2 * g * h]))
        at += 2 * g * h
    return out


# The helpers below convert trained parameters of the composed layers; they take the array module
# of the arrays they are given (NumPy unless told otherwise).

def pack_weights(blocks, xp=np):
    """The flat weights parameter (run-time order) from (W, R, bW, bR) blocks in storage order."""
    return xp.concatenate([xp.ravel(part) for block in blocks for part in block])


def lstm_block_from_layer(W, H, b, xp=np):
    """(W, R, bW, bR) of one direction from LSTMBlock's run-time parameters (bR zero).

    W (inputDim, 4C), H (C, 4C) and b (4C) hold CNTK's gate order i, g, f, o (the composed layer's
    Slices); the fused order is i, f, g, o.
    """
    def reorder(m):
        c = m.shape[-1] // 4
        i, g, f, o = (m[..., k * c:(k + 1) * c] for k in range(4))
        return xp.concatenate([i, f, g, o], axis=-1)

    return reorder(W), reorder(H), reorder(b), xp.zeros_like(b)


def gru_block_from_layer(W, H, Hc, b, xp=np):
    """(W, R, bW, bR) of one direction from BS.RNNs.GRU's run-time parameters: W (inputDim, 3C) and
    b (3C) in gate order z, r, n; H (C, 2C) for z and r; Hc (C, C) for the candidate; bR zero."""
    return W, xp.concatenate([H, Hc], axis=-1), b, xp.zeros_like(b)


# ---- shape rule --------------------------------------------------------------------------------

def _rnn_rule(in_shapes, attrs):
    weights, x = tuple(in_shapes[0]), tuple(in_shapes[1])
    hidden, _, directions, _ = _config(attrs)
    out = (hidden * directions,)
    count = num_parameters(num_elements(x), attrs)
    if weights and all(d > 0 for d in weights):
        if num_elements(weights) != count:
            raise ShapeMismatch(f"the weights hold {num_elements(weights)} values, but this stack needs {count} "
                                "(see the layout in OptimizedRNNStack's documentation)")
        return out
    if len(weights) <= 1:
        return ShapeResult(out, {0: (count,)})
    if len(weights) == 2:
        rows = weights[0] or hidden
        if count % rows:
            raise ShapeMismatch(f"{count} weights do not fill rows of {rows}")
        return ShapeResult(out, {0: (rows, count // rows)})
    raise ShapeMismatch("the weights parameter must have rank 1 or 2")


# ---- the cells, one direction at a time --------------------------------------------------------

def _sigmoid(x, xp):
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def _times(forward: bool, T: int):
    return range(T) if forward else range(T - 1, -1, -1)


def _lstm_forward(xw, R, m, forward, xp):
    T, N, G = xw.shape
    H = G // 4
    h = xp.zeros((N, H), dtype=xw.dtype)
    c = xp.zeros_like(h)
    gates = xp.empty_like(xw)
    cells = xp.empty((T, N, H), dtype=xw.dtype)
    h_prev = xp.empty_like(cells)
    c_prev = xp.empty_like(cells)
    out = xp.empty_like(cells)
    for t in _times(forward, T):
        a = xw[t] + xp.matmul(h, R)
        act = gates[t]
        act[:, :2 * H] = _sigmoid(a[:, :2 * H], xp)
        act[:, 2 * H:3 * H] = xp.tanh(a[:, 2 * H:3 * H])
        act[:, 3 * H:] = _sigmoid(a[:, 3 * H:], xp)
        i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
        h_prev[t], c_prev[t] = h, c
        c = (f * c + i * g) * m[t]
        cells[t] = c
        h = o * xp.tanh(c) * m[t]
        out[t] = h
    return out, (gates, cells, h_prev, c_prev)


def _lstm_backward(gy, R, m, forward, cache, xp):
    gates, cells, h_prev, c_prev = cache
    T, N, G = gates.shape
    H = G // 4
    dxw = xp.empty_like(gates)
    dh_next = xp.zeros((N, H), dtype=gy.dtype)
    dc_next = xp.zeros_like(dh_next)
    for t in reversed(list(_times(forward, T))):
        act = gates[t]
        i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
        tc = xp.tanh(cells[t])
        dh = (gy[t] + dh_next) * m[t]
        dc = dc_next * m[t] + dh * o * (1.0 - tc * tc)
        da = dxw[t]
        da[:, :H] = dc * g * i * (1.0 - i)
        da[:, H:2 * H] = dc * c_prev[t] * f * (1.0 - f)
        da[:, 2 * H:3 * H] = dc * i * (1.0 - g * g)
        da[:, 3 * H:] = dh * tc * o * (1.0 - o)
        dc_next = dc * f
        dh_next = xp.matmul(da, R.T)
    return dxw, xp.matmul(_flat(h_prev).T, _flat(dxw))


def _gru_forward(xw, R, m, forward, xp):
    T, N, G = xw.shape
    H = G // 3
    h = xp.zeros((N, H), dtype=xw.dtype)
    gates = xp.empty_like(xw)                          # z, r, n after their nonlinearities
    h_prev = xp.empty((T, N, H), dtype=xw.dtype)
    reset_h = xp.empty_like(h_prev)
    out = xp.empty_like(h_prev)
    for t in _times(forward, T):
        zr = xw[t, :, :2 * H] + xp.matmul(h, R[:, :2 * H])
        act = gates[t]
        act[:, :2 * H] = _sigmoid(zr, xp)
        z, r = act[:, :H], act[:, H:2 * H]
        h_prev[t] = h
        reset_h[t] = r * h
        act[:, 2 * H:] = xp.tanh(xw[t, :, 2 * H:] + xp.matmul(reset_h[t], R[:, 2 * H:]))
        h = ((1.0 - z) * act[:, 2 * H:] + z * h) * m[t]
        out[t] = h
    return out, (gates, h_prev, reset_h)


def _gru_backward(gy, R, m, forward, cache, xp):
    gates, h_prev, reset_h = cache
    T, N, G = gates.shape
    H = G // 3
    dxw = xp.empty_like(gates)
    dh_next = xp.zeros((N, H), dtype=gy.dtype)
    for t in reversed(list(_times(forward, T))):
        act = gates[t]
        z, r, n = act[:, :H], act[:, H:2 * H], act[:, 2 * H:]
        dh = (gy[t] + dh_next) * m[t]
        da = dxw[t]
        da[:, 2 * H:] = dh * (1.0 - z) * (1.0 - n * n)
        d_reset_h = xp.matmul(da[:, 2 * H:], R[:, 2 * H:].T)
        da[:, :H] = dh * (h_prev[t] - n) * z * (1.0 - z)
        da[:, H:2 * H] = d_reset_h * h_prev[t] * r * (1.0 - r)
        dh_next = dh * z + d_reset_h * r + xp.matmul(da[:, :2 * H], R[:, :2 * H].T)
    d_r = xp.concatenate([xp.matmul(_flat(h_prev).T, _flat(dxw[:, :, :2 * H])),
                          xp.matmul(_flat(reset_h).T, _flat(dxw[:, :, 2 * H:]))], axis=1)
    return dxw, d_r


def _rnn_forward(relu: bool):
    def forward(xw, R, m, forward_in_time, xp):
        T, N, H = xw.shape
        h = xp.zeros((N, H), dtype=xw.dtype)
        h_prev = xp.empty_like(xw)
        out = xp.empty_like(xw)
        for t in _times(forward_in_time, T):
            a = xw[t] + xp.matmul(h, R)
            h_prev[t] = h
            h = (xp.maximum(a, 0) if relu else xp.tanh(a)) * m[t]
            out[t] = h
        return out, (out, h_prev)
    return forward


def _rnn_backward(relu: bool):
    def backward(gy, R, m, forward_in_time, cache, xp):
        out, h_prev = cache
        T = out.shape[0]
        dxw = xp.empty_like(out)
        dh_next = xp.zeros_like(out[0])
        for t in reversed(list(_times(forward_in_time, T))):
            dh = (gy[t] + dh_next) * m[t]
            da = dxw[t]
            da[...] = dh * (out[t] > 0) if relu else dh * (1.0 - out[t] * out[t])
            dh_next = xp.matmul(da, R.T)
        return dxw, xp.matmul(_flat(h_prev).T, _flat(dxw))
    return backward


CELLS = {
    "lstm": (_lstm_forward, _lstm_backward),
    "gru": (_gru_forward, _gru_backward),
    "rnnTanh": (_rnn_forward(False), _rnn_backward(False)),
    "rnnReLU": (_rnn_forward(True), _rnn_backward(True)),
}


# ---- the LSTM cell on the GPU ------------------------------------------------------------------
#
# One step is two launches: the recurrent product h·R (cuBLAS through the array module) and one
# kernel that adds the input projection, applies the gates, updates c and h under the step mask and
# keeps what backward needs. Backward per step: one kernel for the gate gradients, one product for
# the gradient flowing to the previous h. The arithmetic is the NumPy cell's, operation by operation.

LSTM_SOURCE = r"""
__device__ __forceinline__ T sigmoid(T a) { return (T)0.5 * ((T)1 + tanh((T)0.5 * a)); }

extern "C" __global__ void lstm_step(const T* xw, const T* hr, const T* m, T* gates, T* h, T* c, T* h_prev,
                                     T* c_prev, T* cells, T* out, long long N, long long H) {
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < N * H; k += (long long)blockDim.x * gridDim.x) {
        const long long n = k / H, j = k % H, row = n * 4 * H;
        const T i = sigmoid(xw[row + j] + hr[row + j]);
        const T f = sigmoid(xw[row + H + j] + hr[row + H + j]);
        const T g = tanh(xw[row + 2 * H + j] + hr[row + 2 * H + j]);
        const T o = sigmoid(xw[row + 3 * H + j] + hr[row + 3 * H + j]);
        gates[row + j] = i; gates[row + H + j] = f; gates[row + 2 * H + j] = g; gates[row + 3 * H + j] = o;
        const T keep = m[n];
        h_prev[k] = h[k];
        c_prev[k] = c[k];
        const T cn = (f * c[k] + i * g) * keep;
        const T hn = o * tanh(cn) * keep;
        c[k] = cn;
        cells[k] = cn;
        h[k] = hn;
        out[k] = hn;
    }
}

extern "C" __global__ void lstm_step_backward(const T* gy, const T* gates, const T* cells, const T* c_prev,
                                              const T* m, const T* dh_next, T* dc_next, T* da, long long N, long long H) {
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < N * H; k += (long long)blockDim.x * gridDim.x) {
        const long long n = k / H, j = k % H, row = n * 4 * H;
        const T i = gates[row + j], f = gates[row + H + j], g = gates[row + 2 * H + j], o = gates[row + 3 * H + j];
        const T keep = m[n];
        const T tc = tanh(cells[k]);
        const T dh = (gy[k] + dh_next[k]) * keep;
        const T dc = dc_next[k] * keep + dh * o * ((T)1 - tc * tc);
        da[row + j] = dc * g * i * ((T)1 - i);
        da[row + H + j] = dc * c_prev[k] * f * ((T)1 - f);
        da[row + 2 * H + j] = dc * i * ((T)1 - g * g);
        da[row + 3 * H + j] = dh * tc * o * ((T)1 - o);
        dc_next[k] = dc * f;
    }
}
"""


def _gpu_lstm_forward(kernels):
    def forward(xw, R, m, forward_in_time, xp):
        T, N, G = xw.shape
        H = G // 4
        xw = xp.ascontiguousarray(xw)
        m = xp.ascontiguousarray(m)
        h = xp.zeros((N, H), dtype=xw.dtype)
        c = xp.zeros_like(h)
        hr = xp.empty((N, G), dtype=xw.dtype)
        gates = xp.empty_like(xw)
        cells, h_prev, c_prev, out = (xp.empty((T, N, H), dtype=xw.dtype) for _ in range(4))
        for t in _times(forward_in_time, T):
            xp.matmul(h, R, out=hr)
            kernels.launch(LSTM_SOURCE, "lstm_step", xw.dtype, N * H,
                           (xw[t], hr, m[t], gates[t], h, c, h_prev[t], c_prev[t], cells[t], out[t],
                            np.int64(N), np.int64(H)))
        return out, (gates, cells, h_prev, c_prev)
    return forward


def _gpu_lstm_backward(kernels):
    def backward(gy, R, m, forward_in_time, cache, xp):
        gates, cells, h_prev, c_prev = cache
        T, N, G = gates.shape
        H = G // 4
        gy = xp.ascontiguousarray(gy)
        m = xp.ascontiguousarray(m)
        dxw = xp.empty_like(gates)
        dh_next = xp.zeros((N, H), dtype=gy.dtype)
        dc_next = xp.zeros_like(dh_next)
        for t in reversed(list(_times(forward_in_time, T))):
            kernels.launch(LSTM_SOURCE, "lstm_step_backward", gy.dtype, N * H,
                           (gy[t], gates[t], cells[t], c_prev[t], m[t], dh_next, dc_next, dxw[t],
                            np.int64(N), np.int64(H)))
            xp.matmul(dxw[t], R.T, out=dh_next)
        return dxw, xp.matmul(_flat(h_prev).T, _flat(dxw))
    return backward


def _gpu_cells(ctx) -> dict:
    """The cells on the CuPy backend: the fused LSTM cell, the others as on the CPU."""
    kernels = ctx.backend.kernels
    return {**CELLS, "lstm": (_gpu_lstm_forward(kernels), _gpu_lstm_backward(kernels))}


def _cpu_cells(ctx) -> dict:
    return CELLS


def _flat(a):
    return a.reshape(-1, a.shape[-1])


# ---- the op ------------------------------------------------------------------------------------

def _sequence_input(ctx, x):
    """The input as (T, N, inputDim) and the (T, N, 1) step mask; a batch is one step per sequence."""
    if ctx.dyn[1] < 2:
        x = x[None]
    mask = valid_steps(ctx, x) if ctx.dyn[1] == 2 else ctx.xp.ones(x.shape[:2], dtype=bool)
    return x.reshape(x.shape[:2] + (-1,)), mask.astype(x.dtype)[..., None]


def _rnn_stack_forward(ctx, xs, attrs, cells=_cpu_cells):
    weights, x = xs
    xp = ctx.xp
    _, _, directions, kind = _config(attrs)
    cell_forward = cells(ctx)[kind][0]
    layer_in, m = _sequence_input(ctx, x)
    T, N = layer_in.shape[:2]
    blocks = _blocks(weights.reshape(-1), layer_in.shape[-1], attrs)
    tape = []
    for first in range(0, len(blocks), directions):
        outs = []
        for d in range(directions):
            W, R, b_input, b_recurrent = blocks[first + d]
            xw = (xp.matmul(_flat(layer_in), W) + b_input + b_recurrent).reshape(T, N, -1)
            out, cache = cell_forward(xw, R, m, d == 0, xp)
            outs.append(out)
            tape.append((layer_in, cache))
        layer_in = outs[0] if directions == 1 else xp.concatenate(outs, axis=-1)
    ctx.saved["tape"] = tape
    return layer_in if ctx.dyn[1] == 2 else layer_in[0]


def _rnn_stack_backward(ctx, xs, y, gy, attrs, cells=_cpu_cells):
    weights, x = xs
    xp = ctx.xp
    hidden, _, directions, kind = _config(attrs)
    cell_backward = cells(ctx)[kind][1]
    tape = ctx.saved.get("tape")
    if tape is None:
        _rnn_stack_forward(ctx, xs, attrs, cells)
        tape = ctx.saved["tape"]
    inputs, m = _sequence_input(ctx, x)
    grad_w = xp.zeros(weights.size, dtype=weights.dtype)
    g_views = _blocks(grad_w, inputs.shape[-1], attrs)
    g_out = gy if ctx.dyn[1] == 2 else gy[None]
    for first in reversed(range(0, len(tape), directions)):
        g_in = None
        for d in range(directions):
            layer_in, cache = tape[first + d]
            W, R, _, _ = _blocks(weights.reshape(-1), inputs.shape[-1], attrs)[first + d]
            dxw, d_r = cell_backward(g_out[..., d * hidden:(d + 1) * hidden], R, m, d == 0, cache, xp)
            gw, gr, gb_input, gb_recurrent = g_views[first + d]
            gw[...] = xp.matmul(_flat(layer_in).T, _flat(dxw))
            gr[...] = d_r
            gb_input[...] = dxw.sum(axis=(0, 1))
            gb_recurrent[...] = gb_input
            g = xp.matmul(_flat(dxw), W.T).reshape(layer_in.shape)
            g_in = g if g_in is None else g_in + g
        g_out = g_in
    g_x = g_out.reshape(x.shape) if ctx.dyn[1] == 2 else g_out[0].reshape(x.shape)
    return [grad_w.reshape(weights.shape), g_x]


def _checks():
    w, x = InputSpec((0,), 0, low=-0.5, high=0.5), InputSpec((3,), 2)
    return [
        OpCheck((w, x), attrs={"hiddenDims": 2}, out=(2,)),
        OpCheck((w, x), attrs={"hiddenDims": 2, "recurrentOp": "gru"}, out=(2,)),
        OpCheck((w, x), attrs={"hiddenDims": 2, "recurrentOp": "rnnTanh", "numLayers": 2,
                               "bidirectional": True}, out=(4,)),
        OpCheck((w, x), attrs={"hiddenDims": 2, "recurrentOp": "rnnReLU"}, out=(2,)),
        OpCheck((InputSpec((2, 0), 0, low=-0.5, high=0.5), InputSpec((2, 2), 2)),
                attrs={"hiddenDims": 2, "bidirectional": True}, out=(4,)),
        OpCheck((w, InputSpec((3,), 1)), attrs={"hiddenDims": 2}, out=(2,)),
    ]


register(OpDef(
    name="OptimizedRNNStack", arity=(2, 2), shape=_rnn_rule, forward=_rnn_stack_forward,
    backward=_rnn_stack_backward, layout=lambda inputs, attrs: getattr(inputs[1], "layout", inputs[1]),
    kernels={"cupy": (lambda ctx, xs, attrs: _rnn_stack_forward(ctx, xs, attrs, _gpu_cells),
                      lambda ctx, xs, y, gy, attrs: _rnn_stack_backward(ctx, xs, y, gy, attrs, _gpu_cells))},
    signature=SIGNATURE, whole_sequence=True,
    truncation_unsafe=(
        "truncated BPTT cannot carry the state of the fused OptimizedRNNStack '{name}' across minibatches",
        ("use the composed layers (RecurrentLSTMLayer, BS.RNNs.RecurrentLSTMPStack …), which carry it, or "
         "truncated = false")),
    doc="a stack of lstm | gru | rnnTanh | rnnReLU layers (optionally bidirectional), fused; "
        "weights in one parameter (layout in runtime/ops/rnn.py)",
    checks=_checks(),
))
