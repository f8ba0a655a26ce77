"""The `train` action: network + SGD block + reader → epochs of training, checkpoints, resume.

Parallel training: `mpiexec -n K netlang train cfg.net` with top-level `parallelTrain = true` and an
`SGD.ParallelTrain` block starts K workers (runtime/parallel.py). Every worker builds the same
network and reader; rank 0 alone prints progress and writes models, checkpoints and logs; a worker
that fails ends the whole job (distributed/launch.py). Without mpiexec, or with K = 1, training is
the single-process training, whatever the config says about parallelism.
"""
from __future__ import annotations

import os

import yaml

from netlang.actions import common
from netlang.actions.directories import make_directory, output_directory
from netlang.actions.resume import check_resume, resume_record
from netlang.actions.runlock import directory_lock
from netlang.compiler.graph.network import build_action_network, require_training_nodes
from netlang.compiler.graph.plan import make_plan
from netlang.compiler.lang.config import resolved_config_dict
from netlang.compiler.lang.settings import (
    ParallelSettings,
    ReaderSettings,
    TrainingSettings,
    reader_settings,
    training_settings,
)
from netlang.errors import ConfigError, TrainingInterrupted
from netlang.ir.modelfile import atomic_write
from netlang.runtime import carryover
from netlang.runtime.backend import DTYPES
from netlang.runtime.distributed import (
    LocalCommunicator,
    detect_launch,
    failure_guard,
    get_communicator,
    install_failure_handlers,
)
from netlang.runtime.distributed.nccl import NcclCommunicator
from netlang.runtime.memory import MemoryEstimate, device_memory, estimate, require_fit
from netlang.runtime.parallel import SUPPORTED_METHODS, check_supported
from netlang.runtime.progress import Progress
from netlang.runtime.tensorboard import tensorboard_log_for
from netlang.runtime.trainer import Trainer


def communicator_for(config, parallel: ParallelSettings | None):
    """The communicator of this worker: MPI when launched with K > 1 and parallel training is asked for."""
    span = config.top.span_of("parallelTrain")
    launch = detect_launch()
    workers = launch.size if launch is not None else 1
    if parallel is None:
        if workers > 1:
            raise ConfigError(f"started by an MPI launcher with {workers} processes, but parallelTrain is "
                              f"not true: every process would train the same model into the same files",
                              span, hint="set parallelTrain = true and choose SGD.ParallelTrain."
                                         "parallelizationMethod, or run without mpiexec")
        return LocalCommunicator()
    if workers > 1 and parallel.method == "none":
        raise ConfigError(f"parallelTrain = true with {workers} workers, but no parallelization method",
                          span, hint="add SGD.ParallelTrain = { parallelizationMethod = \"DataParallelSGD\" }")
    if workers > 1 and parallel.method not in SUPPORTED_METHODS:
        raise parallel.error("parallelizationMethod", f"parallelizationMethod {parallel.method} (CNTK's Multiverso "
                             f"parameter server) is not supported",
                             hint="use DataParallelSGD, BlockMomentumSGD or ModelAveragingSGD")
    return get_communicator(True, span)


def gpu_workers_communicator(comm, backend):
    """K workers on GPUs exchange device buffers through NCCL, bootstrapped by their MPI communicator
    (runtime/distributed/nccl.py); on the CPU, or alone, the communicator stays as it is."""
    if comm.size <= 1 or backend.name != "cupy":
        return comm
    launch = detect_launch()
    return NcclCommunicator(comm, backend.xp, backend.nccl(), launch.local_rank if launch is not None else 0)


def save_resolved_config(config, model_path: str) -> None:
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.resolved.yaml")
    text = yaml.safe_dump(resolved_config_dict(config), sort_keys=False).encode("utf-8")
    atomic_write(path, lambda fh: fh.write(text))


def training_memory(view, network) -> MemoryEstimate:
    """What training the block's network takes: its buffers, and the planned values and gradients of
    one step of epoch 1's minibatch."""
    sgd = view.SGD
    criterion = network.node(sgd.trainCriterionNodeName) if sgd.trainCriterionNodeName else None
    criterion = criterion or network.groups["criterion"][0]
    evaluation = [n for n in network.groups.get("evaluation", []) if n is not criterion]
    plan = make_plan(network, evaluation, criterion, network.learnable_parameters)
    return estimate(network, plan, str(sgd.gradUpdateType).lower(), DTYPES.get(str(view.precision).lower(), "float32"),
                    int(sgd.minibatchSize.value(1)))


def run_train(config, name: str, view, progress: Progress | None = None, comm=None,
              resume_anyway: bool = False, profile: bool = False) -> list:
    """Train the block `name`. `resume_anyway`: resume from a checkpoint even when it was written with
    other training settings (otherwise that is a config error naming them). `profile`: time every
    step's phases on every worker (runtime/profile.py)."""
    progress = progress or Progress()
    settings = training_settings(config, name, view)
    check_supported(settings.parallel)
    comm = comm or communicator_for(config, settings.parallel)
    if comm.size <= 1:
        return _train(config, name, view, settings, progress, comm, resume_anyway, profile)
    install_failure_handlers(comm, announce=progress.enabled)   # pid -> rank, to name a killed rank
    if comm.rank != 0:
        progress = Progress(enabled=False, console=progress.console)
    with failure_guard(comm):
        try:
            return _train(config, name, view, settings, progress, comm, resume_anyway, profile)
        except TrainingInterrupted as stop:
            # Every worker stopped at the same minibatch and the checkpoint is written: a clean
            # exit with the interruption's code, not an abort of the job.
            interrupted = stop
    if comm.rank != 0:
        raise SystemExit(interrupted.exit_code)   # rank 0 tells the user; the others just stop
    raise interrupted


def truncation_settings(settings: TrainingSettings, reader: ReaderSettings, network) -> tuple[int, int | None] | None:
    """(window length, parallel sequences or None = minibatchSize / length) for truncated BPTT, or None.

    The reader's `truncated = true` takes `truncationLength`; CNTK's older spelling, SGD `truncated =
    true` without it, makes the window `minibatchSize` steps and runs the reader's
    `nbruttsineachrecurrentiter` sequences in parallel.
    """
    in_reader = reader.truncated
    if not (settings.truncated or in_reader):
        return None
    carryover.check_network(network)
    length = reader.truncation_length
    if length:
        return length, None
    if in_reader and not settings.truncated:
        raise reader.error("truncationLength", "truncated = true needs truncationLength (steps per window)",
                           hint="e.g. truncationLength = 20; minibatchSize / truncationLength sequences run "
                                "in parallel")
    return int(settings.minibatch_size.value(1)), reader.parallel_sequences


def _train(config, name: str, view, settings: TrainingSettings, progress: Progress, comm,
           resume_anyway: bool, profile: bool) -> list:
    ref = view.network_expr()
    if ref is None:
        raise view.block_error("the train action needs a network", hint="add network = { … } (or BrainScriptNetworkBuilder)")
    network = build_action_network(ref)
    require_training_nodes(network, ref.span)
    backend = common.backend_for(view)
    comm = gpu_workers_communicator(comm, backend)
    reader = reader_settings(view.reader)
    truncation = truncation_settings(settings, reader, network)
    require_fit(training_memory(view, network), backend.device, device_memory(backend), ref.span)
    record, record_spans = resume_record(config, view, network)
    directory = output_directory(settings.model_path)
    writer = comm.rank == 0
    if writer:
        make_directory(directory, "modelPath", settings.span_of("modelPath"))
    # One run per output directory, from before it looks for checkpoints until its final model.
    with directory_lock(directory, "modelPath", settings.span_of("modelPath"), enabled=writer):
        if os.path.exists(settings.model_path) and settings.make_mode:
            progress.message(f"{name}: the final model {settings.model_path} exists; nothing to do "
                             f"(makeMode = true; delete it or set makeMode = false to train again)")
            return []
        source = common.create_reader(reader, network, epoch_size=settings.epoch_size, dtype=backend.dtype,
                                      truncation=truncation)
        cv_source = None
        tensorboard = None
        try:
            if view.cvReader is not None:
                cv_source = common.create_reader(reader_settings(view.cvReader), network, randomize=False,
                                                 dtype=backend.dtype)
            trainer = Trainer(network, backend, settings, source, cv_source, progress, comm, resume_record=record,
                              profile=profile)
            if writer:
                tensorboard = tensorboard_log_for(settings, settings.epoch_size or getattr(source, "samples_per_sweep", 0))
                trainer.observers += [tensorboard] if tensorboard is not None else []
            resume = trainer.find_resume_point() if settings.make_mode else None
            if comm.size > 1:
                resume = comm.bcast(resume, 0)   # rank 0's view of the files decides for everyone
            if resume:
                check_resume(trainer.checkpoint_settings(resume), record, record_spans, resume, resume_anyway,
                             progress)
                start = trainer.restore(resume)
                trainer.start_epoch = start
                progress.message(f"{name}: resuming from epoch {start} ({os.path.basename(resume)})")
            else:
                if not settings.make_mode and trainer.find_resume_point():
                    progress.message(f"{name}: makeMode = false: starting fresh, ignoring existing checkpoints")
                trainer.initialize()
                trainer.precompute()
            if comm.rank == 0:
                save_resolved_config(config, settings.model_path)
            parallel = settings.parallel
            workers = f" with {parallel.describe(comm.size)}" if comm.size > 1 and parallel is not None else ""
            progress.message(f"{name}: {network.parameter_count():,} learnable parameters; "
                             f"training {settings.max_epochs} epochs on {backend.device} ({backend.dtype.__name__})"
                             f"{workers}")
            return trainer.train()
        finally:
            for s in (source, cv_source, tensorboard):
                close = getattr(s, "close", None)
                if close:
                    close()
