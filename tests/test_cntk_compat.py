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
