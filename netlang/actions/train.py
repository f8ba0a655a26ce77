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
from netlang.actions.resume import check_resume, training_settings
from netlang.actions.runlock import directory_lock
from netlang.compiler.graph.network import build_action_network, require_training_nodes
from netlang.compiler.lang.config import resolved_config_dict
from netlang.errors import ConfigError, NetworkError, TrainingInterrupted
from netlang.ir.modelfile import atomic_write
from netlang.runtime.autoadjust import AutoAdjustSettings
from netlang.runtime.backend import DTYPES
from netlang.runtime.distributed import (
    LocalCommunicator,
    detect_launch,
    failure_guard,
    get_communicator,
    install_failure_handlers,
)
from netlang.runtime.learners import SGDSettings
from netlang.runtime.memory import MemoryEstimate, device_memory, estimate, require_fit
from netlang.runtime.parallel import FULL_PRECISION_BITS, QUANTIZED_BITS, SUPPORTED_METHODS, ParallelSettings
from netlang.runtime.progress import Progress
from netlang.runtime.trainer import Trainer, TrainSettings


def sgd_values(sgd_view) -> dict:
    """The SGD block's typed values by CNTK key (what SGDSettings.from_cntk reads)."""
    return {f.name: value for f, value, _ in sgd_view.items() if value is not None}


def train_settings(config, name: str, view) -> TrainSettings:
    sgd = view.SGD
    model_path = view.modelPath
    if not model_path:
        raise view.block_error("the train action needs modelPath", hint="set modelPath = \"out/model.dnn\"")
    out_dir = os.path.dirname(os.path.abspath(model_path))
    evaluation = [sgd.evalCriterionNodeName] if sgd.evalCriterionNodeName else None
    dropout = sgd.dropoutRate
    return TrainSettings(
        model_path=model_path,
        max_epochs=int(sgd.maxEpochs),
        minibatch_size=lambda epoch: int(sgd.minibatchSize.value(epoch)),
        epoch_size=int(sgd.epochSize or 0),
        num_mbs_to_show_result=int(sgd.numMBsToShowResult or 0),
        first_mbs_to_show_result=int(sgd.firstMBsToShowResult or 0),
        keep_checkpoint_files=bool(sgd.keepCheckPointFiles),
        make_mode=bool(view.makeMode),
        dropout_rate=(lambda epoch: float(dropout.value(epoch))) if dropout is not None else None,
        seed=common.top_seed(config),
        metrics_log=os.path.join(out_dir, "metrics.jsonl"),
        criterion=sgd.trainCriterionNodeName,
        auto_adjust=AutoAdjustSettings.from_view(sgd.AutoAdjust),
        evaluation=evaluation,
        meta={"config": config.path, "action": name},
    )


def training_memory(view, network) -> MemoryEstimate:
    """What training the block's network takes: its buffers, and activations for epoch 1's minibatch."""
    sgd = SGDSettings.from_cntk(sgd_values(view.SGD), view.SGD.span)
    return estimate(network, sgd.grad_update_type, DTYPES.get(str(view.precision).lower(), "float32"),
                    int(view.SGD.minibatchSize.value(1)))


def parallel_settings(config, view) -> ParallelSettings | None:
    """`SGD.ParallelTrain` as ParallelSettings; None unless the top level says parallelTrain = true."""
    if not config.top.parallelTrain:
        return None
    block = view.SGD.ParallelTrain
    if block is None:
        return ParallelSettings()
    method = block.parallelizationMethod
    values = {"method": method, "start_epoch": int(block.parallelizationStartEpoch),
              "span": block.span_of("parallelizationMethod")}
    if method == "DataParallelSGD" and block.DataParallelSGD is not None:
        values.update(_data_parallel_values(block.DataParallelSGD))
    if method == "BlockMomentumSGD" and block.BlockMomentumSGD is not None:
        values.update(_block_momentum_values(block.BlockMomentumSGD))
    if method == "ModelAveragingSGD" and block.ModelAveragingSGD is not None:
        values.update(_block_size_values(block.ModelAveragingSGD, ("syncPeriod", "syncFrequencyInFrames")))
    return ParallelSettings(**values)


def _data_parallel_values(block) -> dict:
    values = {"zero_threshold": bool(block.useZeroThresholdFor1BitQuantization),
              "longer_axis": bool(block.quantizeAlongLongerAxis)}
    schedule = block.gradientBits
    if schedule is not None:
        for bits in schedule.values:
            if int(bits) not in QUANTIZED_BITS and int(bits) < FULL_PRECISION_BITS:
                raise block.error("gradientBits", f"gradientBits = {bits} is not supported",
                                  hint="use 1, 2, 4 or 8 for quantised aggregation, or 32 (64 in double "
                                       "precision, the default) for full precision")
        values["gradient_bits"] = lambda epoch: int(schedule.value(epoch))
    return values


def _block_momentum_values(block) -> dict:
    values = _block_size_values(block, ("syncPeriod",))
    values.update(block_learning_rate=float(block.blockLearningRate),
                  block_momentum_per_sync=block.blockMomentumPerSync,
                  block_momentum_as_time_constant=block.blockMomentumAsTimeConstant,
                  use_nesterov=bool(block.useNesterovMomentum), reset_sgd_momentum=bool(block.resetSGDMomentum))
    return values


def _block_size_values(block, legacy_per_worker: tuple[str, ...]) -> dict:
    """blockSize (all workers) or blockSizePerWorker; CNTK's legacy keys count per worker."""
    per_worker = block.blockSizePerWorker
    for key in legacy_per_worker:
        if per_worker is None and block.blockSize is None and block[key] is not None:
            per_worker = block[key]
    return {"block_size": block.blockSize, "block_size_per_worker": per_worker}


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
        raise ConfigError(f"parallelizationMethod {parallel.method} (CNTK's Multiverso parameter server) is not "
                          f"supported", parallel.span, key="parallelizationMethod",
                          hint="use DataParallelSGD, BlockMomentumSGD or ModelAveragingSGD")
    return get_communicator(True, span)


def save_resolved_config(config, model_path: str) -> None:
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.resolved.yaml")
    text = yaml.safe_dump(resolved_config_dict(config), sort_keys=False).encode("utf-8")
    atomic_write(path, lambda fh: fh.write(text))


def run_train(config, name: str, view, progress: Progress | None = None, comm=None,
              resume_anyway: bool = False) -> list:
    """Train the block `name`. `resume_anyway`: resume from a checkpoint even when it was written with
    other training settings (otherwise that is a config error naming them)."""
    progress = progress or Progress()
    parallel = parallel_settings(config, view)
    comm = comm or communicator_for(config, parallel)
    if comm.size <= 1:
        return _train(config, name, view, progress, comm, parallel, resume_anyway)
    install_failure_handlers(comm, announce=progress.enabled)   # pid -> rank, to name a killed rank
    if comm.rank != 0:
        progress = Progress(enabled=False, console=progress.console)
    with failure_guard(comm):
        try:
            return _train(config, name, view, progress, comm, parallel, resume_anyway)
        except TrainingInterrupted as stop:
            # Every worker stopped at the same minibatch and the checkpoint is written: a clean
            # exit with the interruption's code, not an abort of the job.
            interrupted = stop
    if comm.rank != 0:
        raise SystemExit(interrupted.exit_code)   # rank 0 tells the user; the others just stop
    raise interrupted


def truncation_settings(view, settings, network) -> tuple[int, int | None] | None:
    """(window length, parallel sequences or None = minibatchSize / length) for truncated BPTT, or None.

    The reader's `truncated = true` takes `truncationLength`; CNTK's older spelling, SGD `truncated =
    true` without it, makes the window `minibatchSize` steps and runs the reader's
    `nbruttsineachrecurrentiter` sequences in parallel.
    """
    reader = view.reader
    in_reader = bool(reader is not None and reader.truncated)
    if not (view.SGD.truncated or in_reader):
        return None
    for node in network.nodes:
        if node.op == "FutureValue":
            raise NetworkError(f"truncated BPTT cannot run FutureValue '{node.name}': it would read steps of the "
                               "next window, which is not there yet", node.span,
                               hint="train a network with FutureValue (a backward or bidirectional layer) on "
                                    "whole sequences: truncated = false")
        if node.op == "OptimizedRNNStack":
            raise NetworkError(f"truncated BPTT cannot carry the state of the fused OptimizedRNNStack "
                               f"'{node.name}' across minibatches", node.span,
                               hint="use the composed layers (RecurrentLSTMLayer, BS.RNNs.RecurrentLSTMPStack …), "
                                    "which carry it, or truncated = false")
    length = reader.truncationLength if reader is not None else 0
    if length:
        return length, None
    if in_reader and not view.SGD.truncated:
        raise reader.error("truncationLength", "truncated = true needs truncationLength (steps per window)",
                           hint="e.g. truncationLength = 20; minibatchSize / truncationLength sequences run "
                                "in parallel")
    parallel = reader.nbruttsineachrecurrentiter if reader is not None else 1
    return int(settings.minibatch_size(1)), int(parallel or 1)


def _train(config, name: str, view, progress: Progress, comm, parallel: ParallelSettings | None,
           resume_anyway: bool) -> list:
    ref = view.network_expr()
    if ref is None:
        raise view.block_error("the train action needs a network", hint="add network = { … } (or BrainScriptNetworkBuilder)")
    network = build_action_network(ref)
    require_training_nodes(network, ref.span)
    backend = common.backend_for(view)
    settings = train_settings(config, name, view)
    truncation = truncation_settings(view, settings, network)
    sgd = SGDSettings.from_cntk(sgd_values(view.SGD), view.SGD.span)
    require_fit(training_memory(view, network), backend.device, device_memory(backend), ref.span)
    settings.resume_settings, setting_spans = training_settings(config, view, network)
    directory = output_directory(settings.model_path)
    writer = comm.rank == 0
    if writer:
        make_directory(directory, "modelPath", view.span_of("modelPath"))
    # One run per output directory, from before it looks for checkpoints until its final model.
    with directory_lock(directory, "modelPath", view.span_of("modelPath"), enabled=writer):
        if os.path.exists(settings.model_path) and settings.make_mode:
            progress.message(f"{name}: the final model {settings.model_path} exists; nothing to do "
                             f"(makeMode = true; delete it or set makeMode = false to train again)")
            return []
        source = common.create_reader(view.reader, network, epoch_size=settings.epoch_size, dtype=backend.dtype,
                                      truncation=truncation)
        cv_source = None
        try:
            if view.cvReader is not None:
                cv_source = common.create_reader(view.cvReader, network, randomize=False, dtype=backend.dtype)
            trainer = Trainer(network, backend, sgd, settings, source, cv_source, progress, comm, parallel)
            resume = trainer.find_resume_point() if settings.make_mode else None
            if comm.size > 1:
                resume = comm.bcast(resume, 0)   # rank 0's view of the files decides for everyone
            if resume:
                check_resume(trainer.checkpoint_settings(resume), settings.resume_settings, setting_spans,
                             resume, resume_anyway, progress)
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
            workers = f" with {parallel.describe(comm.size)}" if comm.size > 1 and parallel is not None else ""
            progress.message(f"{name}: {network.parameter_count():,} learnable parameters; "
                             f"training {settings.max_epochs} epochs on {backend.device} ({backend.dtype.__name__})"
                             f"{workers}")
            return trainer.train()
        finally:
            for s in (source, cv_source):
                close = getattr(s, "close", None)
                if close:
                    close()
