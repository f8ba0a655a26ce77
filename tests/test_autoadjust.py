"""AutoAdjust (adjustAfterEpoch): learning-rate control between epochs."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import settings_of

from netlang.cli import main
from netlang.datasets.synthetic import prepare_synthetic
from netlang.runtime.autoadjust import LearningRateAdjuster


def result(epoch, criterion, cv=None):
    return SimpleNamespace(epoch=epoch, criterion=criterion, cv=cv, metrics={}, criterion_name="ce")


def test_worse_epoch_restores_the_best_model_and_decreases():
    adjuster = LearningRateAdjuster(settings_of.auto_adjust())
    assert adjuster.after_epoch(result(1, 1.0)) == (None, None)
    assert adjuster.after_epoch(result(2, 0.8)) == (None, None)
    assert adjuster.after_epoch(result(3, 0.9)) == ("decrease", 2)


def test_small_improvement_decreases_and_large_improvement_increases():
    settings = settings_of.auto_adjust("reduceLearnRateIfImproveLessThan = 0.05 ; "
                                       "increaseLearnRateIfImproveMoreThan = 0.5")
    adjuster = LearningRateAdjuster(settings)
    adjuster.after_epoch(result(1, 1.0))
    assert adjuster.after_epoch(result(2, 0.99)) == ("decrease", None)     # 1 % better
    assert adjuster.after_epoch(result(3, 0.4)) == ("increase", None)      # 60 % better
    assert adjuster.factor("decrease") == 0.618 and adjuster.factor("increase") == 1.382


def test_cross_validation_criterion_controls_when_present():
    adjuster = LearningRateAdjuster(settings_of.auto_adjust())
    adjuster.after_epoch(result(1, 1.0, cv={"ce": 0.5}))
    assert adjuster.after_epoch(result(2, 0.1, cv={"ce": 0.7})) == ("decrease", 1)


def test_interval_averages_the_criterion():
    adjuster = LearningRateAdjuster(settings_of.auto_adjust("learnRateAdjustInterval = 2"))
    for epoch, value in enumerate((1.0, 0.8), start=1):
        assert adjuster.after_epoch(result(epoch, value)) == (None, None)
    assert adjuster.after_epoch(result(3, 0.95)) == (None, None)          # mid-interval
    assert adjuster.after_epoch(result(4, 0.95)) == ("decrease", 2)       # 0.95 > 0.9


def test_training_with_auto_adjust_lowers_the_rate_when_progress_stalls(tmp_path):
    prepare_synthetic(str(tmp_path / "data"), seed=2, classes=3, dim=2, samples=600)
    cfg = tmp_path / "cfg.net"
    cfg.write_text(f"""
modelPath = "{tmp_path}/out/model.dnn"
train = {{
    action = "train"
    network = {{ x = Input {{2}} ; y = Input {{3}} ; z = DenseLayer {{3}} (DenseLayer {{16, activation=ReLU}} (x))
                 ce = CrossEntropyWithSoftmax (y, z) ; criterionNodes = (ce) }}
    SGD = {{ maxEpochs = 4 ; minibatchSize = 10 ; learningRatesPerSample = 0.05 ; momentumPerMB = 0
             AutoAdjust = {{ autoAdjustLR = "adjustAfterEpoch" ; reduceLearnRateIfImproveLessThan = 0.5 ; learnRateDecreaseFactor = 0.1 }} }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{tmp_path}/data/Train_cntk_text.txt"
               input = {{ x = {{ dim = 2 ; alias = "features" }} ; y = {{ dim = 3 ; alias = "labels" }} }} }}
}}
""")
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        assert main(["train", str(cfg), "--no-progress"]) == 0
    assert "AutoAdjust: learning rate decreased" in err.getvalue()
    with open(tmp_path / "out" / "metrics.jsonl") as fh:
        rates = [r["learningRatePerSample"] for r in map(json.loads, fh) if r["event"] == "epoch"]
    assert rates[0] == 0.05 and rates[-1] < 0.05
