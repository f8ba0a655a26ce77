"""TensorBoard event files for `tensorBoardLogDir` (CNTK's SGD key), written with tensorboardX.

`TensorBoardLog` observes the trainer's records (the lines of metrics.jsonl) and writes them as
scalars:

* every report (`numMBsToShowResult`, or `tensorBoardNumMBsToLogResult`, a multiple of it):
  `minibatch/<criterion>`, `minibatch/<metric>`, `minibatch/learningRatePerSample`,
  `minibatch/samplesPerSecond`, at the step of the samples trained so far;
* every epoch: `epoch/<criterion>`, `epoch/<metric>`, `epoch/learningRatePerSample`,
  `epoch/samplesPerSecond` and, with a cvReader, `validation/<node>`, at the epoch's number.

tensorboardX is an optional extra (`pip install 'netlang[tensorboard]'`): a config that asks for a
log without it installed is an error at its `tensorBoardLogDir`.
"""
from __future__ import annotations

import importlib.util

from netlang.compiler.lang.settings import TrainingSettings

INSTALL_HINT = "pip install 'netlang[tensorboard]' (tensorboardX), or remove tensorBoardLogDir"


def tensorboard_log_for(settings: TrainingSettings, samples_per_epoch: int):
    """The observer that writes the run's TensorBoard events, or None when none is asked for."""
    if not settings.tensorboard_log_dir:
        return None
    if importlib.util.find_spec("tensorboardX") is None:
        raise settings.error("tensorBoardLogDir", "tensorBoardLogDir needs tensorboardX, which is not installed",
                             hint=INSTALL_HINT)
    every = settings.tensorboard_mbs_to_log
    shown = settings.num_mbs_to_show_result
    if every is not None and (not shown or every % shown):
        raise settings.error("tensorBoardNumMBsToLogResult",
                             f"tensorBoardNumMBsToLogResult ({every}) must be a multiple of numMBsToShowResult "
                             f"({shown}): TensorBoard gets the figures of the progress reports",
                             hint=f"e.g. tensorBoardNumMBsToLogResult = {max(shown, 1) * 2}")
    return TensorBoardLog(settings.tensorboard_log_dir, samples_per_epoch, every // shown if every else 1)


class TensorBoardLog:
    def __init__(self, log_dir: str, samples_per_epoch: int, every_report: int = 1):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(log_dir)
        self.samples_per_epoch = samples_per_epoch
        self.every_report = every_report
        self._reports = 0

    def __call__(self, record: dict) -> None:
        if record["event"] == "minibatch":
            self._minibatch(record)
        elif record["event"] == "epoch":
            self._epoch(record)
        self.writer.flush()

    def _minibatch(self, record: dict) -> None:
        self._reports += 1
        if self._reports % self.every_report:
            return
        step = (record["epoch"] - 1) * self.samples_per_epoch + record.get("epochSamples", 0)
        for name, value in {**record["criterion"], **record["metrics"]}.items():
            self.writer.add_scalar(f"minibatch/{name}", value, step)
        self.writer.add_scalar("minibatch/learningRatePerSample", record["learningRatePerSample"], step)
        self.writer.add_scalar("minibatch/samplesPerSecond", record["samplesPerSecond"], step)

    def _epoch(self, record: dict) -> None:
        epoch = record["epoch"]
        if not self.samples_per_epoch:
            self.samples_per_epoch = record["samples"]
        self.writer.add_scalar(f"epoch/{record.get('criterionName', 'criterion')}", record["criterion"], epoch)
        for name, value in record["metrics"].items():
            self.writer.add_scalar(f"epoch/{name}", value, epoch)
        self.writer.add_scalar("epoch/learningRatePerSample", record["learningRatePerSample"], epoch)
        self.writer.add_scalar("epoch/samplesPerSecond", record["samples"] / max(record["seconds"], 1e-9), epoch)
        for name, value in (record.get("cv") or {}).items():
            self.writer.add_scalar(f"validation/{name}", value, epoch)

    def close(self) -> None:
        self.writer.close()
