"""Data-parallel training: what the trainer does differently when K > 1 workers train one model.

The trainer talks to one `ParallelStrategy`, chosen by `create_strategy` from `SGD.ParallelTrain`:

    ParallelStrategy         one worker, or parallelizationMethod = none: every hook does nothing
    DataParallel             DataParallelSGD: the gradient is summed over the workers before every
                             update (all-reduce at 32/64 bits, or k-bit quantised with error feedback)
    BlockMomentumParallel    BlockMomentumSGD (BMUF): local steps, block-wise model-update filtering
    ModelAveragingParallel   ModelAveragingSGD: local steps, sample-weighted model averages

The hooks, in the order the trainer calls them:

    begin()                                   once, before the first epoch: rank 0's parameters go
                                              to every worker; checkpointed per-worker state is
                                              put back (after `restore_arrays`)
    before_epoch(epoch, resumed)              the method is active from parallelizationStartEpoch
    reading() -> (rank, K)                    which share of every global minibatch to read
    any_rank(flag) -> bool                    a stop request (Ctrl-C, SIGTERM) seen on any worker
    backward_begins() / gradient_ready(name)  the executor's RunHooks during a training step:
                                              DataParallelSGD starts exchanging gradients here
    after_backward(grad, n_local) -> n        the sample count the learner step is for (global
                                              for DataParallelSGD: exchanged with the gradient)
    after_update(n_local, n_reader_global)    block methods: count samples, sync a full block
    sum_over_workers(values) -> values        the trainer's totals (samples, criterion, metrics)
                                              summed over the workers where it reads them
    end_epoch()                               block methods: the final sync of the epoch
    checkpoint_arrays(mid_epoch) / restore_arrays(arrays) / barrier()
    log_fields()                              {"parallel": {...}} for the epoch's metrics record
    gather(values) -> [values of every rank]  for the per-rank `--profile` table

Nothing synchronises the workers every minibatch but what the method needs: DataParallelSGD's
gradient exchange (with the step's sample count in it). The trainer adds its totals up on each
worker and sums them over the workers only where it reports (every `numMBsToShowResult`
minibatches and at the end of an epoch); a stop request is agreed on by a vote started every
`STOP_VOTE_EVERY` minibatches and collected as many minibatches later, so the workers agree on
the minibatch to stop at without waiting for each other; block methods count their block by the
reader's global sample count, the same on every worker. So between their syncs BlockMomentumSGD
and ModelAveragingSGD exchange only the vote and, where the trainer reports, its totals.

Conventions (CNTK's where it has one):

* `minibatchSize` is the global minibatch. Every worker reads a disjoint share of it (sequence i
  of the global minibatch goes to rank i mod K), so epochs and sample counts are global, and a
  DataParallelSGD step applies the per-sample learning rate to the gradient summed over all
  workers with the global sample count: the same arithmetic as one process reading the whole
  minibatch. A worker whose share is empty still takes part, with a zero gradient. netlang's
  readers always read distributed; `distributedMBReading = false` would give the same shares.
* Warm start (`parallelizationStartEpoch`): earlier epochs run as if K = 1. Every worker reads the
  full minibatches and trains alone, without communication; the computations are the same on
  every worker, so are the models (up to dropout, whose masks are drawn per worker). When the
  first parallel epoch starts, rank 0's parameters (and, for DataParallelSGD, its learner state)
  are broadcast, and the parallel state (residuals, block filter) starts afresh.
* Random numbers: rank 0 keeps the single-process stream, rank r > 0 draws dropout masks from
  its own stream seeded by (seed, r).
* `gradientBits` >= 32 is a full-precision all-reduce (also 32 in double precision); 1, 2, 4 and
  8 use the striped k-bit aggregation of distributed/aggregation.py with its two residuals, on
  CNTK's columns or, with `quantizeAlongLongerAxis`, along each matrix's longer axis (WireLayout).
* Block methods sync when the samples processed by all workers since the last sync reach
  `blockSize` (every worker sees the same global count, so they agree without asking), and at
  the end of every epoch, so epoch models are always the synchronised model. BMUF follows the
  formulas of distributed/blockmomentum.py (block momentum 1 - 1/K by default, long-run gain K).
  Epoch models are the filtered model W; with Nesterov block momentum the workers go on from the
  look-ahead W_g (CNTK keeps and saves only the look-ahead; on MNIST W tests better).
  `resetSGDMomentum` zeroes the learner's first-moment buffers (SGD and FSAdaGrad momentum,
  Adam's mean), not its second-moment statistics.
* Checkpoints are one file, written by rank 0: the state shared by all workers under
  `state/parallel/...` (method, worker count, BMUF filter state, samples since the last sync) and
  each worker's own under `state/rank<r>/...` (its random stream, k-bit residuals, for the block
  methods its learner state and, in a mid-epoch checkpoint, its local parameters). Every worker
  reads the same file on resume and takes its part, so a resumed run continues exactly. A
  checkpoint written with another number of workers or method resumes with fresh per-worker state.
  The per-worker parts are all-gathered (every worker briefly holds all of them): fine for the
  models netlang trains on CPU, to be replaced by a gather to rank 0 for very large models.
* GPU buffers (CuPy) go through host memory for the collectives (reference/gpu.md §5.2's
  fallback) until the NCCL communicator arrives behind the same interface; k-bit quantisation runs
  on the device, so only the packed bytes travel.
* The gradient exchange of DataParallelSGD goes bucket by bucket as backward finishes gradients
  (distributed/aggregation.py), and is waited for just before the update.
"""
from __future__ import annotations

import io
import json

import numpy as np

from netlang.compiler.lang.settings import FULL_PRECISION_BITS, ParallelSettings
from netlang.runtime.backend import array_module
from netlang.runtime.distributed import BlockMomentum, GradientAggregator, ModelAveraging, resolve_block_size
from netlang.runtime.distributed.aggregation import BUCKET_BYTES
from netlang.runtime.distributed.blockmomentum import (
    DEFAULT_BLOCK_SIZE_PER_WORKER_BMUF,
    DEFAULT_BLOCK_SIZE_PER_WORKER_MA,
)
from netlang.runtime.distributed.quantization import column_dims
from netlang.runtime.executor import RunHooks
from netlang.runtime.profile import StepProfile

SUPPORTED_METHODS = ("none", "DataParallelSGD", "BlockMomentumSGD", "ModelAveragingSGD")
QUANTIZED_BITS = (1, 2, 4, 8)     # gradientBits below FULL_PRECISION_BITS that k-bit aggregation runs
MOMENTUM_STATES = ("smoothed_gradient", "mean")   # learner buffers resetSGDMomentum zeroes
STOP_VOTE_EVERY = 8   # minibatches between the start of a stop vote and its count


def check_supported(settings: ParallelSettings | None) -> None:
    """Refuse, at the line that sets it, a parallel setting this code cannot run."""
    if settings is None or settings.gradient_bits is None:
        return
    for bits in settings.gradient_bits.values:
        if bits not in QUANTIZED_BITS and bits < FULL_PRECISION_BITS:
            raise settings.error("gradientBits", f"gradientBits = {bits} is not supported",
                                 hint="use 1, 2, 4 or 8 for quantised aggregation, or 32 (64 in double "
                                      "precision, the default) for full precision")


def create_strategy(settings: ParallelSettings | None, comm, flat, learner, executor,
                    seed: int, profile: StepProfile | None = None) -> ParallelStrategy:
    """The strategy for this job: the no-op one unless K > 1 and a method is chosen."""
    profile = profile or StepProfile(enabled=False)
    if settings is None or comm is None or comm.size <= 1 or settings.method == "none":
        return ParallelStrategy(profile)
    kinds = {"DataParallelSGD": DataParallel, "BlockMomentumSGD": BlockMomentumParallel,
             "ModelAveragingSGD": ModelAveragingParallel}
    return kinds[settings.method](settings, comm, flat, learner, executor, seed, profile)


class ParallelStrategy(RunHooks):
    """One worker: nothing to exchange; every hook leaves the single-process loop as it is.

    It is also the executor's RunHooks of a training step: backward begins in the step profile."""

    name = "none"
    workers = 1

    def __init__(self, profile: StepProfile):
        self.profile = profile

    def begin(self) -> None:
        pass

    def before_epoch(self, epoch: int, resumed: bool) -> None:
        pass

    def reading(self) -> tuple[int, int]:
        return 0, 1

    def any_rank(self, flag: bool) -> bool:
        return flag

    def sum_over_workers(self, values: list[float]) -> list[float]:
        return values

    def backward_begins(self) -> None:
        self.profile.switch("backward")

    def after_backward(self, grad, local_samples: int) -> int:
        return local_samples

    def after_update(self, local_samples: int, global_samples: int) -> None:
        pass

    def end_epoch(self) -> None:
        pass

    def checkpoint_arrays(self, mid_epoch: bool) -> dict:
        return {}

    def restore_arrays(self, arrays: dict) -> str | None:
        return None

    def barrier(self) -> None:
        pass

    def log_fields(self) -> dict:
        return {}

    def gather(self, values: list[float]) -> list[list[float]]:
        return [values]


class _Workers(ParallelStrategy):
    """What every method with K > 1 workers shares: reading, totals, stop requests, checkpoints."""

    def __init__(self, settings: ParallelSettings, comm, flat, learner, executor, seed: int,
                 profile: StepProfile):
        super().__init__(profile)
        self.settings = settings
        self.comm = comm
        self.workers = comm.size
        self.flat = flat
        self.learner = learner
        self.executor = executor
        self.seed = seed
        self.active = False                 # this epoch runs in parallel (warm start: not yet)
        self._restored: dict | None = None  # checkpoint parts waiting for begin()
        self._bytes = 0                     # bytes this worker sent to exchange gradients/models
        self._steps = 0                     # steps of this epoch
        self._vote = None                   # the stop vote in flight, and the call that started it
        self._vote_started = 0
        self._calls = 0                     # calls of any_rank
        self._decided = False               # a vote counted at the end of an epoch said stop

    # ---- the epoch -------------------------------------------------------------------------------

    def begin(self) -> None:
        self._broadcast(self.flat.data)
        if self.comm.rank > 0:
            self.executor.rng = self.executor.backend.random_stream([self.seed, self.comm.rank])
        self._create()
        restored, self._restored = self._restored, None
        if restored is not None:
            self._load(restored["shared"], restored["own"])

    def before_epoch(self, epoch: int, resumed: bool) -> None:
        self.active = epoch >= self.settings.start_epoch
        self._bytes = self._steps = 0
        if epoch == self.settings.start_epoch > 1 and not resumed:
            self._start_parallel()

    def reading(self) -> tuple[int, int]:
        return (self.comm.rank, self.comm.size) if self.active else (0, 1)

    def any_rank(self, flag: bool) -> bool:
        """Whether any worker was asked to stop, agreed without waiting every minibatch: a vote
        (this worker's flag, summed over the workers) starts and is counted STOP_VOTE_EVERY calls
        later. Every worker makes the same calls, so all see the outcome at the same minibatch."""
        self._calls += 1
        decided, self._decided = self._decided, False
        if self._vote is not None and self._calls - self._vote_started >= STOP_VOTE_EVERY:
            decided = self._count_vote()
        if self._vote is None and not decided:
            self._vote = self.comm.iallreduce_sum(np.array([1.0 if flag else 0.0]))
            self._vote_started = self._calls
        elif self._vote is not None:
            self._vote.test()
        return decided

    def _count_vote(self) -> bool:
        with self.profile.phase("wait"):
            stop = bool(self._vote.wait()[0] > 0)
        self._vote = None
        return stop

    def end_epoch(self) -> None:
        # The vote in flight is counted now (its outcome comes with the next call): no collective
        # may be left open when the run ends.
        if self._vote is not None:
            self._decided = self._count_vote()

    def sum_over_workers(self, values: list[float]) -> list[float]:
        if not self.active:    # warm start: every worker saw the same full minibatch
            return values
        buf = np.array(values, dtype=np.float64)
        with self.profile.phase("communicate"):
            self.comm.allreduce_sum(buf)
        return [float(v) for v in buf]

    def gather(self, values: list[float]) -> list[list[float]]:
        return self.comm.allgather(np.array(values, dtype=np.float64)).tolist()

    def log_fields(self) -> dict:
        fields = {"workers": self.workers, "method": self.name,
                  "bytesSentPerStep": self._bytes / max(self._steps, 1)}
        return {"parallel": fields}

    def barrier(self) -> None:
        self.comm.barrier()

    # ---- what each method defines ----------------------------------------------------------------

    def _create(self) -> None:
        """Set up the method's state for the current parameters."""

    def _start_parallel(self) -> None:
        """The first parallel epoch after a warm start: rank 0's model everywhere, fresh state."""
        self._broadcast(self.flat.data)
        self._create()

    def _own_arrays(self, mid_epoch: bool) -> dict:
        return {"rng": _json_array(self.executor.rng.state())}

    def _shared_arrays(self) -> dict:
        return {}

    def _info(self) -> dict:
        """What a checkpoint's per-worker state depends on."""
        return {"method": self.name, "workers": self.workers}

    def _load(self, shared: dict, own: dict) -> None:
        if "rng" in own:
            self.executor.rng.restore(_from_json_array(own["rng"]))

    # ---- checkpoints -----------------------------------------------------------------------------

    def checkpoint_arrays(self, mid_epoch: bool) -> dict:
        """This checkpoint's parallel state: shared parts and every worker's own (collective)."""
        arrays = {f"parallel/{k}": v for k, v in self._shared_arrays().items()}
        arrays["parallel/info"] = _json_array(self._info())
        for rank, own in enumerate(_gather_arrays(self.comm, self._own_arrays(mid_epoch))):
            arrays.update({f"rank{rank}/{k}": v for k, v in own.items()})
        return arrays

    def restore_arrays(self, arrays: dict) -> str | None:
        """Keep this worker's parts of a checkpoint for begin(); a note if they cannot be used."""
        if "parallel/info" not in arrays:
            return None     # written by a single process: nothing per worker to restore
        info = _from_json_array(arrays["parallel/info"])
        if info != self._info():
            return (f"the checkpoint was written by {info.get('workers')} workers with "
                    f"{info.get('method')}; this run has {self.workers} with {self.name}"
                    f"{' (other settings)' if info.get('method') == self.name else ''}: "
                    f"per-worker state (random streams, residuals, block state) starts afresh")
        own_prefix = f"rank{self.comm.rank}/"
        self._restored = {
            "shared": {k[len("parallel/"):]: v for k, v in arrays.items() if k.startswith("parallel/")},
            "own": {k[len(own_prefix):]: v for k, v in arrays.items() if k.startswith(own_prefix)},
        }
        return None

    # ---- moving buffers ----------------------------------------------------------------------------

    def _broadcast(self, buffer) -> None:
        """Rank 0's values of a flat buffer on every worker, in place."""
        self._on_host(buffer, lambda host: self.comm.bcast(host, 0))

    def _on_host(self, buffer, work):
        """Run `work` on a NumPy array holding `buffer`'s values and keep what it changed.

        A buffer already on the host is used in place; a device buffer is copied to the host and back."""
        backend = self.flat.backend
        host = backend.to_host(buffer)
        result = work(host)
        if host is not buffer:
            buffer[...] = backend.from_host(host)
        return result

    def _count_bytes(self, work) -> None:
        before = self.comm.bytes_sent
        work()
        self._bytes += self.comm.bytes_sent - before


class WireLayout:
    """How the trainable gradient is laid out for the k-bit aggregator.

    By default the aggregator sees the buffer as it is, so it quantises CNTK's columns: a weight
    (200:784) has 784 columns of 200 values (its output axis), exactly as CNTK's quantiser does.
    Each column costs two float values besides its bits, so short columns cost more per value: the
    200-value columns send 1.32 bits per value and the (10:200) output weight's 10-value columns
    7.4. With `longer_axis` (`quantizeAlongLongerAxis = true`, a netlang addition) a matrix whose
    columns are shorter than its rows is transposed into a wire buffer first, so it is quantised
    along its longer axis (200 columns of 784 values: 1.08 bits per value); the aggregate comes
    back transposed. The residuals are kept in the wire layout. Segment by segment (`put`), so a
    gradient enters the wire buffer as soon as backward has finished it.
    """

    def __init__(self, flat, longer_axis: bool):
        self.segments, self.slices, self.flipped = [], [], {}
        for index, name in enumerate(flat.trainable_names):
            shape = flat.shape(name)
            rows, cols = column_dims(shape)
            self.slices.append(flat.segment(name))
            if longer_axis and rows < cols:
                # run-time shape (rows, cols): the aggregator's columns are now the old rows
                self.segments.append((flat.offset(name), (rows, cols)))
                self.flipped[index] = (cols, rows)
            else:
                self.segments.append((flat.offset(name), shape))
        self._buffer = None

    def wire_for(self, grad):
        """The buffer the aggregator works on: `grad` itself when nothing is transposed."""
        if not self.flipped:
            return grad
        if self._buffer is None:
            self._buffer = array_module(grad).empty_like(grad)
        return self._buffer

    def put(self, index: int, grad, wire) -> None:
        """Segment `index` of `grad` into the wire buffer."""
        if wire is grad:
            return
        segment = self.slices[index]
        matrix = self.flipped.get(index)
        wire[segment] = grad[segment] if matrix is None else grad[segment].reshape(matrix).T.ravel()

    def pack(self, grad):
        """The whole gradient in wire layout."""
        wire = self.wire_for(grad)
        for index in range(len(self.slices)):
            self.put(index, grad, wire)
        return wire

    def unpack(self, wire, grad) -> None:
        if wire is grad:
            return
        grad[...] = wire
        for index, (cols, rows) in self.flipped.items():
            segment = self.slices[index]
            grad[segment] = wire[segment].reshape(rows, cols).T.ravel()


class DataParallel(_Workers):
    """DataParallelSGD: every step, the workers' gradients are summed before the learner runs."""

    name = "DataParallelSGD"

    def _create(self) -> None:
        flat = self.flat
        self.wire = WireLayout(flat, self.settings.longer_axis)
        self.aggregator = GradientAggregator(self.comm, self.wire.segments, flat.num_trainable, flat.dtype,
                                             bits=FULL_PRECISION_BITS, zero_threshold=self.settings.zero_threshold,
                                             backend=flat.backend, profile=self.profile)
        self.segment_of = {name: index for index, name in enumerate(flat.trainable_names)}
        self.bits = FULL_PRECISION_BITS
        self._grad = self._wire = None
        self._bytes_before = 0

    def before_epoch(self, epoch: int, resumed: bool) -> None:
        super().before_epoch(epoch, resumed)
        self.bits = self.aggregator.bits = self.settings.bits(epoch)

    def _start_parallel(self) -> None:
        super()._start_parallel()
        for buffer in self.learner.state.values():
            self._broadcast(buffer)

    # ---- the step: gradients go out as backward finishes them ----------------------------------------

    def backward_begins(self) -> None:
        super().backward_begins()
        if self.active:
            self._open_step()

    def gradient_ready(self, name: str) -> None:
        if not self.active:
            return
        with self.profile.phase("communicate"):
            index = self.segment_of[name]
            self.wire.put(index, self._grad, self._wire)
            self.aggregator.segment_ready(index)

    def after_backward(self, grad, local_samples: int) -> int:
        """Wait for the exchange (started by the hooks; all of it here when this worker had no
        share of the minibatch) and return the global sample count, which came with it."""
        if not self.active:
            return local_samples
        if not self.aggregator.in_step:
            self._open_step()
            for index in range(len(self.wire.slices)):
                self.wire.put(index, self._grad, self._wire)
        samples = self.aggregator.finish(local_samples)
        self.wire.unpack(self._wire, self._grad)
        self._bytes += self.comm.bytes_sent - self._bytes_before
        self._steps += 1
        return samples

    def _open_step(self) -> None:
        self._grad = self.flat.grad[self.flat.trainable]
        self._wire = self.wire.wire_for(self._grad)
        self._bytes_before = self.comm.bytes_sent
        self.aggregator.begin(self._wire)

    def _info(self) -> dict:
        # the k-bit stripes (who keeps which second residual) follow the buckets
        return {**super()._info(), "longer_axis": self.settings.longer_axis, "bucket_bytes": BUCKET_BYTES}

    def log_fields(self) -> dict:
        fields = super().log_fields()
        fields["parallel"]["gradientBits"] = self.bits
        return fields

    def _own_arrays(self, mid_epoch: bool) -> dict:
        arrays = super()._own_arrays(mid_epoch)
        residuals = self.aggregator.state()
        if any(np.any(r) for r in residuals.values()):   # 32-bit runs carry no residuals
            arrays.update(residuals)
        return arrays

    def _load(self, shared: dict, own: dict) -> None:
        super()._load(shared, own)
        if "residual" in own:
            self.aggregator.load_state(own)


class _BlockParallel(_Workers):
    """Block methods: workers step alone on their shares; their models meet at every sync."""

    default_block_size_per_worker = DEFAULT_BLOCK_SIZE_PER_WORKER_BMUF

    def _create(self) -> None:
        block_size = resolve_block_size(self.workers, self.settings.block_size,
                                        self.settings.block_size_per_worker,
                                        self.default_block_size_per_worker)
        self.block = self._on_host(self._trainable(self.flat.data),
                                   lambda host: self._new_block(host, block_size))
        self.since_sync = 0   # samples of all workers since the last sync (the same everywhere)

    def _new_block(self, params: np.ndarray, block_size: int):
        raise NotImplementedError

    def after_backward(self, grad, local_samples: int) -> int:
        if self.active:
            self._steps += 1
        return local_samples

    def after_update(self, local_samples: int, global_samples: int) -> None:
        """`global_samples`: the reader's count for the global minibatch, the same on every worker."""
        if not self.active:
            return
        self.block.advance(local_samples)
        self.since_sync += global_samples
        if self.since_sync >= self.block.block_size:
            self._sync()

    def end_epoch(self) -> None:
        super().end_epoch()
        if self.active and self.since_sync > 0:
            self._sync()

    def _sync(self) -> None:
        params = self._trainable(self.flat.data)
        with self.profile.phase("communicate"):
            self._count_bytes(lambda: self._on_host(params, self._sync_block))
        self.since_sync = 0

    def _sync_block(self, params: np.ndarray) -> None:
        raise NotImplementedError

    def _trainable(self, buffer):
        return buffer[:self.flat.num_trainable]

    # ---- checkpoints: the learner is each worker's own -----------------------------------------------

    def _shared_arrays(self) -> dict:
        return {"since_sync": np.array(self.since_sync, dtype=np.int64)}

    def _own_arrays(self, mid_epoch: bool) -> dict:
        arrays = super()._own_arrays(mid_epoch)
        arrays["samples_since_sync"] = np.array(self.block.samples_since_sync, dtype=np.int64)
        learner = self.learner.state_dict()
        arrays.update({f"learner/{k}": v for k, v in learner.items() if isinstance(v, np.ndarray)})
        arrays["learner_json"] = _json_array({k: v for k, v in learner.items()
                                              if not isinstance(v, np.ndarray)})
        if mid_epoch:   # between syncs the workers' models differ
            arrays["params"] = np.array(self.flat.backend.to_host(self._trainable(self.flat.data)))
        return arrays

    def _load(self, shared: dict, own: dict) -> None:
        super()._load(shared, own)
        self.since_sync = int(shared.get("since_sync", 0))
        if "learner_json" in own:
            learner = _from_json_array(own["learner_json"])
            learner.update({k[len("learner/"):]: v for k, v in own.items() if k.startswith("learner/")})
            self.learner.load_state_dict(learner)
        if "params" in own:
            self._trainable(self.flat.data)[...] = self.flat.backend.from_host(own["params"])


class BlockMomentumParallel(_BlockParallel):
    """BlockMomentumSGD (BMUF); the formulas are in distributed/blockmomentum.py."""

    name = "BlockMomentumSGD"

    def _new_block(self, params: np.ndarray, block_size: int) -> BlockMomentum:
        s = self.settings
        return BlockMomentum(self.comm, params, block_size, block_learning_rate=s.block_learning_rate,
                             block_momentum_per_sync=s.block_momentum_per_sync,
                             block_momentum_as_time_constant=s.block_momentum_as_time_constant,
                             use_nesterov=s.use_nesterov, reset_sgd_momentum=s.reset_sgd_momentum)

    def _sync_block(self, params: np.ndarray) -> None:
        n = self.flat.num_trainable
        momentum = [self.learner.state[k][:n] for k in MOMENTUM_STATES if k in self.learner.state]
        self.block.sync(params, momentum_buffers=momentum)

    # With Nesterov block momentum the workers continue from the look-ahead W_g = W + eta * D, an
    # extrapolation; the model training has found is the filtered W. So between epochs the
    # parameters are W (what the epoch model, the checkpoint and cross-validation see) and the
    # next epoch starts from W_g, exactly where the workers would have gone on.

    def end_epoch(self) -> None:
        super().end_epoch()
        if self.active:
            self._trainable(self.flat.data)[...] = self.flat.backend.from_host(self.block.model)

    def before_epoch(self, epoch: int, resumed: bool) -> None:
        super().before_epoch(epoch, resumed)
        if self.active and not resumed:
            self._trainable(self.flat.data)[...] = self.flat.backend.from_host(self.block.global_model)

    def _shared_arrays(self) -> dict:
        arrays = super()._shared_arrays()
        arrays.update({k: v for k, v in self.block.state().items() if k != "samples_since_sync"})
        return arrays

    def _load(self, shared: dict, own: dict) -> None:
        super()._load(shared, own)
        if "model" in shared:
            self.block.load_state({"model": shared["model"], "global_model": shared["global_model"],
                                   "delta": shared["delta"],
                                   "samples_since_sync": own.get("samples_since_sync", 0)})


class ModelAveragingParallel(_BlockParallel):
    """ModelAveragingSGD: at every sync each model becomes the sample-weighted average."""

    name = "ModelAveragingSGD"
    default_block_size_per_worker = DEFAULT_BLOCK_SIZE_PER_WORKER_MA

    def _new_block(self, params: np.ndarray, block_size: int) -> ModelAveraging:
        return ModelAveraging(self.comm, params, block_size)

    def _sync_block(self, params: np.ndarray) -> None:
        self.block.sync(params)

    def _load(self, shared: dict, own: dict) -> None:
        super()._load(shared, own)
        if "samples_since_sync" in own:
            self.block.load_state({"samples_since_sync": own["samples_since_sync"]})


# ---- helpers -------------------------------------------------------------------------------------


def _gather_arrays(comm, arrays: dict) -> list[dict]:
    """Every worker's `arrays` (same keys, any shapes), on every worker, in rank order."""
    out = io.BytesIO()
    np.savez(out, **arrays)
    blob = np.frombuffer(out.getvalue(), dtype=np.uint8)
    counts = [int(c) for c in comm.allgather(np.array([blob.size], dtype=np.int64))[:, 0]]
    everything = comm.allgatherv(blob, counts)
    parts, start = [], 0
    for count in counts:
        with np.load(io.BytesIO(everything[start:start + count].tobytes()), allow_pickle=False) as z:
            parts.append({k: z[k] for k in z.files})
        start += count
    return parts


def _json_array(value) -> np.ndarray:
    return np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)


def _from_json_array(array: np.ndarray):
    return json.loads(bytes(np.asarray(array, dtype=np.uint8)).decode("utf-8"))

