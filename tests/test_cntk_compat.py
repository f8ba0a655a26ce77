"""CNTK's legacy `.cntk` configuration style runs unchanged (reference §0, §3.8–3.9)."""
from __future__ import annotations

import os
import shutil

from netlang.cli import main
from netlang.datasets.synthetic import prepare_synthetic

HERE = os.path.dirname(os.path.abspath(__file__))


def test_legacy_cntk_config_trains_and_tests(tmp_path, capsys, monkeypatch):
    shutil.copy(os.path.join(HERE, "data", "legacy_style.cntk"), tmp_path / "legacy_style.cntk")
    prepare_synthetic(str(tmp_path / "data"), seed=1, classes=3, dim=2, samples=500)
    monkeypatch.chdir(tmp_path)          # CNTK resolves relative paths against the working directory
    assert main(["check", "legacy_style.cntk", "-q"]) == 0
    assert "learnable parameters" in capsys.readouterr().out
    code = main(["run", "legacy_style.cntk", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("testIt: ce = ") and "errs = " in out
    assert os.path.exists(tmp_path / "models" / "legacy.dnn")


SIMPLE_NETWORK_CONFIG = """
DataDir = data
command = train:test:write
modelPath = models/ff.dnn
deviceId = -1
train = [
    action = train
    SimpleNetworkBuilder = [
        layerSizes = 2:8:3 ; layerTypes = Sigmoid
        applyMeanVarNorm = true ; needPrior = true ; addDropoutNodes = true
    ]
    SGD = [ maxEpochs = 2 ; minibatchSize = 25 ; learningRatesPerMB = 0.5 ; dropoutRate = 0.1 ]
    reader = [ readerType = CNTKTextFormatReader ; file = $DataDir$/Train_cntk_text.txt
               input = [ features = [ dim = 2 ] ; labels = [ dim = 3 ] ] ]
]
test = [
    action = test
    reader = [ readerType = CNTKTextFormatReader ; file = $DataDir$/Test_cntk_text.txt
               input = [ features = [ dim = 2 ] ; labels = [ dim = 3 ] ] ]
]
write = [
    action = write ; outputPath = out/ff ; outputNodeNames = ScaledLogLikelihood
    reader = [ readerType = CNTKTextFormatReader ; file = $DataDir$/Test_cntk_text.txt
               input = [ features = [ dim = 2 ] ; labels = [ dim = 3 ] ] ]
]
"""


def test_a_simple_network_builder_config_trains_tests_and_writes(tmp_path, capsys, monkeypatch):
    (tmp_path / "ff.cntk").write_text(SIMPLE_NETWORK_CONFIG)
    prepare_synthetic(str(tmp_path / "data"), seed=1, classes=3, dim=2, samples=300)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "ff.cntk", "-q"]) == 0
    out = capsys.readouterr().out
    assert "test: CrossEntropyWithSoftmax = " in out and "EvalErrorPrediction = " in out
    rows = (tmp_path / "out" / "ff.ScaledLogLikelihood").read_text().splitlines()
    assert len(rows) == 75 and len(rows[0].split()) == 3
