"""`netlang plot OUTDIR [-o curves.png]`: training and validation curves from a run's metrics.jsonl.

OUTDIR is the directory of the run's modelPath (where training writes metrics.jsonl), or the file
itself. The picture has two panels: the criterion and the metrics, per progress report (thin lines)
and per epoch (training and, with a cvReader, validation), over epochs. A resumed run appends to
the file; an epoch that was run again replaces what its interrupted attempt had written, and a run
started afresh replaces the records of the one before. matplotlib is an optional extra
(`pip install 'netlang[plot]'`).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from netlang.errors import DataError, DataPosition, UsageError

DEFAULT_NAME = "curves.png"
SIZE_INCHES = (10.0, 4.0)
DPI = 100


def run(args) -> int:
    path = metrics_file(args.outdir)
    curves = training_curves(read_records(path))
    target = args.output or os.path.join(os.path.dirname(path), DEFAULT_NAME)
    draw(curves, target, title=os.path.dirname(path) or ".")
    print(target)
    return 0


def metrics_file(outdir: str) -> str:
    path = os.path.join(outdir, "metrics.jsonl") if os.path.isdir(outdir) else outdir
    if not os.path.isfile(path):
        raise UsageError(f"no metrics.jsonl in '{outdir}'",
                         hint="name the directory of the run's modelPath, where training writes metrics.jsonl")
    return path


def read_records(path: str) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"not a JSON line: {err.msg}", DataPosition(path, number)) from None
    return records


def _position(record: dict) -> tuple:
    """Where a record falls in a run: (epoch, first minibatch); an epoch's summary after its minibatches."""
    if record.get("event") == "epoch":
        return record["epoch"], math.inf
    return record["epoch"], record["minibatches"][0]


def latest_attempt(records: list[dict]) -> list[dict]:
    """The records of the run as it stands: a record that goes back to an earlier position (a resumed
    run redoing an epoch, or a fresh run) replaces the records from that position on."""
    kept: list[dict] = []
    for record in records:
        if record.get("event") not in ("minibatch", "epoch"):
            continue
        while kept and _position(kept[-1]) >= _position(record):
            kept.pop()
        kept.append(record)
    return kept


@dataclass
class Curves:
    criterion: str = "criterion"
    reports: dict = field(default_factory=dict)      # name -> ([x], [y]) per progress report
    epochs: dict = field(default_factory=dict)       # name -> ([epoch], [y]) training, per epoch
    validation: dict = field(default_factory=dict)   # name -> ([epoch], [y])

    def add(self, table: dict, name: str, x: float, y: float) -> None:
        xs, ys = table.setdefault(name, ([], []))
        xs.append(x)
        ys.append(y)


def training_curves(records: list[dict]) -> Curves:
    kept = latest_attempt(records)
    curves = Curves()
    epoch_samples = {r["epoch"]: r["samples"] for r in kept if r["event"] == "epoch"}
    last_minibatch = {}
    for r in kept:
        if r["event"] == "minibatch":
            last_minibatch[r["epoch"]] = max(last_minibatch.get(r["epoch"], 0), r["minibatches"][1])
    for r in kept:
        epoch = r["epoch"]
        if r["event"] == "epoch":
            curves.criterion = r.get("criterionName", curves.criterion)
            curves.add(curves.epochs, curves.criterion, epoch, r["criterion"])
            for name, value in r["metrics"].items():
                curves.add(curves.epochs, name, epoch, value)
            for name, value in (r.get("cv") or {}).items():
                curves.add(curves.validation, name, epoch, value)
            continue
        if "epochSamples" in r and epoch_samples.get(epoch):
            x = epoch - 1 + r["epochSamples"] / epoch_samples[epoch]
        else:
            x = epoch - 1 + r["minibatches"][1] / last_minibatch[epoch]
        for name, value in {**r["criterion"], **r["metrics"]}.items():
            curves.add(curves.reports, name, x, value)
    return curves


def draw(curves: Curves, target: str, title: str = "") -> None:
    if not curves.epochs and not curves.reports:
        raise UsageError("metrics.jsonl has no training records yet", hint="plot after the first progress report")
    try:
        import matplotlib
    except ImportError:
        raise UsageError("netlang plot needs matplotlib, which is not installed",
                         hint="pip install 'netlang[plot]'") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (left, right) = pyplot.subplots(1, 2, figsize=SIZE_INCHES, dpi=DPI)
    names = list(dict.fromkeys([*curves.reports, *curves.epochs, *curves.validation]))
    for axes, chosen in ((left, [curves.criterion]), (right, [n for n in names if n != curves.criterion])):
        for name in chosen:
            _plot(axes, curves, name)
        axes.set_xlabel("epoch")
        axes.set_title(", ".join(chosen) or "no metrics", fontsize=10)
        if axes.lines:
            axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(target)
    pyplot.close(figure)


def _plot(axes, curves: Curves, name: str) -> None:
    if name in curves.reports:
        axes.plot(*curves.reports[name], linewidth=0.8, alpha=0.6, label=f"{name} (reports)")
    if name in curves.epochs:
        axes.plot(*curves.epochs[name], marker="o", label=f"{name} (training)")
    if name in curves.validation:
        axes.plot(*curves.validation[name], marker="s", linestyle="--", label=f"{name} (validation)")
