"""Forward results of the core ops against NumPy references written directly here.

References are written in BrainScript index order: a value with BS sample shape (d1, d2) is a NumPy
array indexed [n, i1, i2] (dynamic axes first, then the BS axes in BS order). `to_rm` turns that into
the kernels' row-major layout (sample axes reversed), `from_rm` turns results back. Kernels are run
through `registry.apply_forward`, as the executor runs them.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from netlang.errors import ConfigError
from netlang.ir.shapes import to_bs
from netlang.ops import registry
from netlang.ops.registry import OpContext, ShapeMismatch, ShapeResult
from netlang.runtime.backend import cpu_backend

rng = np.random.default_rng(7)
CPU = cpu_backend()


def to_rm(bs, dyn):
    """BS-ordered array -> row-major kernel array (reverse the sample axes)."""
    bs = np.asarray(bs)
    return bs.transpose(tuple(range(dyn)) + tuple(reversed(range(dyn, bs.ndim))))


from_rm = to_rm      # reversing the sample axes is its own inverse


def shape_of(name, shapes, attrs=None):
    return registry.get(name).shape([tuple(s) for s in shapes], dict(attrs or {}))


def run(name, inputs, attrs=None, training=False, mask=None, options=None, state=None, rng_seed=0):
    """Run op `name` on [(BS-ordered array, dyn), ...]; returns (BS-ordered output, ctx)."""
    op = registry.get(name)
    attrs = dict(attrs or {})
    dyns = [d for _, d in inputs]
    xs = [np.ascontiguousarray(to_rm(a, d)) for a, d in inputs]
    rule = op.shape([to_bs(x.shape[d:]) for x, d in zip(xs, dyns)], attrs)
    out = rule.out if isinstance(rule, ShapeResult) else rule
    out_dyn = 0 if op.layout == "none" else (op.layout(dyns, attrs) if callable(op.layout) else max(dyns))
    ctx = OpContext(backend=CPU, dyn=dyns, out_dyn=out_dyn, training=training, rng=CPU.random_stream(rng_seed),
                    mask=mask, state={} if state is None else state, options=dict(options or {}))
    y = registry.apply_forward(op, ctx, xs, attrs, len(out))
    return from_rm(y, out_dyn), ctx


def softmax_ref(z):
    e = np.exp(z - z.max())
    return e / e.sum()


# ---- Times -------------------------------------------------------------------------------------

def test_times_matrix_vector_batch():
    w, x = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    y, _ = run("Times", [(w, 0), (x, 1)])
    np.testing.assert_allclose(y, np.einsum("oi,ni->no", w, x))


def test_times_output_rank_2():
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4, 6))
    y, _ = run("Times", [(a, 0), (b, 1)], {"outputRank": 2})
    np.testing.assert_allclose(y, np.einsum("ijk,nkl->nijl", a, b))


def test_times_reduces_all_trailing_axes_of_a():
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 3, 4, 6))
    y, _ = run("Times", [(a, 0), (b, 1)])
    np.testing.assert_allclose(y, np.einsum("ijk,njkl->nil", a, b))


def test_times_infer_input_rank_to_map_0_flattens_the_input():
    assert shape_of("Times", [(4, 0), (2, 3, 5)], {"inferInputRankToMap": 0}).infer == {0: (4, 2, 3, 5)}
    a, x = rng.standard_normal((4, 2, 3, 5)), rng.standard_normal((3, 2, 3, 5))
    y, _ = run("Times", [(a, 0), (x, 1)], {"inferInputRankToMap": 0})
    np.testing.assert_allclose(y, np.einsum("oijk,nijk->no", a, x))


def test_times_default_infers_only_the_first_axis():
    result = shape_of("Times", [(4, 0), (2, 3, 5)])
    assert result.out == (4, 3, 5) and result.infer == {0: (4, 2)}


def test_times_infer_input_rank_to_map_1_keeps_the_last_axis():
    result = shape_of("Times", [(4, 0), (2, 3, 5)], {"inferInputRankToMap": 1})
    assert result.out == (4, 5) and result.infer == {0: (4, 2, 3)}


def test_times_legacy_flattens_leading_axes_of_b():
    a, x = rng.standard_normal((4, 6)), rng.standard_normal((2, 2, 3, 5))
    y, _ = run("Times", [(a, 0), (x, 1)])
    flat = x.transpose(0, 3, 2, 1).reshape(2, 5, 6)       # BS (2 x 3) -> 6, first axis fastest
    np.testing.assert_allclose(y, np.einsum("oi,nmi->nom", a, flat))


def test_times_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeMismatch, match=r"\[4 x 3\] and \[5\]"):
        shape_of("Times", [(4, 3), (5,)])


def test_times_accepts_a_dynamic_first_operand_as_cntk_does():
    # (This used to be rejected; CNTK multiplies sample by sample, issue 14.)
    static, batch = SimpleNamespace(layout=None), SimpleNamespace(layout="batch-axis")
    assert registry.get("Times").layout([batch, static], {}) == "batch-axis"
    assert registry.get("Times").layout([batch, batch], {}) == "batch-axis"


def test_times_rejects_operands_on_different_dynamic_axes():
    with pytest.raises(ShapeMismatch, match="both operands have dynamic axes"):
        registry.get("Times").layout([1, 2], {})


def test_times_of_a_dynamic_first_operand_is_taken_sample_by_sample():
    a, b = rng.standard_normal((3, 2, 4)), rng.standard_normal((4, 5))   # 3 samples of BS [2 x 4]; B [4 x 5]
    y, _ = run("Times", [(a, 1), (b, 0)])
    np.testing.assert_allclose(y, np.einsum("nik,kj->nij", a, b))


def test_transpose_times_of_two_vectors_is_their_dot_product():
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    y, _ = run("TransposeTimes", [(a, 1), (b, 1)])
    np.testing.assert_allclose(y.reshape(3), (a * b).sum(axis=1))


def test_times_layout_is_the_second_operands_for_nodes():
    static, batch = SimpleNamespace(layout=None), SimpleNamespace(layout="batch-axis")
    assert registry.get("Times").layout([static, batch], {}) == "batch-axis"


def test_transpose_times_is_a_transposed_product():
    a, x = rng.standard_normal((3, 4)), rng.standard_normal((2, 3))
    y, _ = run("TransposeTimes", [(a, 0), (x, 1)])
    np.testing.assert_allclose(y, np.einsum("io,ni->no", a, x))


def test_transpose_times_rejects_rank_3():
    with pytest.raises(ShapeMismatch, match="rank 1 or 2"):
        shape_of("TransposeTimes", [(2, 3, 4), (2,)])


# ---- Softmax family ----------------------------------------------------------------------------

def test_softmax_over_all_sample_elements():
    z = rng.standard_normal((3, 4, 2))
    y, _ = run("Softmax", [(z, 1)])
    expected = np.stack([softmax_ref(s.ravel(order="F")).reshape(s.shape, order="F") for s in z])
    np.testing.assert_allclose(y, expected)


def test_log_softmax_matches_log_of_softmax():
    z = rng.standard_normal((3, 5))
    y, _ = run("LogSoftmax", [(z, 1)])
    np.testing.assert_allclose(y, np.log(np.stack([softmax_ref(s) for s in z])))


def test_softmax_is_stable_for_large_logits_in_float32():
    z = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    y, _ = run("Softmax", [(z, 1)])
    assert np.all(np.isfinite(y)) and y.dtype == np.float32
    np.testing.assert_allclose(y, [[1.0, 0.0, 0.0]])


def test_hardmax_marks_the_first_maximum():
    z = np.array([[0.1, 0.7, 0.7, 0.2]])
    y, _ = run("Hardmax", [(z, 1)])
    np.testing.assert_array_equal(y, [[0, 1, 0, 0]])


# ---- criteria ----------------------------------------------------------------------------------

def onehot(classes, depth):
    return np.eye(depth)[classes]


def test_cross_entropy_with_softmax_matches_reference():
    z, labels = rng.standard_normal((4, 5)), onehot([0, 3, 4, 1], 5)
    y, _ = run("CrossEntropyWithSoftmax", [(labels, 1), (z, 1)])
    expected = -sum(np.sum(l * np.log(softmax_ref(s))) for l, s in zip(labels, z))
    assert y.shape == (1,)
    np.testing.assert_allclose(y[0], expected)


def test_cross_entropy_with_softmax_skips_padded_steps():
    z = rng.standard_normal((3, 2, 4))                       # T=3, N=2
    labels = onehot(rng.integers(0, 4, (3, 2)), 4)
    mask = np.array([[True, True], [True, True], [True, False]])
    y, _ = run("CrossEntropyWithSoftmax", [(labels, 2), (z, 2)], mask=mask)
    expected = -sum(np.sum(labels[t, n] * np.log(softmax_ref(z[t, n])))
                    for t in range(3) for n in range(2) if mask[t, n])
    np.testing.assert_allclose(y[0], expected)


def test_cross_entropy_with_softmax_gradient_is_softmax_minus_label():
    z, labels = rng.standard_normal((2, 3)), onehot([2, 0], 3)
    op = registry.get("CrossEntropyWithSoftmax")
    y, ctx = run("CrossEntropyWithSoftmax", [(labels, 1), (z, 1)])
    grads = registry.apply_backward(op, ctx, [labels, z], y, np.ones(1), {}, 1)
    assert grads[0] is None
    np.testing.assert_allclose(grads[1], np.stack([softmax_ref(s) for s in z]) - labels)


def test_classification_error_top1_counts_wrong_argmax():
    z = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = onehot([1, 0, 0, 2], 3)
    y, _ = run("ClassificationError", [(labels, 1), (z, 1)])
    expected = sum(np.argmax(s) != np.argmax(l) for s, l in zip(z, labels))
    assert y[0] == expected == 2


def test_classification_error_top3_counts_label_outside_three_best():
    z = rng.standard_normal((6, 5))
    classes = np.array([0, 1, 2, 3, 4, 0])
    y, _ = run("ClassificationError", [(onehot(classes, 5), 1), (z, 1)], {"topN": 3})
    expected = sum(c not in np.argsort(-s)[:3] for s, c in zip(z, classes))
    assert y[0] == expected


def test_classification_error_takes_top_n_from_a_third_input():
    z = rng.standard_normal((6, 5))
    labels = onehot([4, 3, 2, 1, 0, 0], 5)
    by_attr, _ = run("ClassificationError", [(labels, 1), (z, 1)], {"topN": 2})
    by_input, _ = run("ClassificationError", [(labels, 1), (z, 1), (np.array([2.0]), 0)])
    assert by_attr[0] == by_input[0]


def test_cross_entropy_matches_reference():
    p = rng.uniform(0.1, 1.0, (3, 4))
    labels = onehot([1, 2, 3], 4)
    y, _ = run("CrossEntropy", [(labels, 1), (p, 1)])
    np.testing.assert_allclose(y[0], -np.sum(labels * np.log(p)))


def test_square_error_sums_squared_differences():
    a, b = rng.standard_normal((3, 2, 2)), rng.standard_normal((3, 2, 2))
    y, _ = run("SquareError", [(a, 1), (b, 1)])
    np.testing.assert_allclose(y[0], np.sum((a - b) ** 2))


def test_weighted_logistic_matches_reference():
    labels = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    p = rng.uniform(0.1, 0.9, (3, 2))
    w = np.array([[0.5], [2.0], [1.0]])
    y, _ = run("Logistic", [(labels, 1), (p, 1), (w, 1)])
    expected = -np.sum(w * (labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    np.testing.assert_allclose(y[0], expected)


def test_matrix_l1_and_l2_regularisers():
    m = rng.standard_normal((3, 4))
    l1, _ = run("MatrixL1Reg", [(m, 0)])
    l2, _ = run("MatrixL2Reg", [(m, 0)])
    np.testing.assert_allclose(l1[0], np.abs(m).sum())
    np.testing.assert_allclose(l2[0], np.sqrt((m ** 2).sum()))


def test_cos_distance_is_per_sample_cosine():
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    y, _ = run("CosDistance", [(a, 1), (b, 1)])
    expected = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(y, expected[:, None])


# ---- reductions --------------------------------------------------------------------------------

REDUCE_REF = {
    "Sum": lambda x, axis: x.sum(axis=axis, keepdims=True),
    "Mean": lambda x, axis: x.mean(axis=axis, keepdims=True),
    "Max": lambda x, axis: x.max(axis=axis, keepdims=True),
    "Min": lambda x, axis: x.min(axis=axis, keepdims=True),
    "LogSum": lambda x, axis: np.log(np.exp(x).sum(axis=axis, keepdims=True)),
}


@pytest.mark.parametrize("op", sorted(REDUCE_REF))
@pytest.mark.parametrize("axis", [1, 2, 3])
def test_reduce_elements_on_each_axis(op, axis):
    x = rng.standard_normal((2, 3, 4, 5))                    # batch of BS (3 x 4 x 5)
    y, _ = run("ReduceElements", [(x, 1)], {"reductionOp": op, "axis": axis})
    np.testing.assert_allclose(y, REDUCE_REF[op](x, axis))


@pytest.mark.parametrize("op", sorted(REDUCE_REF))
def test_reduce_over_all_static_axes_gives_shape_1(op):
    x = rng.standard_normal((2, 3, 4))
    y, _ = run(f"Reduce{op}", [(x, 1)], {"axis": None})
    np.testing.assert_allclose(y, REDUCE_REF[op](x.reshape(2, -1), 1))


def test_reduce_log_sum_is_stable():
    x = np.array([[1000.0, 1000.0]])
    y, _ = run("ReduceLogSum", [(x, 1)], {"axis": 1})
    np.testing.assert_allclose(y, [[1000.0 + np.log(2.0)]])


def test_reduce_max_gradient_goes_to_the_argmax():
    x = np.array([[0.2, 0.9, 0.1]])
    op = registry.get("ReduceMax")
    y, ctx = run("ReduceMax", [(x, 1)], {"axis": 1})
    (g,) = registry.apply_backward(op, ctx, [to_rm(x, 1)], to_rm(y, 1), np.array([[2.0]]), {"axis": 1}, 1)
    np.testing.assert_array_equal(g, [[0.0, 2.0, 0.0]])


def test_reduce_elements_rejects_unknown_operation():
    with pytest.raises(ShapeMismatch, match="did you mean 'Mean'"):
        shape_of("ReduceElements", [(3,)], {"reductionOp": "mean"})


# ---- shape ops ---------------------------------------------------------------------------------

def test_slice_with_negative_begin_and_end_zero_takes_the_tail():
    x = rng.standard_normal((2, 6, 3))
    y, _ = run("Slice", [(x, 1)], {"beginIndex": -2, "endIndex": 0, "axis": 1})
    np.testing.assert_array_equal(y, x[:, -2:, :])


def test_slice_with_negative_end_drops_the_last_elements():
    x = rng.standard_normal((2, 6, 3))
    y, _ = run("Slice", [(x, 1)], {"beginIndex": 1, "endIndex": -1, "axis": 2})
    np.testing.assert_array_equal(y, x[:, :, 1:-1])


def test_slice_out_of_range_is_a_shape_error():
    with pytest.raises(ShapeMismatch, match="dimension 6"):
        shape_of("Slice", [(6,)], {"beginIndex": 4, "endIndex": 8})


def test_splice_on_axis_1():
    a, b = rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 4, 3))
    y, _ = run("Splice", [(a, 1), (b, 1)], {"axis": 1})
    np.testing.assert_array_equal(y, np.concatenate([a, b], axis=1))


def test_splice_on_a_new_axis_stacks():
    a, b, c = (rng.standard_normal((2, 3)) for _ in range(3))
    y, _ = run("Splice", [(a, 1), (b, 1), (c, 1)], {"axis": 2})
    np.testing.assert_array_equal(y, np.stack([a, b, c], axis=2))


def test_splice_rejects_differing_dimensions():
    with pytest.raises(ShapeMismatch, match="dimension 2 differs"):
        shape_of("Splice", [(2, 3), (2, 4)], {"axis": 1})


def test_reshape_with_begin_and_end_axis_replaces_only_that_range():
    x = rng.standard_normal((2, 5, 2, 3, 7))                   # batch of BS (5 x 2 x 3 x 7)
    y, _ = run("Reshape", [(x, 1)], {"shape": (6,), "beginAxis": 2, "endAxis": 4})
    # BS axes 2..3 (2 x 3, first axis fastest) become one axis of 6
    expected = np.stack([s.reshape((5, 6, 7), order="F") for s in x])
    assert y.shape == (2, 5, 6, 7)
    np.testing.assert_array_equal(y, expected)


def test_reshape_infers_one_zero_dimension():
    assert shape_of("Reshape", [(4, 6)], {"shape": (3, 0)}) == (3, 8)


def test_reshape_with_wrong_element_count_is_a_shape_error():
    with pytest.raises(ShapeMismatch, match="24 elements"):
        shape_of("Reshape", [(4, 6)], {"shape": (5, 5)})


def test_transpose_dimensions_swaps_two_axes():
    x = rng.standard_normal((2, 3, 4, 5))
    y, _ = run("TransposeDimensions", [(x, 1)], {"axis1": 1, "axis2": 3})
    np.testing.assert_array_equal(y, x.transpose(0, 3, 2, 1))


# ---- elementwise -------------------------------------------------------------------------------

def test_static_vector_broadcasts_against_a_batch_of_matrices():
    bias, x = rng.standard_normal(3), rng.standard_normal((2, 3, 4))
    y, _ = run("Plus", [(bias, 0), (x, 1)])
    assert shape_of("Plus", [(3,), (3, 4)]) == (3, 4)
    np.testing.assert_allclose(y, x + bias[None, :, None])    # left-aligned: bias runs along BS axis 1


def test_broadcast_mismatch_is_a_shape_error():
    with pytest.raises(ShapeMismatch, match=r"\[3\] and \[4\]"):
        shape_of("Plus", [(3,), (4,)])


def test_inferred_dimension_adopts_the_other_operand():
    assert shape_of("ElementTimes", [(0, 4), (3, 4)]) == (3, 4)


def test_clip_takes_min_max_x_in_that_order():
    x = np.array([[-2.0, 0.3, 2.0]])
    y, _ = run("Clip", [(np.array([-1.0]), 0), (np.array([1.0]), 0), (x, 1)])
    np.testing.assert_array_equal(y, [[-1.0, 0.3, 1.0]])


def test_if_selects_then_where_condition_is_nonzero():
    cond = np.array([[1.0, 0.0, 2.0]])
    y, _ = run("If", [(cond, 1), (np.array([[1.0, 2.0, 3.0]]), 1), (np.array([[-1.0, -2.0, -3.0]]), 1)])
    np.testing.assert_array_equal(y, [[1.0, -2.0, 3.0]])


def test_comparison_outputs_zero_or_one():
    y, _ = run("GreaterEqual", [(np.array([[1.0, 2.0, 3.0]]), 1), (np.array([2.0, 2.0, 2.0]), 0)])
    np.testing.assert_array_equal(y, [[0.0, 1.0, 1.0]])


def test_round_rounds_halves_up():
    y, _ = run("Round", [(np.array([[-1.5, -0.5, 0.5, 2.5]]), 1)])
    np.testing.assert_array_equal(y, [[-1.0, 0.0, 1.0, 3.0]])


def test_sigmoid_is_stable_for_large_inputs():
    y, _ = run("Sigmoid", [(np.array([[-800.0, 0.0, 800.0]]), 1)])
    np.testing.assert_allclose(y, [[0.0, 0.5, 1.0]])


# ---- Dropout -----------------------------------------------------------------------------------

def test_dropout_is_identity_when_not_training():
    x = rng.standard_normal((4, 10))
    y, _ = run("Dropout", [(x, 1)], options={"dropoutRate": 0.5}, training=False)
    np.testing.assert_array_equal(y, x)


def test_dropout_zeroes_and_rescales_at_training():
    x = np.ones((200, 50))
    y, ctx = run("Dropout", [(x, 1)], options={"dropoutRate": 0.25}, training=True)
    assert set(np.unique(y)) == {0.0, 1.0 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.02


def test_dropout_mask_depends_only_on_the_seed():
    x = np.ones((4, 10))
    first, _ = run("Dropout", [(x, 1)], options={"dropoutRate": 0.5}, training=True, rng_seed=3)
    again, _ = run("Dropout", [(x, 1)], options={"dropoutRate": 0.5}, training=True, rng_seed=3)
    np.testing.assert_array_equal(first, again)


def test_dropout_backward_uses_the_forward_mask():
    x = rng.uniform(0.5, 1.5, (6, 8))
    op = registry.get("Dropout")
    y, ctx = run("Dropout", [(x, 1)], options={"dropoutRate": 0.5}, training=True)
    (g,) = registry.apply_backward(op, ctx, [x], y, np.ones_like(x), {}, 1)
    np.testing.assert_allclose(g, y / x)                     # the mask, scaling included


def test_dropout_backward_without_saved_mask_is_identity_at_rate_0():
    op = registry.get("Dropout")
    ctx = OpContext(backend=CPU, dyn=[1], out_dyn=1, training=True, options={"dropoutRate": 0.0})
    gy = rng.standard_normal((2, 3))
    (g,) = registry.apply_backward(op, ctx, [np.ones((2, 3))], np.ones((2, 3)), gy, {}, 1)
    np.testing.assert_array_equal(g, gy)


def test_dropout_backward_without_saved_mask_refuses_to_guess():
    op = registry.get("Dropout")
    ctx = OpContext(backend=CPU, dyn=[1], out_dyn=1, training=True, options={"dropoutRate": 0.5})
    with pytest.raises(RuntimeError, match="mask saved by forward"):
        registry.apply_backward(op, ctx, [np.ones((2, 3))], np.ones((2, 3)), np.ones((2, 3)), {}, 1)


def test_dropout_rate_of_one_is_a_config_error():
    with pytest.raises(ConfigError, match="dropoutRate"):
        run("Dropout", [(np.ones((2, 3)), 1)], options={"dropoutRate": 1.0}, training=True)


# ---- statistics --------------------------------------------------------------------------------

def precompute(name, batches, mask=None):
    """Run a precompute pass over `batches` (BS-ordered, batch layout), finalize, return the state."""
    op, state = registry.get(name), {}
    for batch in batches:
        run(name, [(batch, 1)], options={"precompute_pass": True}, state=state)
    op.finalize(state, np)
    return state


def test_mean_and_inv_std_dev_over_a_precompute_pass():
    data = rng.normal(3.0, 2.0, (30, 4))
    batches = [data[:10], data[10:17], data[17:]]
    mean_state, isd_state = precompute("Mean", batches), precompute("InvStdDev", batches)
    x = rng.standard_normal((2, 4))
    mean, _ = run("Mean", [(x, 1)], state=mean_state)
    inv_std, _ = run("InvStdDev", [(x, 1)], state=isd_state)
    np.testing.assert_allclose(mean, data.mean(axis=0))
    np.testing.assert_allclose(inv_std, 1.0 / data.std(axis=0))


def test_inv_std_dev_floors_zero_variance():
    state = precompute("InvStdDev", [np.full((5, 2), 7.0)])
    y, _ = run("InvStdDev", [(np.zeros((1, 2)), 1)], state=state)
    np.testing.assert_allclose(y, 1.0 / np.sqrt(1e-10))


def test_mean_ignores_padded_sequence_steps():
    x = np.array([[[1.0], [5.0]], [[3.0], [100.0]]])      # T=2, N=2; step (1, 1) is padding
    mask = np.array([[True, True], [True, False]])
    op, state = registry.get("Mean"), {}
    run("Mean", [(x, 2)], options={"precompute_pass": True}, state=state, mask=mask)
    op.finalize(state, np)
    np.testing.assert_allclose(state["value"], [3.0])


def test_per_dim_mean_var_normalization():
    x, mean, inv = rng.standard_normal((3, 4)), rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)
    y, _ = run("PerDimMeanVarNormalization", [(x, 1), (mean, 0), (inv, 0)])
    np.testing.assert_allclose(y, (x - mean) * inv)
