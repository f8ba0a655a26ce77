"""The training loop: epochs → minibatches → step (forward, backward, update), checkpoints, resume.

Semantics are CNTK's (DESIGN §5): criteria are sums over the minibatch's samples and learning rates
are per sample; an epoch is `epochSize` samples (0 = one sweep); after every epoch the model is
written as `<modelPath>.<epoch>` together with a checkpoint `<modelPath>.<epoch>.ckp` holding the
learner, reader and random state; the last epoch also writes `<modelPath>`. A restarted run with
`makeMode` resumes from the newest complete checkpoint. SIGINT/SIGTERM stop at the next minibatch
boundary, write a checkpoint `<modelPath>.ckp` for the position reached, and raise
TrainingInterrupted (exit 130); the next run resumes from there.

With K > 1 workers (`mpiexec -n K netlang train`) the loop is the same on every worker; the
parallel strategy (runtime/parallel.py) decides which share of each minibatch a worker reads and
what is exchanged around the learner step. Totals (samples, criterion, metrics) are summed over the
workers, so progress and epoch results are global; rank 0 alone writes models, checkpoints and logs.

The criterion and metric sums stay on the device: the loop adds them up there and reads them (a
synchronisation with the device) only where it reports, every `numMBsToShowResult` minibatches, at
the end of an epoch and when it writes a mid-epoch checkpoint. There it also checks that the
criterion is finite; a diverged run stops at the next report with the error naming the criterion.
With several workers each adds up its own share, and the shares are summed over the workers at
those points too (one exchange of a few numbers), never every minibatch.

`profile` (`netlang train --profile`) times each step's phases on every worker (runtime/profile.py)
and prints a table of them, one row per rank, after every epoch.
"""
from __future__ import annotations

import glob
import math
import os
import re
import signal
import time
from dataclasses import dataclass

from netlang.compiler.graph.network import require_scalar_criterion
from netlang.compiler.lang.settings import TrainingSettings
from netlang.errors import DataError, DataPosition, NetworkError, TrainingInterrupted
from netlang.ir import modelfile as modelio
from netlang.ir.graph import Network, Node
from netlang.ir.shapes import to_runtime
from netlang.ops import registry
from netlang.runtime.autoadjust import adjuster_for
from netlang.runtime.backend import Backend
from netlang.runtime.carryover import CarryOver
from netlang.runtime.divergence import DivergenceWatch
from netlang.runtime.executor import Executor, host_sample_count, initial_parameters
from netlang.runtime.feeding import feeds_from_minibatch
from netlang.runtime.flatbuffer import FlatParameters
from netlang.runtime.learners import Learner, create_learner
from netlang.runtime.parallel import create_strategy
from netlang.runtime.precision import LossScaler, all_finite
from netlang.runtime.profile import PHASES, StepProfile, format_profile
from netlang.runtime.progress import Progress
from netlang.runtime.stepgraph import CompiledStep


@dataclass
class EpochResult:
    epoch: int
    samples: int
    criterion: float
    metrics: dict[str, float]
    seconds: float
    learning_rate: float
    cv: dict[str, float] | None = None
    criterion_name: str = "criterion"


class Trainer:
    def __init__(self, network: Network, backend: Backend, settings: TrainingSettings,
                 source, cv_source=None, progress: Progress | None = None, comm=None,
                 resume_record: dict | None = None, profile: bool = False):
        """`resume_record`: what a run resuming from this one's checkpoints must share with it
        (actions/resume.py); stored in every checkpoint. `profile`: time every step's phases
        (runtime/profile.py)."""
        self.network = network
        self.backend = backend
        self.settings = settings
        self.source = source
        self.cv_source = cv_source
        self.progress = progress or Progress(enabled=False)
        self.comm = comm
        self.criterion = self._criterion_node()
        self.evaluations = self._evaluation_nodes()
        params = network.parameters
        # CNTK trains the parameters its criterion depends on; any other one stays as it is.
        trained = {p.name for p in network.trained_parameters(self.criterion)}
        self.flat = FlatParameters([(p.name, to_runtime(p.shape)) for p in params], backend=backend,
                                   lr_multipliers={p.name: p.learning_rate_multiplier if p.name in trained else 0.0
                                                   for p in params})
        self.executor = Executor(network, backend, {p.name: self.flat.view(p.name) for p in params},
                                 seed=settings.seed)
        self.learnable = [p for p in params if p.name in trained]
        self.grad_views = {p.name: self.flat.grad_view(p.name) for p in self.learnable}
        self.adjuster = adjuster_for(settings.auto_adjust)
        self.learner: Learner = create_learner(settings.sgd, self.flat)
        self.profile = StepProfile(enabled=profile)
        self.parallel = create_strategy(settings.parallel, comm, self.flat, self.learner, self.executor, settings.seed,
                                        self.profile)
        self.loss_scaler = LossScaler() if backend.compute.name == "fp16" else None
        self.compiled = CompiledStep(backend, backend.graphs, settings.cuda_graph, say=self.progress.message,
                                     state_of=lambda: self.executor.state, options=self.executor.options)
        self.start_epoch = 1
        self.resume_position: dict | None = None
        self.observers: list = []      # called with each record of metrics.jsonl (TensorBoard, runtime/tensorboard.py)
        self._stop_signal: int | None = None
        self.resume_record = resume_record
        self._checkpoints: dict[str, modelio.ModelFile] = {}   # loaded while looking for a resume point
        self._log_size = 0                                      # bytes of the metrics log this run stands on
        self.divergence = DivergenceWatch(self.criterion.name)

    # ---- setup -----------------------------------------------------------------------------------
    def _criterion_node(self) -> Node:
        crits = self.network.groups.get("criterion", [])
        if self.settings.criterion:
            node = self.network.node(self.settings.criterion)
            if node is None:
                raise NetworkError(f"no node named '{self.settings.criterion}' (trainCriterionNodeName)",
                                   self.settings.span_of("trainCriterionNodeName"))
            require_scalar_criterion(node)
            return node
        if not crits:
            raise NetworkError("the network has no criterion node", self.network.span,
                               hint="add criterionNodes = (ce) or tag='criterion' to the loss")
        return crits[0]

    def _evaluation_nodes(self) -> list[Node]:
        if self.settings.evaluation:
            out = []
            for name in self.settings.evaluation:
                node = self.network.node(name)
                if node is None:
                    raise NetworkError(f"no node named '{name}' (evalCriterionNodeName)",
                                       self.settings.span_of("evalCriterionNodeName"))
                out.append(node)
            return out
        return [n for n in self.network.groups.get("evaluation", []) if n is not self.criterion]

    def initialize(self, parameters: dict | None = None) -> None:
        values = parameters or initial_parameters(self.network, self.settings.seed)
        self.flat.copy_from(values)
        self._rewind_metrics_log(0)      # a fresh start: records of earlier runs do not belong to it

    def precompute(self) -> None:
        """Gather the statistics of Mean/InvStdDev nodes over one sweep of the data, before training."""
        nodes = [n for n in self.network.nodes if registry.get(n.op).precompute]
        if not nodes:
            return
        self.progress.message(f"precomputing {', '.join(n.name for n in nodes)} over the training data")
        self.executor.options["precompute_pass"] = True
        try:
            evaluate(self.executor, self.network, self.source, nodes,
                     int(self.settings.minibatch_size.value(1)), self.backend)
        finally:
            self.executor.options.pop("precompute_pass", None)
        for node in nodes:
            registry.get(node.op).finalize(self.executor.state[node.id], self.backend.xp)

    # ---- checkpoints -------------------------------------------------------------------------------
    def epoch_model_path(self, epoch: int) -> str:
        return f"{self.settings.model_path}.{epoch}"

    def checkpoint_path(self, epoch: int | None) -> str:
        return f"{self.settings.model_path}.ckp" if epoch is None else f"{self.settings.model_path}.{epoch}.ckp"

    def _training_state(self, epoch: int, position: dict | None) -> dict:
        return {"epoch": epoch, "position": position, "reader": self.source.state(),
                "rng": self.executor.rng.state(),
                "learner": {k: v for k, v in self.learner.state_dict().items() if not _is_array(v)},
                "autoAdjust": self.adjuster.state() if self.adjuster else None,
                "settings": self.resume_record, "metricsLogSize": self._log_size,
                "divergence": self.divergence.state(),
                "lossScale": self.loss_scaler.state() if self.loss_scaler else None}

    def _state_arrays(self) -> dict:
        arrays = {f"learner/{k}": self.backend.to_host(v)
                  for k, v in self.learner.state_dict().items() if _is_array(v)}
        arrays.update(self.executor.state_arrays())
        return arrays

    def save_checkpoint(self, epoch: int, position: dict | None) -> str:
        path = self.checkpoint_path(None if position else epoch)
        parallel_state = self.parallel.checkpoint_arrays(mid_epoch=bool(position))  # every worker's part
        if self.comm is None or self.comm.rank == 0:
            state = self._state_arrays()
            state.update(parallel_state)
            modelio.save_model(path, self.network, self.flat.to_dict(), state=state,
                               training=self._training_state(epoch, position), meta=self.settings.meta)
        self.parallel.barrier()   # the file is complete before any worker moves on (or stops)
        return path

    def save_model(self, path: str) -> None:
        if self.comm is None or self.comm.rank == 0:
            modelio.save_model(path, self.network, self.flat.to_dict(), state=self.executor.state_arrays(),
                               meta=self.settings.meta)

    def find_resume_point(self) -> str | None:
        """The newest checkpoint that loads: an interrupted run's `.ckp` or the last epoch's. A damaged
        one is passed over, with a warning, for the complete one before it."""
        candidates = []
        for path in glob.glob(glob.escape(self.settings.model_path) + ".*.ckp"):
            m = re.search(r"\.(\d+)\.ckp$", path)
            if m and os.path.exists(self.epoch_model_path(int(m.group(1)))):
                candidates.append((int(m.group(1)), 0, path))
        interrupted = self.checkpoint_path(None)
        damaged = []
        if os.path.exists(interrupted) and self._load_checkpoint(interrupted, damaged) is not None:
            epoch = (self._checkpoints[interrupted].training or {}).get("epoch")
            if type(epoch) is int:
                candidates.append((epoch - 1, 1, interrupted))
            else:
                damaged.append(f"the checkpoint {os.path.basename(interrupted)} is damaged (it has no epoch)")
        for _, _, path in sorted(candidates, reverse=True):
            if self._load_checkpoint(path, damaged) is not None:
                if damaged:
                    self.progress.message(f"warning: {damaged[0]}; resuming from the complete checkpoint "
                                          f"before it, {os.path.basename(path)}")
                return path
        if damaged:
            raise DataError(f"no checkpoint of this run can be used: {'; '.join(damaged)}",
                            DataPosition(self.settings.model_path),
                            hint="makeMode = false starts the training afresh")
        return None

    def _load_checkpoint(self, path: str, damaged: list) -> modelio.ModelFile | None:
        if path not in self._checkpoints:
            try:
                self._checkpoints[path] = modelio.load_model(path)
            except DataError as err:
                damaged.append(f"the checkpoint {os.path.basename(path)} is damaged ({err.message})")
                return None
        return self._checkpoints[path]

    def checkpoint_settings(self, path: str) -> dict | None:
        """The training settings a checkpoint was written with (None from an older netlang)."""
        return (self._load_checkpoint(path, []).training or {}).get("settings")

    def restore(self, path: str) -> int:
        """Load a checkpoint; returns the epoch to continue with."""
        ckpt = self._checkpoints.pop(path, None) or modelio.load_model(path)
        self._checkpoints.clear()
        self.flat.copy_from(ckpt.parameters)
        training = ckpt.training or {}
        if not isinstance(training.get("reader"), dict) or not isinstance(training.get("rng"), dict):
            raise DataError("damaged checkpoint: it holds no reader or random state", DataPosition(path),
                            hint=modelio.DAMAGED_HINT)
        learner_state = dict(training.get("learner", {}))
        for key, value in ckpt.state.items():
            if key.startswith("learner/"):
                learner_state[key[8:]] = self.backend.from_host(value, self.backend.dtype) \
                    if value.dtype.kind == "f" else value
        self.learner.load_state_dict(learner_state)
        self.executor.load_state_arrays(ckpt.state)
        note = self.parallel.restore_arrays(ckpt.state)
        if note:
            self.progress.message(note)
        self.source.restore(training["reader"])
        self.executor.rng.restore(training["rng"])
        if self.adjuster is not None and training.get("autoAdjust"):
            self.adjuster.load_state(training["autoAdjust"])
        self.divergence.load_state(training.get("divergence"))
        self._rewind_metrics_log(training.get("metricsLogSize"))
        if self.loss_scaler is not None and training.get("lossScale"):
            self.loss_scaler.load_state(training["lossScale"])
        position = training.get("position")
        self.resume_position = position
        epoch = _int(training.get("epoch"), path)
        return epoch if position else epoch + 1

    def _cleanup_checkpoints(self, epoch: int) -> None:
        """Remove the checkpoints of epochs before `epoch` (unless keepCheckPointFiles)."""
        if self.settings.keep_checkpoint_files or (self.comm is not None and self.comm.rank != 0):
            return
        for older in range(1, epoch):
            try:
                os.remove(self.checkpoint_path(older))
            except FileNotFoundError:
                pass

    # ---- the loop ----------------------------------------------------------------------------------
    def train(self) -> list[EpochResult]:
        results = []
        previous = self._install_signal_handlers()
        try:
            self.parallel.begin()
            for epoch in range(self.start_epoch, self.settings.max_epochs + 1):
                result = self.train_epoch(epoch)
                results.append(result)
                if self.adjuster is not None:
                    self._adjust_learning_rate(result)
                # Logged before the checkpoint, which records how much of the log it stands on.
                self._log({"event": "epoch", **_result_dict(result), **self.parallel.log_fields()})
                self.save_model(self.epoch_model_path(epoch))
                self.save_checkpoint(epoch, None)
                self._remove_interrupt_checkpoint()
                self._cleanup_checkpoints(epoch - 1)   # the one before stays while training: a fallback
                self.progress.epoch_done(result, self.settings.max_epochs)
            self.save_model(self.settings.model_path)
            self._cleanup_checkpoints(self.settings.max_epochs)
        finally:
            self._restore_signal_handlers(previous)
        return results

    def _adjust_learning_rate(self, result: EpochResult) -> None:
        """AutoAdjust after an epoch: maybe go back to the best epoch's model, then scale the rate."""
        action, best_epoch = self.adjuster.after_epoch(result)
        if action is None:
            return
        if best_epoch is not None and best_epoch != result.epoch:
            self.flat.copy_from(modelio.load_model(self.epoch_model_path(best_epoch)).parameters)
            self.progress.message(f"AutoAdjust: epoch {result.epoch} did worse; back to the model of epoch {best_epoch}")
        self.learner.learning_rate_factor *= self.adjuster.factor(action)
        self.progress.message(f"AutoAdjust: learning rate {action}d to "
                              f"{self.learner.learning_rate_per_sample(result.epoch + 1):.6g} per sample")

    def _remove_interrupt_checkpoint(self) -> None:
        if self.comm is None or self.comm.rank == 0:
            try:
                os.remove(self.checkpoint_path(None))
            except FileNotFoundError:
                pass

    def train_epoch(self, epoch: int) -> EpochResult:
        """One epoch: the source decides where it ends (`epochSize` samples or one sweep)."""
        mb_size = int(self.settings.minibatch_size.value(epoch))
        position = self.resume_position or {}
        self.resume_position = None
        totals = {"samples": position.get("samples", 0), "criterion": position.get("criterion", 0.0),
                  "metrics": dict(position.get("metrics", {})), "minibatches": position.get("minibatches", 0),
                  "seconds": position.get("seconds", 0.0)}
        window = {"samples": 0, "criterion": 0.0, "metrics": {}, "first_mb": totals["minibatches"] + 1,
                  **position.get("window", {}), "start": time.perf_counter()}
        pending = {"samples": 0, "criterion": 0.0, "metrics": {}}   # this worker's sums since the last reading
        self.executor.options["dropoutRate"] = float(self.settings.dropout_rate.value(epoch))
        start = time.perf_counter() - totals["seconds"]
        lr = self.learner.learning_rate_per_sample(epoch)
        epoch_samples = self.settings.epoch_size or getattr(self.source, "samples_per_sweep", 0)
        self.progress.epoch_start(epoch, self.settings.max_epochs, epoch_samples)
        self.parallel.before_epoch(epoch, resumed=bool(position))
        if not position:
            self.source.start_epoch(epoch - 1)
            self.executor.forget_carried()
        rank, workers = self.parallel.reading()
        self.profile.reset()
        while True:
            if self.parallel.any_rank(self._stop_signal is not None):
                self._read_sums(pending, totals, window)
                totals["seconds"] = time.perf_counter() - start
                self._interrupt(epoch, totals, window)
            with self.profile.phase("read"):
                minibatch = self.source.next_minibatch(mb_size, rank, workers)
            # Every worker steps while the global minibatch has samples, even with an empty share.
            if (minibatch.global_num_samples if workers > 1 else minibatch.num_samples):
                crit, metrics, n = self.step(epoch, minibatch)
                pending["samples"] += n
                pending["criterion"] += crit
                for k, v in metrics.items():
                    pending["metrics"][k] = pending["metrics"].get(k, 0.0) + v
                totals["minibatches"] += 1
                self._maybe_report(epoch, totals, pending, window, lr, workers)
            if minibatch.end_of_epoch:
                break
        self.parallel.end_epoch()
        self.executor.forget_carried()      # every slot ran dry; nothing carried belongs in the model
        self._read_sums(pending, totals, window)
        self._report_profile(epoch)
        self._check_finite(totals["criterion"], epoch)
        if window["samples"]:               # what no report covered is watched too
            self._watch(epoch, window, totals["minibatches"] - window["first_mb"] + 1, lr)
        seconds = time.perf_counter() - start
        samples = max(totals["samples"], 1)
        result = EpochResult(epoch, totals["samples"], totals["criterion"] / samples,
                             {k: v / samples for k, v in totals["metrics"].items()}, seconds, lr,
                             criterion_name=self.criterion.name)
        if self.cv_source is not None:
            result.cv = evaluate(self.executor, self.network, self.cv_source, [self.criterion] + self.evaluations,
                                 mb_size, self.backend)["metrics"]
        return result

    def step(self, epoch: int, minibatch) -> tuple[object, dict, int]:
        """One update; returns this worker's criterion and metric sums (on the device) and samples."""
        local = int(minibatch.num_samples)
        if local and self._graph_step_possible(minibatch):
            feeds = feeds_from_minibatch(self.network, minibatch, self.backend.dtype)
            samples = host_sample_count(self.network, self.criterion, feeds)
            if samples:
                return self._graph_step(epoch, feeds, samples)
        if local:
            with self.profile.phase("read"):
                feeds = feeds_from_minibatch(self.network, minibatch, self.backend.dtype)
                carry = None
                if minibatch.slots is not None:   # truncated BPTT: windows continue the previous minibatch's
                    carry = CarryOver.of(minibatch.slots, minibatch.steps_before, self.backend)
            if self.loss_scaler is not None:
                self.executor.options["lossScale"] = self.loss_scaler.scale
            with self.profile.phase("forward"):   # the strategy's hooks mark where backward begins
                outputs, _ = self.executor.run(feeds, self.evaluations, loss=self.criterion, wrt=self.learnable,
                                               grads=self.grad_views, training=True, carry=carry,
                                               hooks=self.parallel)
            # The criterion sums over its labels' samples (per-sequence labels: sequences); the
            # learning rate and the reported averages are per such sample, as in CNTK.
            local = self.executor.sample_counts.get(self.criterion.name, local)
            crit = _device_sum(outputs[self.criterion.name])
            metrics = {node.name: _device_sum(outputs[node.name]) for node in self.evaluations}
        else:  # this worker's share of the global minibatch is empty: it adds nothing
            self.flat.zero_grad()
            crit, metrics = 0.0, {node.name: 0.0 for node in self.evaluations}
        with self.profile.phase("communicate"):
            samples = self.parallel.after_backward(self.flat.grad[self.flat.trainable], local)
        with self.profile.phase("update"):
            if samples and self._unscaled():
                self.learner.step(epoch, samples)
            self.parallel.after_update(local, minibatch.global_num_samples)
        self.profile.step_done()
        return crit, metrics, local

    def _graph_step_possible(self, minibatch) -> bool:
        """A step that may be captured (runtime/stepgraph.py): on a backend that captures, with CUDA
        graphs on, one worker (MPI exchanges run on the host), no fp16 loss scaling (its overflow
        check reads the device), a learner update that can be replayed, no truncated BPTT carry."""
        if self.backend.graphs is None:
            return False
        reason = None
        if not self.settings.cuda_graph:
            reason = "CUDA graphs are off (cudaGraph = false or --no-cuda-graph)"
        elif self.parallel.workers > 1:
            reason = "data-parallel workers exchange gradients through MPI on the host"
        elif self.loss_scaler is not None:
            reason = "fp16 loss scaling checks every step's gradients on the host"
        elif not self.learner.capturable:
            reason = "the learner's update is not a fused device kernel (or adds noise drawn on the host)"
        elif minibatch.slots is not None:
            reason = "truncated BPTT carries state between minibatches"
        if reason is not None:
            self.compiled.note(f"training steps are not captured as CUDA graphs: {reason}; they run eagerly")
            return False
        return True

    def _graph_step(self, epoch: int, feeds: dict, samples: int) -> tuple[object, dict, int]:
        """One step through the compiled step: the same forward, backward, update and sums as the
        eager step, captured per bucket; the learner's numbers for this step are uploaded before."""
        hyper = self.learner.fused_hyper(epoch, samples)

        def body(bound_feeds):
            outputs, _ = self.executor.run(bound_feeds, self.evaluations, loss=self.criterion, wrt=self.learnable,
                                           grads=self.grad_views, training=True)
            sums = {node.name: _device_sum(outputs[node.name]) for node in [self.criterion] + self.evaluations}
            self.learner.apply_fused(self.backend.upload_scalars(hyper))
            return sums

        sums = self.compiled.run(feeds, body, {("scalars",): hyper})
        self.learner.steps += 1
        return sums[self.criterion.name], {node.name: sums[node.name] for node in self.evaluations}, samples

    def _unscaled(self) -> bool:
        """fp16: whether the (summed) gradient is finite; if so it is divided by the loss scale for
        the update, if not the step is skipped and the scale lowered (runtime/precision.LossScaler)."""
        if self.loss_scaler is None:
            return True
        grad = self.flat.grad[self.flat.trainable]
        scale = self.loss_scaler.scale
        if not self.loss_scaler.update(all_finite(grad, self.backend.xp)):
            return False
        grad *= 1.0 / scale
        return True

    def _read_sums(self, pending: dict, totals: dict, window: dict) -> None:
        """Add this worker's sums since the last reading (`pending`, on the device), summed over the
        workers, to the epoch's `totals` and the report `window`, and start `pending` afresh: the
        loop's synchronisation point (the device finishes the steps queued so far; the workers
        exchange a few numbers)."""
        self.backend.synchronize()
        names = [node.name for node in self.evaluations]
        local = [float(pending["samples"]), _host_number(self.backend, pending["criterion"])]
        local += [_host_number(self.backend, pending["metrics"].get(k, 0.0)) for k in names]
        summed = self.parallel.sum_over_workers(local)
        for sums in (totals, window):
            sums["samples"] += round(summed[0])
            sums["criterion"] += summed[1]
            for k, v in zip(names, summed[2:]):
                sums["metrics"][k] = sums["metrics"].get(k, 0.0) + v
        pending.update(samples=0, criterion=0.0, metrics={})

    def _check_finite(self, criterion: float, epoch: int) -> None:
        if not math.isfinite(criterion):
            rate = self.learner.learning_rate_per_sample(epoch)
            raise NetworkError(f"the criterion '{self.criterion.name}' became {criterion} in epoch {epoch}",
                               self.criterion.span, hint=f"lower the learning rate ({rate:.6g} per sample in "
                                                         f"epoch {epoch}) or check the data")

    def _watch(self, epoch: int, sums: dict, minibatches: int, lr: float) -> None:
        """Show the divergence watch a window of minibatches whose sums are on the host."""
        warning = self.divergence.observe(sums["criterion"], sums["samples"], minibatches, epoch, lr)
        if warning:
            self.progress.message(f"warning: {warning}")

    def _maybe_report(self, epoch: int, totals: dict, pending: dict, window: dict, lr: float,
                      workers: int) -> None:
        mbs = totals["minibatches"]
        every = self.settings.num_mbs_to_show_result
        first = self.settings.first_mbs_to_show_result
        if not ((every and mbs % every == 0) or (first and mbs <= first)):
            # between reports the bar counts this worker's samples as every worker's
            self.progress.advance(totals["samples"] + pending["samples"] * workers)
            return
        self._read_sums(pending, totals, window)   # first: the time then covers the queued steps
        self._check_finite(window["criterion"], epoch)
        seconds = max(time.perf_counter() - window["start"], 1e-9)
        n = max(window["samples"], 1)
        report = {"event": "minibatch", "epoch": epoch, "minibatches": [window["first_mb"], mbs],
                  "samples": window["samples"], "criterion": {self.criterion.name: window["criterion"] / n},
                  "metrics": {k: v / n for k, v in window["metrics"].items()},
                  "learningRatePerSample": lr, "samplesPerSecond": window["samples"] / seconds,
                  "epochSamples": totals["samples"]}
        self.progress.report(report, self.settings.max_epochs, totals["samples"])
        self._log(report)
        self._watch(epoch, window, mbs - window["first_mb"] + 1, lr)
        window.update(samples=0, criterion=0.0, metrics={}, start=time.perf_counter(), first_mb=mbs + 1)

    def _report_profile(self, epoch: int) -> None:
        """With `--profile`: every rank's time per step by phase, as a table and a metrics record."""
        if not self.profile.enabled:
            return
        mine = self.profile.seconds_per_step()
        ranks = [dict(zip(PHASES, values)) for values in self.parallel.gather([mine[p] for p in PHASES])]
        self.progress.message(format_profile(epoch, ranks))
        self._log({"event": "profile", "epoch": epoch, "steps": self.profile.steps,
                   "secondsPerStep": ranks})

    def _log(self, record: dict) -> None:
        if not self.settings.metrics_log or (self.comm is not None and self.comm.rank != 0):
            return
        for observer in self.observers:
            observer(record)
        import json

        os.makedirs(os.path.dirname(os.path.abspath(self.settings.metrics_log)), exist_ok=True)
        with open(self.settings.metrics_log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            self._log_size = fh.tell()

    def _rewind_metrics_log(self, size) -> None:
        """Cut the metrics log back to `size` bytes: what it says after that is about minibatches this
        run does again (a resume) or about an earlier run (a fresh start). None (a checkpoint of an
        older netlang) keeps it whole."""
        if not self.settings.metrics_log or (self.comm is not None and self.comm.rank != 0):
            return
        try:
            with open(self.settings.metrics_log, "r+b") as fh:
                if size is not None:
                    fh.truncate(min(_int(size, self.settings.model_path), os.fstat(fh.fileno()).st_size))
                self._log_size = fh.seek(0, os.SEEK_END)
        except FileNotFoundError:
            self._log_size = 0

    # ---- interruption ------------------------------------------------------------------------------
    def _install_signal_handlers(self):
        def handler(signum, frame):
            if self._stop_signal is not None:  # a second Ctrl-C aborts at once
                raise KeyboardInterrupt
            self._stop_signal = signum

        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (embedding): no signal handling
            return {}
        return previous

    def _restore_signal_handlers(self, previous: dict) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def _interrupt(self, epoch: int, totals: dict, window: dict) -> None:
        # The report window too, so the resumed run's reports cover the same minibatches.
        unreported = {k: window[k] for k in ("samples", "criterion", "metrics", "first_mb")}
        path = self.save_checkpoint(epoch, {**totals, "window": unreported})
        stopped_here = self._stop_signal is not None   # or another worker was signalled
        name = signal.Signals(self._stop_signal).name if stopped_here else "a signal to another worker"
        raise TrainingInterrupted(f"stopped by {name} in epoch {epoch}; checkpoint written to {path}",
                                  hint="run the same command again to resume from there")


def evaluate(executor: Executor, network: Network, source, nodes: list[Node], mb_size: int,
             backend: Backend, on_minibatch=None) -> dict:
    """Sum each node over one epoch of `source` (criteria and metrics are sums); report
    per-sample averages. `on_minibatch(outputs, minibatch)` sees every minibatch's values."""
    totals = {n.name: 0.0 for n in nodes}
    counts = {n.name: 0 for n in nodes}      # the samples each node summed over (its labels')
    samples = 0
    source.start_epoch(0)
    while True:
        minibatch = source.next_minibatch(mb_size)
        if minibatch.num_samples:
            feeds = feeds_from_minibatch(network, minibatch, backend.dtype)
            outputs, _ = executor.run(feeds, nodes, training=False)
            for n in nodes:
                totals[n.name] += _device_sum(outputs[n.name])
                counts[n.name] += executor.sample_counts.get(n.name, int(minibatch.num_samples))
            samples += int(minibatch.num_samples)
            if on_minibatch is not None:
                on_minibatch(outputs, minibatch)
        if minibatch.end_of_epoch:
            break
    totals = {k: _host_number(backend, v) for k, v in totals.items()}
    return {"metrics": {k: v / max(counts[k], 1) for k, v in totals.items()}, "samples": samples,
            "counts": counts}


def _device_sum(array):
    """The sum of `array` in its own precision, as a float64 scalar that stays on the device; totals
    add these up in float64."""
    return array.sum().astype("float64")


def _host_number(backend: Backend, value) -> float:
    return float(backend.to_host(value))


def _int(value, path: str) -> int:
    """A whole number from the checkpoint at `path`; anything else means the file is damaged."""
    if type(value) is not int:
        raise DataError(f"damaged checkpoint: {value!r:.40} where a whole number belongs", DataPosition(path),
                        hint=modelio.DAMAGED_HINT)
    return value


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and getattr(value, "ndim", 0) > 0


def _result_dict(result: EpochResult) -> dict:
    return {"epoch": result.epoch, "samples": result.samples, "criterion": result.criterion,
            "criterionName": result.criterion_name,
            "metrics": result.metrics, "seconds": result.seconds, "learningRatePerSample": result.learning_rate,
            "cv": result.cv}
