"""Distributed training building blocks: quantiser, aggregation, BMUF, model averaging, failures.

The quantiser is checked against a column-by-column NumPy transcription of reference/gpu.md §5.5;
the MPI tests run tests/mpi_scripts/*.py under `mpiexec -n 2` and compare with NumPy simulations.
"""
from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
from importlib.util import find_spec, module_from_spec, spec_from_file_location
from pathlib import Path

import numpy as np
import pytest
from launcher_output import reports_a_killed_rank

from netlang import launcher
from netlang.errors import ConfigError, NetlangError
from netlang.runtime.distributed import (
    BlockMomentum,
    GradientAggregator,
    LocalCommunicator,
    ModelAveraging,
    detect_launch,
    failure_guard,
    get_communicator,
    resolve_block_size,
)
from netlang.runtime.distributed import comm as comm_module
from netlang.runtime.distributed.aggregation import _buckets, _Matrix, stripe_starts
from netlang.runtime.distributed.quantization import (
    QuantizedColumns,
    column_dims,
    columns_of,
    dequantize,
    packed_size,
    quantize,
    record_size,
)
from netlang.runtime.parallel import STOP_VOTE_EVERY, _Workers
from netlang.runtime.profile import StepProfile

SCRIPTS = Path(__file__).parent / "mpi_scripts"
MPIEXEC = shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(MPIEXEC is None or find_spec("mpi4py") is None,
                               reason="mpiexec or mpi4py is not installed")


# ---- a transcription of the formulas, one column at a time ------------------------------------


def reference_column(v: np.ndarray, bits: int, zero_threshold: bool):
    """(codes, (level0, level1), reconstruction) of one column V, straight from the formulas."""
    dtype = v.dtype
    rows = v.size
    if bits == 1 and zero_threshold:
        pos, neg = v[v >= 0].astype(np.float64), v[v < 0].astype(np.float64)
        mu_pos = pos.sum() / max(pos.size, 1)
        mu_neg = neg.sum() / max(neg.size, 1)
        levels = np.array([mu_neg, mu_pos]).astype(dtype)
        codes = (v >= 0).astype(np.uint8)
        return codes, levels, np.where(codes == 1, levels[1], levels[0]).astype(dtype)
    v64 = v.astype(np.float64)
    m = v64.sum() / rows
    if bits == 1:
        d = np.abs(v64 - m).sum() / rows  # (sum_{V<m}(m-V) + sum_{V>=m}(V-m)) / M
        levels = np.array([m - d, m + d]).astype(dtype)
        codes = (v64 >= m).astype(np.uint8)
        return codes, levels, np.where(codes == 1, levels[1], levels[0]).astype(dtype)
    sigma = math.sqrt(((v64 - m) ** 2).sum() / rows)
    levels = np.array([m - 5 * sigma, m + 5 * sigma]).astype(dtype)
    lower, upper = float(levels[0]), float(levels[1])
    n_bins = 2 ** bits
    codes = np.zeros(rows, np.uint8)
    recon = np.zeros(rows, dtype)
    for i, x in enumerate(v64):
        if upper - lower > 0:
            q = math.floor((x - lower) * (n_bins / (upper - lower)))
        else:
            q = 0
        q = min(max(q, 0), n_bins - 1)
        codes[i] = q
        recon[i] = lower + (q + 0.5) * ((upper - lower) / n_bins)
    return codes, levels, recon


def reference_quantize(values: np.ndarray, residual: np.ndarray, bits: int, zero_threshold: bool):
    """Levels, reconstruction and new residual of a (cols, rows) matrix, column by column."""
    v = values + residual
    levels = np.zeros((v.shape[0], 2), v.dtype)
    recon = np.zeros_like(v)
    for c in range(v.shape[0]):
        _, levels[c], recon[c] = reference_column(v[c], bits, zero_threshold)
    return levels, recon, v - recon


def random_columns(rng, cols=13, rows=37, dtype=np.float32):
    return rng.standard_normal((cols, rows)).astype(dtype)


# ---- the quantiser --------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("zero_threshold", [True, False])
def test_quantizer_and_residual_equal_the_reference_formulas(bits, zero_threshold):
    rng = np.random.default_rng(bits)
    values = random_columns(rng)
    residual = random_columns(rng) * np.float32(0.3)
    ref_levels, ref_recon, ref_residual = reference_quantize(values, residual, bits, zero_threshold)

    q = quantize(values, residual, bits, zero_threshold)

    np.testing.assert_array_equal(q.levels, ref_levels)
    np.testing.assert_array_equal(dequantize(q), ref_recon)
    np.testing.assert_array_equal(residual, ref_residual)


@pytest.mark.parametrize("bits", [1, 4])
def test_quantizer_agrees_with_the_reference_to_rounding_in_double_precision(bits):
    # float64 column sums are not exact, so summation order (which differs) shows in the last bit
    rng = np.random.default_rng(7)
    values = random_columns(rng, dtype=np.float64)
    residual = np.zeros_like(values)
    ref_levels, ref_recon, ref_residual = reference_quantize(values, residual, bits, True)
    q = quantize(values, residual, bits, True)
    np.testing.assert_allclose(dequantize(q), ref_recon, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(residual, ref_residual, rtol=1e-13, atol=1e-14)


def test_one_bit_codes_are_the_signs_with_zero_threshold():
    v = np.array([[-2.0, 0.0, 3.0, -1.0, 5.0]], np.float32)
    q = quantize(v, np.zeros_like(v), 1, True)
    mean_pos = np.float32(8 / 3)  # (0 + 3 + 5) / 3; zero counts as non-negative
    np.testing.assert_array_equal(dequantize(q), [[-1.5, mean_pos, mean_pos, -1.5, mean_pos]])


def test_one_bit_empty_group_reconstructs_to_zero():
    v = np.array([[1.0, 2.0, 3.0]], np.float32)  # no negative entries
    q = quantize(v, np.zeros_like(v), 1, True)
    assert q.levels[0, 0] == 0.0 and q.levels[0, 1] == 2.0


def test_k_bit_constant_column_reconstructs_exactly():
    v = np.full((2, 9), 0.625, np.float32)
    residual = np.zeros_like(v)
    q = quantize(v, residual, 4, True)
    np.testing.assert_array_equal(dequantize(q), v)
    assert not residual.any()


def test_error_feedback_delivers_every_gradient_component_eventually():
    """Sum of what was transmitted + the last residual = sum of all gradients (telescoping)."""
    rng = np.random.default_rng(3)
    residual = np.zeros((5, 40), np.float64)
    sent = np.zeros_like(residual)
    total = np.zeros_like(residual)
    for _ in range(20):
        g = rng.standard_normal(residual.shape)
        total += g
        sent += dequantize(quantize(g, residual, 1, True))
    np.testing.assert_allclose(sent + residual, total, atol=1e-12)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_packed_size_is_k_bits_per_value_plus_two_floats_per_column(bits):
    rows, cols = 200, 31
    q = quantize(np.ones((cols, rows), np.float32), np.zeros((cols, rows), np.float32), bits)
    expected = cols * (math.ceil(rows * bits / 8) + 2 * 4)
    assert q.to_bytes().size == q.nbytes == packed_size(rows, cols, bits, np.float32) == expected


def test_one_bit_column_of_n_values_takes_ceil_n_over_8_bytes_plus_two_floats():
    for n in (1, 7, 8, 9, 200):
        assert packed_size(n, 1, 1, np.float32) == math.ceil(n / 8) + 8
        assert packed_size(n, 1, 1, np.float64) == math.ceil(n / 8) + 16


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_wire_bytes_round_trip_to_the_same_values(bits):
    rng = np.random.default_rng(11)
    v = random_columns(rng, cols=6, rows=11)
    q = quantize(v, np.zeros_like(v), bits)
    back = QuantizedColumns.from_bytes(q.to_bytes(), 11, 6, bits, np.float32)
    np.testing.assert_array_equal(dequantize(back), dequantize(q))


def test_one_bit_reconstruction_is_exactly_one_of_the_two_levels_also_for_awkward_values():
    # the select works on bit patterns: signed zeros, tiny and huge levels come back unchanged
    for dtype in (np.float32, np.float64):
        v = np.array([[-0.0, 1e-30, -1e30, 3.0, -5e-40, 0.0, 7.5, -2.0, 1.0]], dtype)
        q = quantize(v, np.zeros_like(v), 1, True)
        back = dequantize(q)
        assert set(back.ravel().tolist()) <= set(q.levels.ravel().tolist())
        np.testing.assert_array_equal(back[0] == q.levels[0, 1], v[0] >= 0)


def test_records_put_each_columns_values_before_its_codes():
    rng = np.random.default_rng(4)
    v = random_columns(rng, cols=3, rows=10)
    q = quantize(v, np.zeros_like(v), 2)
    records = q.to_bytes().reshape(3, record_size(10, 2, np.float32))
    np.testing.assert_array_equal(records[:, :8].copy().view(np.float32), q.levels)
    np.testing.assert_array_equal(records[:, 8:], q.codes)
    back = QuantizedColumns.from_records(records[1:], 10, 2, np.float32)   # a range of columns
    np.testing.assert_array_equal(dequantize(back), dequantize(q)[1:])


def test_column_view_of_a_weight_has_one_cntk_column_per_input():
    w = np.zeros((784, 200), np.float32)  # BrainScript (200:784): 200 rows, 784 columns
    cols = columns_of(w)
    assert cols.shape == (784, 200) and np.shares_memory(cols, w)
    assert columns_of(np.zeros(200)).shape == (1, 200)
    assert columns_of(np.zeros(())).shape == (1, 1)


# ---- aggregation on one rank ----------------------------------------------------------------------


def test_stripes_give_the_first_ranks_one_extra_column():
    assert stripe_starts(7, 2) == (0, 4, 7)
    assert stripe_starts(1, 2) == (0, 1, 1)
    assert stripe_starts(10, 3) == (0, 4, 7, 10)


def test_full_precision_aggregation_on_one_rank_keeps_the_gradient():
    grad = np.arange(6, dtype=np.float32)
    agg = GradientAggregator(LocalCommunicator(), [(0, (2, 3))], 6, np.float32, bits=32)
    assert agg.aggregate(grad, 17) == 17
    np.testing.assert_array_equal(grad, np.arange(6))


def test_quantized_aggregation_leaves_elements_outside_the_segments_alone():
    grad = np.arange(10, dtype=np.float32)
    agg = GradientAggregator(LocalCommunicator(), [(0, (2, 3))], 10, np.float32, bits=1)
    agg.aggregate(grad, 1)
    np.testing.assert_array_equal(grad[6:], np.arange(6, 10))


def test_buckets_group_segments_from_the_last_one_and_cover_the_buffer():
    # values: 100, 30, 30, 500, 20 (and 7 elements after the last segment)
    sizes = [100, 30, 30, 500, 20]
    matrices, offset = [], 0
    for n in sizes:
        matrices.append(_Matrix(offset, n, 1))
        offset += n
    buckets, bucket_of = _buckets(matrices, offset + 7, bucket_values=64, workers=2)
    assert [[m.offset for m in b.matrices] for b in buckets] == [[660], [160], [100, 130], [0]]
    assert bucket_of == [3, 2, 2, 1, 0]
    assert [(b.start, b.stop) for b in buckets] == [(660, 687), (160, 660), (100, 160), (0, 100)]


def test_bucket_stripes_split_the_values_in_whole_columns():
    matrices = [_Matrix(0, 5, 7), _Matrix(35, 3, 1)]         # 7 columns of 5, one of 3: 38 values
    bucket = _buckets(matrices, 38, bucket_values=1000, workers=2)[0][0]
    assert bucket.cuts == [0, 4, 8]                          # 19 values each way -> 20 and 18
    assert [bucket.values_in_stripe(r) for r in (0, 1)] == [20, 18]
    # 3 ranks over columns of 10, 1 and 5 values (44 in all; shares start at 15 and 30)
    three = _buckets([_Matrix(0, 10, 3), _Matrix(30, 1, 4), _Matrix(34, 5, 2)], 44, 1000, workers=3)[0][0]
    assert three.cuts == [0, 2, 3, 9]
    assert [three.values_in_stripe(r) for r in range(3)] == [20, 10, 14]


@pytest.mark.parametrize("bits", [32, 1, 4])
@pytest.mark.parametrize("bucket_bytes, buckets", [(40, 4), (100, 2)])
def test_overlapped_aggregation_in_any_order_equals_aggregating_at_once(bits, bucket_bytes, buckets):
    rng = np.random.default_rng(8)
    segments = [(0, (5, 4)), (20, (4,)), (24, (3, 6)), (42, ())]
    whole = GradientAggregator(LocalCommunicator(), segments, 45, np.float32, bits=bits)
    bucketed = GradientAggregator(LocalCommunicator(), segments, 45, np.float32, bits=bits,
                                  bucket_bytes=bucket_bytes)
    assert len(bucketed.buckets) == buckets and len(whole.buckets) == 1
    for order in ([3, 2, 1, 0], [0, 1, 2, 3], [2, 0, 3, 1]):
        grad = rng.standard_normal(45).astype(np.float32)
        expected = grad.copy()
        whole.aggregate(expected, 3)
        bucketed.begin(grad)
        for index in order:
            bucketed.segment_ready(index)
        assert bucketed.finish(3) == 3
        np.testing.assert_array_equal(grad, expected)
        np.testing.assert_array_equal(bucketed.residual, whole.residual)


def test_overlapped_aggregation_equals_the_simulation_of_cntks_per_matrix_stripes():
    rng = np.random.default_rng(2)
    segments = [(0, (5, 4)), (20, (4,)), (24, (7, 3))]
    grads = [[rng.standard_normal(45).astype(np.float32)] for _ in range(3)]
    expected, _ = simulate_striped(grads, segments, 1, True)
    agg = GradientAggregator(LocalCommunicator(), segments, 45, np.float32, bits=1, bucket_bytes=64)
    for step, (g,) in enumerate(grads):
        x = g.copy()
        agg.begin(x)
        for index in (2, 1, 0):
            agg.segment_ready(index)
        agg.finish(1)
        np.testing.assert_array_equal(x, expected[step])


def test_aggregator_state_round_trips():
    rng = np.random.default_rng(5)
    agg = GradientAggregator(LocalCommunicator(), [(0, (3, 4))], 12, np.float32, bits=2)
    agg.aggregate(rng.standard_normal(12).astype(np.float32), 1)
    saved = agg.state()
    other = GradientAggregator(LocalCommunicator(), [(0, (3, 4))], 12, np.float32, bits=2)
    other.load_state(saved)
    np.testing.assert_array_equal(other.residual, agg.residual)
    np.testing.assert_array_equal(other.stripe_residual, agg.stripe_residual)


# ---- NumPy simulation of the striped scheme (any K) --------------------------------------------


def simulate_striped(grads_per_step, segments, bits, zero_threshold):
    """All K workers' gradients per step → the aggregate per step, residuals of every worker."""
    workers = len(grads_per_step[0])
    size = grads_per_step[0][0].size
    residual = [np.zeros(size, np.float32) for _ in range(workers)]
    stripe_res = {}  # (owner, segment index) → that owner's second residual for its columns
    results = []
    for grads in grads_per_step:
        out = np.zeros(size, np.float32)
        for s, (offset, shape) in enumerate(segments):
            n = int(np.prod(shape, dtype=np.int64))
            view = lambda a: columns_of(a[offset:offset + n].reshape(shape))  # noqa: E731
            rows = view(out).shape[1]
            deq = [dequantize(quantize(view(g), view(r), bits, zero_threshold))
                   for g, r in zip(grads, residual)]
            starts = stripe_starts(view(out).shape[0], workers)
            for owner in range(workers):
                c0, c1 = starts[owner], starts[owner + 1]
                total = deq[0][c0:c1].copy()
                for d in deq[1:]:
                    total += d[c0:c1]
                res = stripe_res.setdefault((owner, s), np.zeros((c1 - c0, rows), np.float32))
                view(out)[c0:c1] = dequantize(quantize(total, res, bits, zero_threshold))
        results.append(out)
    return results, residual


def test_one_rank_quantized_aggregation_equals_the_simulation():
    rng = np.random.default_rng(2)
    segments = [(0, (5, 4)), (20, (4,))]
    grads = [[rng.standard_normal(24).astype(np.float32)] for _ in range(3)]
    expected, _ = simulate_striped(grads, segments, 2, True)
    agg = GradientAggregator(LocalCommunicator(), segments, 24, np.float32, bits=2)
    for step, (g,) in enumerate(grads):
        x = g.copy()
        agg.aggregate(x, 1)
        np.testing.assert_array_equal(x, expected[step])


# ---- BMUF and model averaging on one rank -------------------------------------------------------


def test_block_is_due_after_block_size_over_workers_samples():
    sync = ModelAveraging(LocalCommunicator(), np.zeros(3), block_size=250)
    assert [sync.advance(100) for _ in range(3)] == [False, False, True]


def test_default_block_momentum_is_one_minus_one_over_workers_as_a_time_constant():
    class TwoRanks(LocalCommunicator):
        size = 2

    bm = BlockMomentum(TwoRanks(), np.zeros(2), block_size=1000)
    assert bm.time_constant == pytest.approx(-1000 / math.log(0.5))
    assert bm.momentum_for(1000) == pytest.approx(0.5)
    assert bm.momentum_for(2000) == pytest.approx(0.25)


def test_bmuf_on_one_worker_keeps_the_locally_trained_model():
    params = np.zeros(4)
    bm = BlockMomentum(LocalCommunicator(), params, block_size=10)
    params += np.array([1.0, -2.0, 3.0, 0.5])
    bm.sync(params)
    np.testing.assert_array_equal(params, [1.0, -2.0, 3.0, 0.5])


def test_bmuf_resets_the_learner_momentum_at_a_sync():
    momentum = np.ones(4)
    bm = BlockMomentum(LocalCommunicator(), np.zeros(4), block_size=10)
    bm.sync(np.zeros(4), momentum_buffers=[momentum])
    assert not momentum.any()


def test_bmuf_state_round_trips():
    params = np.zeros(3)
    bm = BlockMomentum(LocalCommunicator(), params, block_size=10, block_momentum_per_sync=0.3)
    params += 1.0
    bm.advance(4)
    bm.sync(params)
    bm.advance(3)
    other = BlockMomentum(LocalCommunicator(), np.zeros(3), block_size=10)
    other.load_state(bm.state())
    for name in ("model", "global_model", "delta"):
        np.testing.assert_array_equal(getattr(other, name), getattr(bm, name))
    assert other.samples_since_sync == 3


def test_block_size_comes_from_block_size_or_per_worker_size():
    assert resolve_block_size(4, block_size=1000) == 1000
    assert resolve_block_size(4, block_size_per_worker=1000) == 4000
    assert resolve_block_size(4) == 4 * 120_000


# ---- communicator selection and launch detection --------------------------------------------------


def test_no_parallel_training_gives_the_local_communicator():
    assert isinstance(get_communicator(False), LocalCommunicator)


def test_parallel_training_without_mpiexec_runs_as_one_local_worker(monkeypatch):
    for var in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    if find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed")
    assert isinstance(get_communicator(True), LocalCommunicator)


def test_parallel_training_without_mpi4py_says_how_to_install_and_launch(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mpi4py" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        get_communicator(True)
    assert "pip install 'netlang[mpi]'" in err.value.hint and "mpiexec -n K" in err.value.hint


def test_launch_is_detected_from_mpich_and_open_mpi_variables():
    assert detect_launch({"PMI_RANK": "1", "PMI_SIZE": "4"}).size == 4
    assert detect_launch({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "3"}).rank == 2
    assert detect_launch({}) is None


def test_launch_knows_the_ranks_on_this_node():
    assert detect_launch({"PMI_RANK": "0", "PMI_SIZE": "8", "MPI_LOCALNRANKS": "4"}).local_size == 4
    assert detect_launch({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "8",
                          "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}).local_size == 2
    assert detect_launch({"PMI_RANK": "0", "PMI_SIZE": "3"}).local_size == 3   # not said: all here


def test_a_worker_gets_its_share_of_the_cores_as_blas_threads(monkeypatch):
    monkeypatch.setattr(launcher, "usable_cores", lambda: 16)
    env = {"PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALNRANKS": "4"}
    assert launcher.default_worker_threads(env) == 4
    assert all(env[name] == "4" for name in launcher.THREAD_VARIABLES)
    few = {"PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALNRANKS": "32"}
    assert launcher.default_worker_threads(few) == 1


def test_thread_counts_the_user_set_are_left_alone(monkeypatch):
    env = {"PMI_RANK": "0", "PMI_SIZE": "2", "OMP_NUM_THREADS": "3"}
    assert launcher.default_worker_threads(env) is None
    assert "OPENBLAS_NUM_THREADS" not in env and env["OMP_NUM_THREADS"] == "3"
    alone = {}
    assert launcher.default_worker_threads(alone) is None and alone == {}   # not a worker of several


def test_importing_netlang_under_a_launcher_sets_the_threads_before_numpy_loads():
    env = {k: v for k, v in os.environ.items() if k not in launcher.THREAD_VARIABLES}
    env.update(PMI_RANK="0", PMI_SIZE="2", MPI_LOCALNRANKS="2")
    code = ("import sys, os, netlang; assert 'numpy' not in sys.modules; "
            "print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['OMP_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    expected = str(max(1, launcher.usable_cores() // 2))
    assert out.split() == [expected, expected]


# ---- agreeing on a stop without waiting every minibatch -----------------------------------------------


class CountingVotes(LocalCommunicator):
    """Two workers whose flags are summed: this one's and the other's (set by the test)."""

    size = 2

    def __init__(self):
        super().__init__()
        self.other = 0.0
        self.collectives = 0

    def iallreduce_sum(self, buf):
        self.collectives += 1
        buf += self.other
        return super().iallreduce_sum(buf)


def voter(comm):
    workers = object.__new__(_Workers)
    workers.comm, workers.profile = comm, StepProfile(enabled=False)
    workers._vote, workers._vote_started, workers._calls, workers._decided = None, 0, 0, False
    return workers


def test_a_stop_asked_on_one_worker_is_agreed_a_vote_later_with_one_collective_per_vote():
    comm = CountingVotes()
    workers = voter(comm)
    seen = [workers.any_rank(False) for _ in range(2 * STOP_VOTE_EVERY)]
    assert not any(seen) and comm.collectives == 2
    comm.other = 1.0     # the other worker was signalled; its flag goes into the next vote
    seen = [workers.any_rank(False) for _ in range(2 * STOP_VOTE_EVERY + 1)]
    assert seen.index(True) == STOP_VOTE_EVERY and seen.count(True) == 1


def test_the_vote_in_flight_is_counted_at_the_end_of_an_epoch_and_decides_the_next_call():
    comm = CountingVotes()
    workers = voter(comm)
    workers.any_rank(True)
    workers.end_epoch()
    assert workers._vote is None and workers.any_rank(False)


# ---- failure handling without MPI ------------------------------------------------------------------


class RecordingAbort(LocalCommunicator):
    """Two ranks as far as failure handling can tell; abort records instead of exiting."""

    size = 2
    rank = 1

    def abort(self, message, code=70):
        self.aborted = (message, code)


@pytest.mark.parametrize("exc, code", [(ConfigError("bad key"), 78), (KeyboardInterrupt(), 130),
                                       (RuntimeError("boom"), 70), (SystemExit(3), 3)])
def test_failure_guard_aborts_the_job_with_the_errors_exit_code(exc, code):
    comm = RecordingAbort()
    with failure_guard(comm):
        raise exc
    message, got = comm.aborted
    assert got == code and "rank 1 of 2 failed" in message


def test_failure_guard_lets_a_clean_exit_through():
    with pytest.raises(SystemExit):
        with failure_guard(RecordingAbort()):
            raise SystemExit(0)


def test_failure_guard_on_one_rank_reraises():
    with pytest.raises(NetlangError):
        with failure_guard(LocalCommunicator()):
            raise ConfigError("bad")


class NeverDone:
    def Test(self):
        return False


class Aborted(Exception):
    pass


def watchdog_comm(peers, timeout_s=None):
    comm = object.__new__(comm_module.MPICommunicator)
    comm.rank, comm.size, comm.peers, comm.timeout_s, comm.bytes_sent = 0, len(peers), peers, timeout_s, 0

    def abort(message, code=70):
        raise Aborted(message)

    comm.abort = abort
    return comm


def test_watchdog_aborts_naming_a_dead_peer(monkeypatch):
    monkeypatch.setattr(comm_module, "LIVENESS_INTERVAL_S", 0.01)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    comm = watchdog_comm([(os.getpid(), socket.gethostname()), (child.pid, socket.gethostname())])
    with pytest.raises(Aborted, match=rf"rank 1 \(pid {child.pid} .*\) died"):
        comm._wait(NeverDone(), "allreduce")


def test_watchdog_aborts_after_the_timeout():
    comm = watchdog_comm([(os.getpid(), socket.gethostname())] * 2, timeout_s=0.05)
    start = time.monotonic()
    with pytest.raises(Aborted, match="did not complete within 0.05 s"):
        comm._wait(NeverDone(), "barrier")
    assert time.monotonic() - start < 5


# ---- under mpiexec -n 2 -----------------------------------------------------------------------------


def run_mpi(script: str, *args, timeout=120):
    start = time.monotonic()
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(SCRIPTS / script), *args],
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - start


def collectives_script():
    """The script module itself, for its layout (the inputs come from its saved files)."""
    if "collectives_script" not in sys.modules:
        spec = spec_from_file_location("collectives_script", SCRIPTS / "collectives.py")
        module = module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["collectives_script"] = module
    return sys.modules["collectives_script"]


@pytest.fixture(scope="module")
def collectives(tmp_path_factory):
    if MPIEXEC is None or find_spec("mpi4py") is None:
        pytest.skip("mpiexec or mpi4py is not installed")
    out = tmp_path_factory.mktemp("collectives")
    proc, _ = run_mpi("collectives.py", str(out))
    assert proc.returncode == 0, proc.stderr
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mpi_allreduce_is_the_sum(collectives, dtype):
    expected = collectives[0][f"allreduce_in_{dtype}"] + collectives[1][f"allreduce_in_{dtype}"]
    for rank in collectives:
        np.testing.assert_array_equal(rank[f"allreduce_out_{dtype}"], expected)


@needs_mpi
@pytest.mark.mpi
def test_mpi_gather_scatter_and_broadcast_deliver_every_ranks_part(collectives):
    for r, rank in enumerate(collectives):
        np.testing.assert_array_equal(rank["allgather"], [[0, 1, 2], [10, 11, 12]])
        np.testing.assert_array_equal(rank["allgatherv"], [0, 0, 1, 1, 1])
        np.testing.assert_array_equal(rank["alltoallv"], [r] * (r + 1) + [10 + r] * (r + 1))
        np.testing.assert_array_equal(rank["bcast_array"], np.arange(5.0))
        assert rank["bcast_object"] == 42


@needs_mpi
@pytest.mark.mpi
def test_mpi_allreduce_counts_ring_bytes(collectives):
    # 2 ranks: a ring all-reduce sends 2 (K-1)/K of the buffer = all 4000 bytes.
    assert collectives[0]["allreduce_bytes"] == 4000


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("zero_threshold", [1, 0])
def test_mpi_striped_aggregation_equals_the_numpy_simulation(collectives, bits, zero_threshold):
    segments, _ = collectives_script().layout()
    steps = collectives_script().STEPS
    tag = f"{bits}_{zero_threshold}"
    grads = [[rank[f"agg_in_{tag}_{step}"] for rank in collectives] for step in range(steps)]
    expected, residuals = simulate_striped(grads, segments, bits, bool(zero_threshold))
    for r, rank in enumerate(collectives):
        for step in range(steps):
            np.testing.assert_array_equal(rank[f"agg_out_{tag}_{step}"], expected[step])
        np.testing.assert_array_equal(rank[f"agg_residual_{tag}"], residuals[r])


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("bits", [1, 2, 4, 8, 32])
def test_mpi_aggregation_is_identical_on_both_ranks(collectives, bits):
    for step in range(2):
        a, b = (rank[f"agg_out_{bits}_1_{step}"] for rank in collectives)
        assert a.tobytes() == b.tobytes()


@needs_mpi
@pytest.mark.mpi
def test_mpi_full_precision_aggregation_is_the_sum_and_counts_global_samples(collectives):
    for step in range(2):
        expected = collectives[0][f"agg_in_32_1_{step}"] + collectives[1][f"agg_in_32_1_{step}"]
        np.testing.assert_array_equal(collectives[0][f"agg_out_32_1_{step}"], expected)
        assert collectives[0][f"agg_samples_32_1_{step}"] == 10 + 11


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("bits", [1, 2, 4, 8, 32])
def test_mpi_bucketed_aggregation_with_gradients_final_in_different_orders_equals_the_simulation(collectives, bits):
    segments, _ = collectives_script().layout()
    assert collectives[0]["bucketed_buckets"] > 2
    grads = [[rank[f"bucketed_in_{bits}_{step}"] for rank in collectives] for step in range(2)]
    if bits == 32:
        expected = [g[0] + g[1] for g in grads]
    else:
        expected, _ = simulate_striped(grads, segments, bits, True)
    for rank in collectives:
        for step in range(2):
            np.testing.assert_array_equal(rank[f"bucketed_out_{bits}_{step}"], expected[step])
            assert rank[f"bucketed_samples_{bits}_{step}"] == 21


@needs_mpi
@pytest.mark.mpi
def test_mpi_one_bit_aggregation_sends_the_packed_size(collectives):
    segments, _ = collectives_script().layout()
    for r, rank in enumerate(collectives):
        # this rank sends the other rank's stripe (all-to-all) and its own re-quantised stripe
        # (all-gather): with 2 ranks that is every column once; plus 8 bytes of sample count.
        packed = 0
        for _, shape in segments:
            rows, cols = column_dims(shape)
            packed += packed_size(rows, cols, 1, np.float32)
        assert rank["agg_bytes_1_1_0"] == packed + 8


def bmuf_reference(starts, locals_, block_samples, block_size, workers, lr=1.0, eta0=None,
                   nesterov=True):
    """The BMUF formulas of gpu.md §5.6 on the saved local models of every block."""
    eta0 = 1 - 1 / workers if eta0 is None else eta0
    tau = -block_size / math.log(eta0)
    w = wg = starts.copy()
    delta = np.zeros_like(w)
    out = []
    for block, local in enumerate(locals_):
        eta = np.float32(math.exp(-block_samples / tau))
        average = (local[0] + local[1]) / np.float32(workers)
        g = average - wg
        delta = eta * delta + np.float32(lr) * g
        w = w + delta
        wg = w + eta * delta if nesterov else w
        out.append(wg)
    return out


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("name, kwargs", [
    ("bmuf_nesterov", {}),
    ("bmuf_classical", {"lr": 0.8, "eta0": 0.5, "nesterov": False})])
def test_mpi_bmuf_over_two_blocks_equals_the_formulas(collectives, name, kwargs):
    start = collectives[0][f"{name}_start"]
    locals_ = [[rank[f"{name}_local_{b}"] for rank in collectives] for b in range(2)]
    # each block: rank 0 ran 3 x 100 samples, rank 1 3 x 120
    expected = bmuf_reference(start, locals_, 660, 600, 2, **kwargs)
    for rank in collectives:
        np.testing.assert_array_equal(rank[f"{name}_start"], start)  # broadcast from rank 0
        for block in range(2):
            np.testing.assert_array_equal(rank[f"{name}_synced_{block}"], expected[block])


@needs_mpi
@pytest.mark.mpi
def test_mpi_model_averaging_is_the_sample_weighted_mean(collectives):
    for block in range(2):
        local = [rank[f"model_averaging_local_{block}"] for rank in collectives]
        expected = (local[0] * np.float32(300 / 660)) + (local[1] * np.float32(360 / 660))
        for rank in collectives:
            np.testing.assert_array_equal(rank[f"model_averaging_synced_{block}"], expected)


@needs_mpi
@pytest.mark.mpi
def test_mpi_sync_is_due_on_the_step_that_reaches_the_per_worker_block(collectives):
    for rank in collectives:
        for block in range(2):
            assert list(rank[f"bmuf_nesterov_due_{block}"]) == [False, False, True]


@needs_mpi
@pytest.mark.mpi
def test_mpi_rank_that_raises_ends_the_job_naming_the_rank():
    proc, seconds = run_mpi("failure.py", "raise", timeout=60)
    assert proc.returncode != 0 and seconds < 30
    assert "rank 1 of 2 failed: RuntimeError: simulated failure" in proc.stderr


@needs_mpi
@pytest.mark.mpi
def test_mpi_config_error_in_guarded_rank_exits_with_the_config_code():
    proc, seconds = run_mpi("failure.py", "config", timeout=60)
    assert proc.returncode == 78 and seconds < 30
    assert "rank 1 of 2 failed: config error" in proc.stderr
    assert "finished" not in proc.stdout


@needs_mpi
@pytest.mark.mpi
def test_mpi_killed_rank_ends_the_job_and_can_be_named():
    proc, seconds = run_mpi("failure.py", "kill", timeout=60)
    assert proc.returncode != 0 and seconds < 30
    assert reports_a_killed_rank(proc.stdout + proc.stderr, 1)
