"""Training progress for people: a rich bar in a terminal, CNTK-style plain lines otherwise.

Lines go to stderr (results and `--json` documents own stdout):

    Epoch[ 1 of 3]-Minibatch[   1- 500]: ce = 0.41230 * 32000; errs = 11.34% * 32000; lr = 0.00390625; 5123 samples/s
    Finished Epoch[ 1 of 3]: [Training] ce = 0.30123 * 60000; errs = 8.90%; 12.3 s; 4878 samples/s

The plain lines average over the minibatches since the last line, as CNTK's do. The bar shows the
epoch's percentage, elapsed and remaining time, and the averages over the epoch so far: the figures
the epoch's summary line will show when it ends.
"""
from __future__ import annotations

import os


def _is_error_metric(name: str) -> bool:
    lowered = name.lower()
    return "err" in lowered


def _fmt_metric(name: str, value: float) -> str:
    return f"{name} = {value * 100:.2f}%" if _is_error_metric(name) else f"{name} = {value:.5f}"


class EpochAverages:
    """The criterion and metrics averaged over the samples of the epoch reported so far."""

    def __init__(self):
        self.samples = 0
        self.sums: dict[str, float] = {}
        self.criteria: list[str] = []

    def add(self, report: dict) -> None:
        n = report["samples"]
        self.samples += n
        for group in ("criterion", "metrics"):
            for name, value in report[group].items():
                self.sums[name] = self.sums.get(name, 0.0) + value * n
        self.criteria = list(report["criterion"])

    def text(self) -> str:
        if not self.samples:
            return ""
        return "; ".join(f"{name} = {total / self.samples:.5f}" if name in self.criteria
                         else _fmt_metric(name, total / self.samples) for name, total in self.sums.items())


class Progress:
    def __init__(self, enabled: bool = True, console=None, bar: bool | None = None):
        self.enabled = enabled
        if console is None:
            from rich.console import Console

            console = Console(stderr=True, highlight=False, no_color="NO_COLOR" in os.environ)
        self.console = console
        self.bar = console.is_terminal if bar is None else bar
        self._progress = None
        self._task = None
        self._averages = EpochAverages()

    # ---- epoch boundaries ----------------------------------------------------------------------------
    def epoch_start(self, epoch: int, max_epochs: int, epoch_size: int) -> None:
        if not (self.enabled and self.bar):
            return
        from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._close_bar()
        self._averages = EpochAverages()
        self._progress = RichProgress(TextColumn(f"Epoch {epoch}/{max_epochs}"), BarColumn(), TaskProgressColumn(),
                                      TextColumn("{task.completed} samples"), TextColumn("{task.fields[loss]}"),
                                      TimeElapsedColumn(), TextColumn("remaining"), TimeRemainingColumn(),
                                      console=self.console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task("train", total=epoch_size or None, loss="")

    def advance(self, samples: int) -> None:
        """The samples of the epoch done so far (the bar shows the loss of the last report: reading
        it every minibatch would wait for the device)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=samples)

    def report(self, report: dict, max_epochs: int, samples: int | None = None) -> None:
        if self._progress is not None:
            self._averages.add(report)
            self._progress.update(self._task, completed=samples, loss=self._averages.text())
        if not self.enabled:
            return
        first, last = report["minibatches"]
        n = report["samples"]
        parts = [f"{k} = {v:.5f} * {n}" for k, v in report["criterion"].items()]
        parts += [f"{_fmt_metric(k, v)} * {n}" for k, v in report["metrics"].items()]
        parts.append(f"lr = {report['learningRatePerSample']:.6g}")
        parts.append(f"{report['samplesPerSecond']:.0f} samples/s")
        line = f" Epoch[{report['epoch']:2d} of {max_epochs}]-Minibatch[{first:4d}-{last:4d}]: " + "; ".join(parts)
        self._print(line)

    def epoch_done(self, result, max_epochs: int) -> None:
        if not self.enabled:
            return
        self._close_bar()
        parts = [f"{result.criterion_name} = {result.criterion:.5f} * {result.samples}"]
        parts += [_fmt_metric(k, v) for k, v in result.metrics.items()]
        rate = result.samples / max(result.seconds, 1e-9)
        text = (f"Finished Epoch[{result.epoch:2d} of {max_epochs}]: [Training] " + "; ".join(parts) +
                f"; lr = {result.learning_rate:.6g}; {result.seconds:.1f} s; {rate:.0f} samples/s")
        if result.cv:
            text += "\nFinished Epoch[{:2d} of {}]: [Validate] ".format(result.epoch, max_epochs) + "; ".join(
                _fmt_metric(k, v) for k, v in result.cv.items())
        self._print(text)

    def message(self, text: str) -> None:
        if self.enabled:
            self._print(text)

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False)
        else:
            self.console.print(text, markup=False)

    def _close_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None

    def close(self) -> None:
        self._close_bar()
