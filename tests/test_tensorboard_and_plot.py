"""TensorBoard event files for tensorBoardLogDir, and `netlang plot` of a run's metrics.jsonl."""
from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from netlang import cli
from netlang.actions.plot import latest_attempt, training_curves

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"

CONFIG = f"""
command = train
modelPath = "out/model.dnn"
deviceId = "cpu"
helloReader (name) = {{ readerType = "CNTKTextFormatReader" ; file = "{DATA}/" + name ; randomize = false
                        input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 2 }} }} }}
train = {{
    action = "train"
    network = {{
        features = Input {{2}} ; labels = Input {{2}}
        z = DenseLayer {{2}} (features)
        ce = CrossEntropyWithSoftmax (labels, z) ; errs = ClassificationError (labels, z)
        criterionNodes = (ce) ; evaluationNodes = (errs) ; outputNodes = (z)
    }}
    SGD = {{ maxEpochs = 3 ; minibatchSize = 16 ; learningRatesPerSample = 0.01 ; numMBsToShowResult = 2
            tensorBoardLogDir = "out/tb" }}
    reader = helloReader ("hello_train.ctf")
    cvReader = helloReader ("hello_test.ctf")
}}
"""


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.net").write_text(CONFIG)
    return "run.net"


def read_events(directory: Path) -> dict:
    """tag -> [(step, value)] from the TFRecord event files of `directory` (tensorboardX's protos)."""
    from tensorboardX.proto import event_pb2

    scalars: dict = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4                # length, its CRC, the record, its CRC
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def records(path="out/metrics.jsonl") -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ---- TensorBoard ------------------------------------------------------------------------------------

def test_tensorboard_events_hold_the_runs_scalars(config):
    pytest.importorskip("tensorboardX")
    assert cli.main(["train", config, "-q"]) == 0
    scalars = read_events(Path("out/tb"))
    epochs = [r for r in records() if r["event"] == "epoch"]
    reports = [r for r in records() if r["event"] == "minibatch"]
    assert [step for step, _ in scalars["epoch/ce"]] == [1, 2, 3]
    assert [v for _, v in scalars["epoch/ce"]] == pytest.approx([r["criterion"] for r in epochs], rel=1e-6)
    assert [v for _, v in scalars["epoch/errs"]] == pytest.approx([r["metrics"]["errs"] for r in epochs], rel=1e-6)
    assert [v for _, v in scalars["validation/ce"]] == pytest.approx([r["cv"]["ce"] for r in epochs], rel=1e-6)
    assert [v for _, v in scalars["epoch/learningRatePerSample"]] == pytest.approx([0.01] * 3)
    assert len(scalars["minibatch/ce"]) == len(reports) == 6          # 4 minibatches per epoch, every 2nd
    assert [step for step, _ in scalars["minibatch/ce"]] == [32, 64, 96, 128, 160, 192]
    assert [v for _, v in scalars["minibatch/ce"]] == pytest.approx([r["criterion"]["ce"] for r in reports], rel=1e-6)
    assert len(scalars["minibatch/samplesPerSecond"]) == 6 and len(scalars["epoch/samplesPerSecond"]) == 3


def test_tensorboard_logs_every_nth_report(config):
    pytest.importorskip("tensorboardX")
    assert cli.main(["train", config, "-q", "train=[SGD=[tensorBoardNumMBsToLogResult=4]]"]) == 0
    assert [step for step, _ in read_events(Path("out/tb"))["minibatch/ce"]] == [64, 128, 192]


def test_tensorboard_every_must_be_a_multiple_of_the_reports(config, capsys):
    pytest.importorskip("tensorboardX")
    assert cli.main(["train", config, "train=[SGD=[tensorBoardNumMBsToLogResult=3]]"]) == 78
    assert "multiple of numMBsToShowResult" in capsys.readouterr().err


def test_tensorboard_without_tensorboardx_says_what_to_install(config, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    assert cli.main(["train", config]) == 78
    err = capsys.readouterr().err
    assert "run.net:" in err and "tensorboardX" in err and "netlang[tensorboard]" in err


# ---- netlang plot -----------------------------------------------------------------------------------

def test_plot_draws_the_curves_of_a_run(config, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image

    Path(config).write_text(CONFIG.replace('tensorBoardLogDir = "out/tb"', ""))     # no tensorboardX needed
    assert cli.main(["train", config, "-q"]) == 0
    assert cli.main(["plot", "out", "-o", "curves.png"]) == 0
    image = np.asarray(Image.open("curves.png").convert("RGB"))
    assert image.shape == (400, 1000, 3)
    drawn = (image < 250).any(axis=2)                       # not the white background
    assert 0.02 < drawn.mean() < 0.6
    colored = (image.max(axis=2).astype(int) - image.min(axis=2)) > 60
    assert colored.sum() > 500                               # the curves, not only black axes and text


def test_plot_without_a_run_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def report(epoch, first, last, ce, samples):
    return {"event": "minibatch", "epoch": epoch, "minibatches": [first, last], "samples": 10,
            "criterion": {"ce": ce}, "metrics": {}, "learningRatePerSample": 0.1, "samplesPerSecond": 1.0,
            "epochSamples": samples}


def summary(epoch, ce):
    return {"event": "epoch", "epoch": epoch, "samples": 40, "criterion": ce, "criterionName": "ce",
            "metrics": {}, "seconds": 1.0, "learningRatePerSample": 0.1, "cv": None}


def test_a_resumed_run_keeps_the_redone_epoch_only():
    written = [report(1, 1, 2, 0.9, 20), report(1, 3, 4, 0.8, 40), summary(1, 0.85),
               report(2, 1, 2, 0.7, 20),                          # killed here, resumed from epoch 1's checkpoint
               report(2, 1, 2, 0.6, 20), report(2, 3, 4, 0.5, 40), summary(2, 0.55)]
    kept = latest_attempt(written)
    assert kept == written[:3] + written[4:]
    curves = training_curves(written)
    assert curves.reports["ce"] == ([0.5, 1.0, 1.5, 2.0], [0.9, 0.8, 0.6, 0.5])
    assert curves.epochs["ce"] == ([1, 2], [0.85, 0.55])


def test_a_run_resumed_mid_epoch_continues_its_records():
    written = [report(1, 1, 2, 0.9, 20), report(1, 3, 4, 0.8, 40), summary(1, 0.85),
               report(2, 1, 2, 0.7, 20), report(2, 3, 4, 0.5, 40), summary(2, 0.55)]
    assert latest_attempt(written) == written
