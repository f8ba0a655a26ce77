"""Block-wise model update: BMUF (BlockMomentumSGD) and ModelAveragingSGD.

    block = resolve_block_size(K, blockSize, blockSizePerWorker, default_per_worker)
    bm = BlockMomentum(comm, flat_params, block_size, block_learning_rate=1.0,
                       block_momentum_per_sync=None, block_momentum_as_time_constant=None,
                       use_nesterov=True, reset_sgd_momentum=True)
    ma = ModelAveraging(comm, flat_params, block_size)
    # every training step, on every rank:
    if bm.advance(samples):            # True when a sync is due
        bm.sync(flat_params, momentum_buffers=[learner_momentum])
    # at the end of an epoch: bm.sync(...) unconditionally, on every rank
    bm.state() / bm.load_state(state)  # for checkpoints (the same on every rank)

Both constructors broadcast `flat_params` from rank 0 in place, so all workers start from the same
model. Each worker then trains on its own data; a sync is due when the worker has processed
`block_size / K` samples since the last one. Ranks must agree on when to sync, so `advance` must be
fed the same counts on every rank (e.g. each worker's nominal share of the global minibatch); the
samples of the block are summed over ranks inside `sync` (they set the momentum, see below).

BMUF, as reference/gpu.md §5.6 gives the formulas (Chen & Huo 2016), N = K workers:

    W_bar(t) = (1/N) sum_i W_i(t)                  average of the workers' models
    G(t)     = W_bar(t) - W_g(t-1)                 block update
    D(t)     = eta_t * D(t-1) + zeta * G(t)        block-momentum filter (zeta = blockLearningRate)
    W(t)     = W(t-1) + D(t)
    W_g(t)   = W(t) + eta_t * D(t)   (Nesterov, useNesterovMomentum = true)   or   W(t)   (classical)

and every worker continues from W_g(t). State: W (the filtered model), W_g (the model the workers
started the block from) and D. With Nesterov, W_g(t) looks ahead with this block's eta_t: the
next block's eta is not known yet (it depends on how many samples that block will have).

Block momentum eta: `blockMomentumPerSync` or `blockMomentumAsTimeConstant` tau (at most one);
default eta = 1 - 1/N, converted to a time constant tau = -blockSize / ln(eta) (eta = 0, e.g.
N = 1, means tau = 0). At each sync eta_t = exp(-B_t / tau) from the samples B_t all workers
actually processed in the block, as CNTK recomputes it. The long-run gain of the filter is
zeta / (1 - eta): N for the defaults, i.e. the block moves by the sum of the workers' progress.
(CNTK's V2 code scales G by (1 - eta) * N * zeta instead, which is the same for the default eta
and differs otherwise; fairseq averages instead of summing, a gain N times smaller.)

`resetSGDMomentum` (default true): after a sync the learner's momentum is zeroed — pass its
buffers as `momentum_buffers`.

ModelAveragingSGD (CNTK's ModelAveraging): at each sync every worker's model is replaced by the
average of all workers' models, each weighted by the samples it processed in the block
(W = sum_i n_i W_i / sum_i n_i; equal weights when no samples were counted). No state but the
sample counter.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from netlang.runtime.distributed.comm import Communicator

DEFAULT_BLOCK_SIZE_PER_WORKER_BMUF = 120_000
DEFAULT_BLOCK_SIZE_PER_WORKER_MA = 40_000


def resolve_block_size(workers: int, block_size: int | None = None,
                       block_size_per_worker: int | None = None,
                       default_per_worker: int = DEFAULT_BLOCK_SIZE_PER_WORKER_BMUF) -> int:
    """The block size in samples summed over all workers, from `blockSize` or `blockSizePerWorker`
    (positive, and at most one of them: the schema's checks, compiler/lang/blocks.py)."""
    if block_size is not None:
        return int(block_size)
    per_worker = default_per_worker if block_size_per_worker is None else block_size_per_worker
    return int(per_worker) * workers


class _BlockSync:
    """What both methods share: the initial broadcast and the samples-per-block counter."""

    def __init__(self, comm: Communicator, flat_params: np.ndarray, block_size: int):
        self.comm = comm
        self.block_size = int(block_size)
        self.samples_per_worker = self.block_size / comm.size
        self.samples_since_sync = 0
        comm.bcast(flat_params, 0)

    def advance(self, samples: int) -> bool:
        """Count this step's samples; True when a sync is due (see the module docstring)."""
        self.samples_since_sync += int(samples)
        return self.samples_since_sync >= self.samples_per_worker

    def _block_samples(self) -> float:
        """The samples of the block summed over ranks; starts the next block."""
        samples = np.array([self.samples_since_sync], dtype=np.float64)
        self.comm.allreduce_sum(samples)
        self.samples_since_sync = 0
        return float(samples[0])


class BlockMomentum(_BlockSync):
    """BMUF (BlockMomentumSGD); see the module docstring for the formulas."""

    def __init__(self, comm: Communicator, flat_params: np.ndarray, block_size: int,
                 block_learning_rate: float = 1.0, block_momentum_per_sync: float | None = None,
                 block_momentum_as_time_constant: float | None = None, use_nesterov: bool = True,
                 reset_sgd_momentum: bool = True):
        super().__init__(comm, flat_params, block_size)
        self.block_learning_rate = float(block_learning_rate)
        self.time_constant = _time_constant(comm.size, self.block_size, block_momentum_per_sync,
                                            block_momentum_as_time_constant)
        self.use_nesterov = use_nesterov
        self.reset_sgd_momentum = reset_sgd_momentum
        self.model = flat_params.copy()         # W(t)
        self.global_model = flat_params.copy()  # W_g(t)
        self.delta = np.zeros_like(flat_params)  # D(t)

    def momentum_for(self, block_samples: float) -> float:
        """eta for a block of `block_samples` samples (summed over workers)."""
        if self.time_constant == 0:
            return 0.0
        return math.exp(-block_samples / self.time_constant)

    def sync(self, flat_params: np.ndarray, momentum_buffers: Sequence[np.ndarray] = ()) -> None:
        """Average the workers' models, filter the block update, continue from the new W_g."""
        block_samples = self._block_samples()
        self.comm.allreduce_sum(flat_params)
        eta = flat_params.dtype.type(self.momentum_for(block_samples))
        zeta = flat_params.dtype.type(self.block_learning_rate)
        average = flat_params
        average /= flat_params.dtype.type(self.comm.size)
        block_update = average - self.global_model
        self.delta *= eta
        self.delta += zeta * block_update
        self.model += self.delta
        if self.use_nesterov:
            self.global_model[...] = self.model + eta * self.delta
        else:
            self.global_model[...] = self.model
        flat_params[...] = self.global_model
        if self.reset_sgd_momentum:
            for buf in momentum_buffers:
                buf[...] = 0

    def state(self) -> dict[str, np.ndarray]:
        return {"model": self.model.copy(), "global_model": self.global_model.copy(),
                "delta": self.delta.copy(),
                "samples_since_sync": np.array(self.samples_since_sync, dtype=np.int64)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for name in ("model", "global_model", "delta"):
            _load_into(getattr(self, name), state[name], name)
        self.samples_since_sync = int(state["samples_since_sync"])


class ModelAveraging(_BlockSync):
    """ModelAveragingSGD: the sample-weighted average of the workers' models at every sync."""

    def sync(self, flat_params: np.ndarray) -> None:
        local = self.samples_since_sync
        total = self._block_samples()
        weight = local / total if total > 0 else 1.0 / self.comm.size
        flat_params *= flat_params.dtype.type(weight)
        self.comm.allreduce_sum(flat_params)

    def state(self) -> dict[str, np.ndarray]:
        return {"samples_since_sync": np.array(self.samples_since_sync, dtype=np.int64)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.samples_since_sync = int(state["samples_since_sync"])


def _time_constant(workers: int, block_size: int, per_sync: float | None,
                   time_constant: float | None) -> float:
    """tau in samples: given, or converted from eta (default 1 - 1/N) by tau = -blockSize / ln(eta).
    (The schema allows one of the two, tau >= 0 and eta in [0, 1).)"""
    if time_constant is not None:
        return float(time_constant)
    eta = 1.0 - 1.0 / workers if per_sync is None else float(per_sync)
    return 0.0 if eta == 0.0 else -block_size / math.log(eta)


def _load_into(target: np.ndarray, value, name: str) -> None:
    value = np.asarray(value)
    if value.shape != target.shape:
        raise ValueError(f"{name} in the checkpoint has shape {value.shape}, the model has "
                         f"{target.shape}")
    target[...] = value
