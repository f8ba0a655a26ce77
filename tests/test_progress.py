"""Training progress: a bar with percentage, times and the epoch's averages in a terminal; CNTK's
plain lines otherwise."""
from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from netlang.runtime.progress import EpochAverages, Progress
from netlang.runtime.trainer import EpochResult

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def report(first, last, samples, ce, errs):
    return {"event": "minibatch", "epoch": 1, "minibatches": [first, last], "samples": samples,
            "criterion": {"ce": ce}, "metrics": {"errs": errs}, "learningRatePerSample": 0.01,
            "samplesPerSecond": 1000.0}


def test_the_averages_are_over_the_epoch_so_far_as_the_summary_is():
    averages = EpochAverages()
    averages.add(report(1, 10, 100, ce=1.0, errs=0.1))
    averages.add(report(11, 20, 50, ce=0.4, errs=0.4))
    assert averages.text() == "ce = 0.80000; errs = 20.00%"      # (100·1.0 + 50·0.4) / 150, (10 + 20) / 150


def test_the_bar_shows_percentage_remaining_time_and_the_epoch_averages():
    stream = io.StringIO()
    progress = Progress(console=Console(file=stream, force_terminal=True, width=200), bar=True)
    progress.epoch_start(1, 3, 1000)
    progress.report(report(1, 10, 250, ce=1.0, errs=0.1), 3, samples=250)
    progress.report(report(11, 20, 250, ce=0.5, errs=0.3), 3, samples=500)
    progress._progress.refresh()
    screen = ANSI.sub("", stream.getvalue())
    progress.close()
    assert "Epoch 1/3" in screen and "50%" in screen and "500 samples" in screen
    assert "ce = 0.75000; errs = 20.00%" in screen
    assert re.search(r"\d:\d\d:\d\d remaining (\d+:\d\d:\d\d|-:--:--)", screen)


def test_plain_lines_are_cntks_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress(console=Console(file=stream, width=200))
    progress.epoch_start(1, 3, 1000)
    progress.report(report(1, 10, 320, ce=0.4123, errs=0.1134), 3, samples=320)
    progress.epoch_done(EpochResult(1, 1000, 0.30123, {"errs": 0.089}, 12.3, 0.01, criterion_name="ce"), 3)
    assert stream.getvalue().splitlines() == [
        " Epoch[ 1 of 3]-Minibatch[   1-  10]: ce = 0.41230 * 320; errs = 11.34% * 320; lr = 0.01; 1000 samples/s",
        "Finished Epoch[ 1 of 3]: [Training] ce = 0.30123 * 1000; errs = 8.90%; lr = 0.01; 12.3 s; 81 samples/s",
    ]


@pytest.mark.parametrize("size", [0, 1000])
def test_an_epoch_of_unknown_size_has_a_bar_without_percentage(size):
    stream = io.StringIO()
    progress = Progress(console=Console(file=stream, force_terminal=True, width=200), bar=True)
    progress.epoch_start(1, 1, size)
    progress.advance(10)
    progress._progress.refresh()
    progress.close()
    assert ("%" in ANSI.sub("", stream.getvalue())) == bool(size)
