"""Relative paths resolve against the working directory, as in CNTK; $ConfigDir$ names the config's."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import netlang
from netlang import cli
from netlang.compiler.graph import load_config

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
command = train
deviceId = "cpu"
train = {
    action = "train"
    network = { x = Input {2} ; labels = Input {2} ; z = DenseLayer {2} (x)
                ce = CrossEntropyWithSoftmax (labels, z) ; criterionNodes = (ce) ; outputNodes = (z) }
    SGD = { maxEpochs = 1 ; minibatchSize = 16 ; learningRatesPerSample = 0.01 }
    reader = { readerType = "CNTKTextFormatReader" ; file = DATA
               input = { x = { dim = 2 ; alias = "features" } ; labels = { dim = 2 } } }
}
"""


@pytest.fixture
def project(tmp_path):
    """A config in project/cfg/ with its data beside it, and a working directory elsewhere."""
    config_dir = tmp_path / "project" / "cfg"
    config_dir.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "data" / "hello_train.ctf", config_dir / "train.ctf")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return config_dir, elsewhere


def write_config(config_dir: Path, data: str, extra: str = "") -> Path:
    path = config_dir / "model.net"
    path.write_text(extra + CONFIG.replace("DATA", data) + f'modelPath = "{config_dir}/m.dnn"\n')
    return path


def test_config_dir_is_the_directory_of_the_config_as_named(project, monkeypatch):
    config_dir, _ = project
    write_config(config_dir, '"x"')
    monkeypatch.chdir(config_dir.parent)
    assert load_config("cfg/model.net").record.find("ConfigDir") == "cfg"
    monkeypatch.chdir(config_dir)
    assert load_config("model.net").record.find("ConfigDir") == "."


def test_a_config_dir_path_finds_data_next_to_the_config_from_anywhere(project, monkeypatch, capsys):
    config_dir, elsewhere = project
    write_config(config_dir, '"$ConfigDir$/train.ctf"')
    monkeypatch.chdir(elsewhere)
    assert cli.main(["check", "../project/cfg/model.net", "-q"]) == 0
    assert "read 16 samples" in capsys.readouterr().out


def test_a_relative_path_resolves_against_the_working_directory(project, monkeypatch, capsys):
    config_dir, elsewhere = project
    path = write_config(config_dir, '"train.ctf"')
    monkeypatch.chdir(elsewhere)
    assert cli.main(["check", str(path)]) == 65
    err = capsys.readouterr().err
    assert str(elsewhere / "train.ctf") in err
    assert "resolved against the working directory" in err and "$ConfigDir$" in err
    monkeypatch.chdir(config_dir)
    assert cli.main(["check", str(path), "-q"]) == 0


def test_a_config_dir_the_config_defines_wins(project, monkeypatch):
    config_dir, elsewhere = project
    path = write_config(config_dir, '"$ConfigDir$/train.ctf"', extra=f'ConfigDir = "{config_dir}"\n')
    monkeypatch.chdir(elsewhere)
    assert netlang.load(str(path)).config.record.find("ConfigDir") == str(config_dir)
