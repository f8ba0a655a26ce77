"""Run under `mpiexec -n 2`: exercise the communicator, the aggregator, BMUF and model averaging.

Every rank saves what it gave and what it got to OUT_DIR/rank<r>.npz; tests/test_distributed.py
recomputes the expected results from the saved inputs with NumPy and compares.
Usage: mpiexec -n 2 python collectives.py OUT_DIR
"""
import sys

import numpy as np

from netlang.runtime.distributed import (
    BlockMomentum,
    GradientAggregator,
    ModelAveraging,
    get_communicator,
    install_failure_handlers,
)

# Run-time shapes chosen so stripes are uneven (7 and 9 columns), a matrix has fewer columns than
# ranks (the bias: one column) and a scalar is a 1x1 matrix.
SHAPES = [(7, 5), (3,), (), (4, 2, 6), (9, 1)]
BITS = (1, 2, 4, 8)
STEPS = 2


def layout():
    segments, offset = [], 0
    for shape in SHAPES:
        segments.append((offset, shape))
        offset += int(np.prod(shape, dtype=np.int64))
    return segments, offset


def main(out_dir: str) -> None:
    comm = get_communicator(True)
    install_failure_handlers(comm, announce=False)
    rng = np.random.default_rng(1000 + comm.rank)
    saved = {}

    # -- plain collectives
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(1001).astype(dtype)
        saved[f"allreduce_in_{np.dtype(dtype).name}"] = x.copy()
        comm.allreduce_sum(x)
        saved[f"allreduce_out_{np.dtype(dtype).name}"] = x
    saved["allgather"] = comm.allgather(np.arange(3, dtype=np.int32) + 10 * comm.rank)
    saved["allgatherv"] = comm.allgatherv(np.full(comm.rank + 2, comm.rank, np.uint8),
                                          [r + 2 for r in range(comm.size)])
    chunks = [np.full(r + 1, 10 * comm.rank + r, np.uint8) for r in range(comm.size)]
    got = comm.alltoallv(chunks, [comm.rank + 1] * comm.size)
    saved["alltoallv"] = np.concatenate(got)
    b = np.arange(5.0) if comm.rank == 0 else np.zeros(5)
    saved["bcast_array"] = comm.bcast(b, 0)
    saved["bcast_object"] = np.array(comm.bcast({"answer": 42} if comm.rank == 0 else None)["answer"])
    before = comm.bytes_sent
    comm.allreduce_sum(np.zeros(1000, np.float32))
    saved["allreduce_bytes"] = np.array(comm.bytes_sent - before)

    # -- gradient aggregation, two steps each (the second uses the residuals of the first)
    segments, size = layout()
    for bits in BITS + (32,):
        for zero_threshold in (True, False):
            agg = GradientAggregator(comm, segments, size, np.float32, bits, zero_threshold)
            tag = f"{bits}_{int(zero_threshold)}"
            for step in range(STEPS):
                grad = rng.standard_normal(size).astype(np.float32)
                saved[f"agg_in_{tag}_{step}"] = grad.copy()
                before = comm.bytes_sent
                saved[f"agg_samples_{tag}_{step}"] = np.array(agg.aggregate(grad, 10 + comm.rank))
                saved[f"agg_bytes_{tag}_{step}"] = np.array(comm.bytes_sent - before)
                saved[f"agg_out_{tag}_{step}"] = grad
            saved[f"agg_residual_{tag}"] = agg.residual
            saved[f"agg_stripe_residual_{tag}"] = agg.stripe_residual

    # -- the same, overlapped: small buckets, the segments' gradients final in another order on
    # each rank (rank 0 from the last, rank 1 from the first), as backward would announce them
    for bits in BITS + (32,):
        agg = GradientAggregator(comm, segments, size, np.float32, bits, bucket_bytes=64)
        saved["bucketed_buckets"] = np.array(len(agg.buckets))
        order = range(len(segments) - 1, -1, -1) if comm.rank == 0 else range(len(segments))
        for step in range(STEPS):
            grad = rng.standard_normal(size).astype(np.float32)
            saved[f"bucketed_in_{bits}_{step}"] = grad.copy()
            agg.begin(grad)
            for index in order:
                agg.segment_ready(index)
            saved[f"bucketed_samples_{bits}_{step}"] = np.array(agg.finish(10 + comm.rank))
            saved[f"bucketed_out_{bits}_{step}"] = grad

    # -- BMUF and model averaging over two blocks; "local training" adds a random step
    for name, make in (
            ("bmuf_nesterov", lambda p: BlockMomentum(comm, p, block_size=600)),
            ("bmuf_classical", lambda p: BlockMomentum(comm, p, block_size=600, block_learning_rate=0.8,
                                                       block_momentum_per_sync=0.5, use_nesterov=False)),
            ("model_averaging", lambda p: ModelAveraging(comm, p, block_size=600))):
        params = rng.standard_normal(50).astype(np.float32)  # differs per rank: bcast must fix it
        sync = make(params)
        saved[f"{name}_start"] = params.copy()
        for block in range(2):
            # rank 1 processes more samples per step than rank 0 (weights of model averaging);
            # both reach the per-worker block size on the third step.
            steps = [sync.advance(100 + 20 * comm.rank) for _ in range(3)]
            saved[f"{name}_due_{block}"] = np.array(steps)
            params += rng.standard_normal(50).astype(np.float32) * np.float32(0.1)
            saved[f"{name}_local_{block}"] = params.copy()
            sync.sync(params)
            saved[f"{name}_synced_{block}"] = params.copy()

    np.savez(f"{out_dir}/rank{comm.rank}.npz", size=comm.size, **saved)


if __name__ == "__main__":
    main(sys.argv[1])
