"""Issue 18, item by item: crafted files cannot write or run anything, no run corrupts another, every bad
value gets a clear error with its exit code and position."""
from __future__ import annotations

import glob
import io
import json
import logging
import os
import pickle
import shutil
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from training_runs import Reader, cli, final_parameters, records, spawn, write_config

from netlang.actions.evaluate import node_output_path
from netlang.datasets.synthetic import prepare_synthetic
from netlang.errors import EXIT_BUSY, EXIT_CANT_CREATE, EXIT_CONFIG, EXIT_DATA
from netlang.grammar import cache
from netlang.ir.modelfile import DamagedModel, graph_from_json, load_model
from netlang.runtime.divergence import SUSTAINED, WINDOW, DivergenceWatch

NO_NUMPY_ADVICE = ("allow_pickle", "pickle.load", "Traceback")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("reliability_data")
    prepare_synthetic(str(path), seed=3, classes=3, dim=2, samples=400)
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """(config, output directory) of a finished 2-epoch training."""
    directory = tmp_path_factory.mktemp("trained")
    cfg, out = write_config(directory, data_dir, epochs=2)
    code, _, err = cli("train", cfg, "-q")
    assert code == 0, err
    return cfg, out


def position_of(path: str, text: str, offset: int = 0) -> str:
    """`path:line:col` of the first occurrence of `text` in the file (plus `offset` columns)."""
    with open(path) as fh:
        for number, line in enumerate(fh, start=1):
            if text in line:
                return f"{path}:{number}:{line.index(text) + 1 + offset}"
    raise AssertionError(f"{text!r} is not in {path}")


def files_under(root) -> dict[str, bytes]:
    contents = {}
    for path in glob.glob(os.path.join(str(root), "**"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                contents[path] = fh.read()
    return contents


# ---- crafted model files ------------------------------------------------------------------------------

def rewrite_model(source: str, target: str, *, graph=None, members=None) -> str:
    """A copy of a model file with its graph document changed by `graph(doc)` and members by `members(dict)`."""
    with zipfile.ZipFile(source) as archive:
        content = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    if graph is not None:
        doc = json.loads(np.load(io.BytesIO(content["__netlang__.npy"])).tobytes())
        graph(doc["graph"])
        out = io.BytesIO()
        np.save(out, np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8))
        content["__netlang__.npy"] = out.getvalue()
    if members is not None:
        members(content)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in content.items():
            archive.writestr(name, data)
    return target


def renamed(old: str, new: str):
    def change(graph):
        for node in graph["nodes"]:
            node["name"] = new if node["name"] == old else node["name"]
            node["inputs"] = [new if i == old else i for i in node["inputs"]]
        graph["groups"] = {g: [new if n == old else n for n in names] for g, names in graph["groups"].items()}
    return change


def test_write_file_names_never_take_a_path_from_a_node_name(tmp_path):
    output_path = str(tmp_path / "out" / "result")
    for name in ("z", "model.conv1.W", "h[0]_1", "x/../../../../name", "/etc/passwd", "..", "a\\b", "é/\x00"):
        path = node_output_path(output_path, name)
        assert os.path.dirname(path) == str(tmp_path / "out"), name
        assert os.path.basename(path).startswith("result.") and "/" not in os.path.basename(path)
    assert node_output_path(output_path, "x/../y") == str(tmp_path / "out" / "result.x%2F..%2Fy")


def test_a_model_whose_node_name_is_a_path_is_refused_and_nothing_is_written(tmp_path, trained):
    cfg, out = trained
    crafted = rewrite_model(os.path.join(out, "model.dnn"), str(tmp_path / "crafted.dnn"),
                            graph=renamed("z", "x/../../../../escaped"))
    deep = tmp_path / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    before = files_under(tmp_path)
    code, _, err = cli("write", cfg, "command=write", f"modelPath={crafted}", f"write.outputPath={deep}/result")
    assert code == EXIT_DATA, err
    assert err.startswith(f"{crafted}: data error: damaged model file: node ")
    assert "'x/../../../../escaped' is not a node name" in err
    assert files_under(tmp_path) == before                       # nothing written, anywhere
    assert not glob.glob(str(tmp_path / "**" / "*escaped*"), recursive=True)


@pytest.mark.parametrize("name", ["", "a/b", "..", "a..b", "x y", "a\x00", "1abc", "a.", "[x]", "a" * 1001])
def test_a_graph_with_an_invalid_node_name_is_damaged(name):
    doc = {"nodes": [{"name": name, "op": "InputValue", "inputs": [], "attrs": {}, "shape": [2], "layout": "#",
                      "tags": [], "parameter": False, "learningRateMultiplier": 0.0}], "groups": {}}
    with pytest.raises(DamagedModel, match="is not a node name"):
        graph_from_json(doc)


def damaged_unknown_op(graph):
    next(n for n in graph["nodes"] if n["name"] == "errs")["op"] = "FooBar"


def damaged_dangling_input(graph):
    next(n for n in graph["nodes"] if n["name"] == "errs")["inputs"][0] = "nothere"


def damaged_attribute(graph):
    next(n for n in graph["nodes"] if n["op"] == "Times")["attrs"]["outputRank"] = "lots"


class RunsCode:
    """Unpickling this runs code: what a crafted file would hold."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def pickled_member(marker: str):
    def change(content):
        out = io.BytesIO()
        np.save(out, np.array([RunsCode(marker)], dtype=object), allow_pickle=True)
        content["param/h.W.npy"] = out.getvalue()
    return change


@pytest.mark.parametrize("craft, part", [
    ({"graph": damaged_unknown_op}, "node 'errs': unknown operation 'FooBar'"),
    ({"graph": damaged_dangling_input}, "node 'errs': input 'nothere' names no node of the model"),
    ({"graph": damaged_attribute}, "node 'h.x.product': its Times attributes or input shapes do not fit together"),
    ({"members": lambda c: c.pop("param/h.arrayOfFunctions[0].b.npy")},
     "parameter 'h.arrayOfFunctions[0].b': its value (member 'param/…') is missing"),
    ({"members": lambda c: c.update({"param/h.arrayOfFunctions[0].b.npy": c["param/h.arrayOfFunctions[0].W.npy"]})},
     "member 'param/h.arrayOfFunctions[0].b': a float64 array of shape (2, 8) is not the value of a parameter"),
], ids=["unknown op", "dangling input", "bad attribute", "missing value", "value of another shape"])
def test_a_damaged_model_graph_is_a_data_error_naming_the_part(tmp_path, trained, craft, part):
    cfg, out = trained
    crafted = rewrite_model(os.path.join(out, "model.dnn"), str(tmp_path / "damaged.dnn"), **craft)
    code, _, err = cli("eval", cfg, f"modelPath={crafted}")
    assert code == EXIT_DATA, err
    assert err.startswith(f"{crafted}: data error: damaged model file: {part}"), err
    assert not any(advice in err for advice in NO_NUMPY_ADVICE)


def test_a_model_file_with_pickled_data_is_refused_without_running_it(tmp_path, trained):
    cfg, out = trained
    marker = str(tmp_path / "ran")
    crafted = rewrite_model(os.path.join(out, "model.dnn"), str(tmp_path / "pickled.dnn"),
                            members=pickled_member(marker))
    code, _, err = cli("eval", cfg, f"modelPath={crafted}")
    assert code == EXIT_DATA and not os.path.exists(marker), err
    assert err.startswith(f"{crafted}: data error: damaged model file: member 'param/h.W.npy': holds object values")
    assert not any(advice in err for advice in NO_NUMPY_ADVICE)


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_truncated_or_changed_model_file_is_a_data_error(tmp_path, trained, damage):
    cfg, out = trained
    with open(os.path.join(out, "model.dnn"), "rb") as fh:
        data = bytearray(fh.read())
    if damage == "truncated":
        data = data[:len(data) // 2]
    else:
        data[len(data) // 3] ^= 0xFF                       # inside a parameter: the checksum no longer fits
    path = tmp_path / "damaged.dnn"
    path.write_bytes(bytes(data))
    code, _, err = cli("eval", cfg, f"modelPath={path}")
    assert code == EXIT_DATA, err
    assert err.startswith(f"{path}: data error: damaged model file: "), err


# ---- the front-end cache -------------------------------------------------------------------------------

def netlang_check(config: str, cache_dir: str, cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NETLANG_CACHE=cache_dir)
    return subprocess.run([sys.executable, "-m", "netlang", "check", config, "--no-data", "-q"], cwd=cwd,
                          env=env, check=False, capture_output=True, text=True, timeout=120)


def test_crafted_cache_files_run_no_code(tmp_path, data_dir):
    cfg, _ = write_config(tmp_path, data_dir)
    cache_dir = tmp_path / "cache"
    assert netlang_check(cfg, str(cache_dir), str(tmp_path)).returncode == 0
    marker = str(tmp_path / "ran")
    payload = pickle.dumps(RunsCode(marker))
    for entry in list(cache_dir.iterdir()):                   # our entries, keys intact, pickles after them
        key_line = entry.read_bytes().split(b"\n", 1)[0]
        entry.write_bytes(key_line + b"\n" + payload)
        key = key_line.split()[-1].decode()
        # … and the files the pickle caches were (and Lark's own cache) with the same keys
        (cache_dir / f"stdlib-{key[:24]}.pickle").write_bytes(pickle.dumps((key, RunsCode(marker))))
    (cache_dir / "lark-lalr.cache").write_bytes(b"0" * 64 + b"\n" + payload + payload)
    result = netlang_check(cfg, str(cache_dir), str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(marker)


def test_cache_entries_are_keyed_json_in_a_private_directory(tmp_path, data_dir, monkeypatch):
    cfg, _ = write_config(tmp_path, data_dir)
    cache_dir = tmp_path / "cache"
    assert netlang_check(cfg, str(cache_dir), str(tmp_path)).returncode == 0
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    entries = sorted(p.name.split("-")[0] for p in cache_dir.iterdir())
    assert entries == ["lalr", "stdlib"]
    for entry in cache_dir.iterdir():
        head, body = entry.read_text().split("\n", 1)
        assert head.startswith(f"{cache.FORMAT} ") and json.loads(body)
        assert not stat.S_IMODE(entry.stat().st_mode) & 0o077
    monkeypatch.setenv("NETLANG_CACHE", str(cache_dir))
    key = next(cache_dir.glob("stdlib-*")).read_text().split("\n", 1)[0].split()[-1]
    assert cache.read_ast(key) is not None
    assert cache.read_ast(key[:24] + "0" * 40) is None       # same file name, another key: not decoded


def test_a_cache_directory_others_may_write_is_not_used(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("NETLANG_CACHE", str(shared))
    assert cache.cache_dir() is None
    cache.write_entry("stdlib", "k" * 64, {"x": 1})
    assert list(shared.iterdir()) == []


def test_a_cache_entry_others_may_write_or_own_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("NETLANG_CACHE", str(tmp_path / "cache"))
    key = "k" * 64
    cache.write_entry("stdlib", key, {"x": 1})
    entry = next((tmp_path / "cache").iterdir())
    assert cache.read_entry("stdlib", key) == {"x": 1}
    entry.chmod(0o666)
    assert cache.read_entry("stdlib", key) is None
    entry.chmod(0o600)
    if os.getuid() == 0:                                      # only root can give a file away
        os.chown(entry, 65534, -1)
        assert cache.read_entry("stdlib", key) is None


# ---- one run per output directory; resuming only what belongs together ----------------------------------

def interrupted_run(tmp_path, data_dir, epochs=2, **options) -> tuple[str, str, dict]:
    """A run that ended after its last epoch's checkpoint but before its final model (as after kill -9):
    (config, output directory, the final parameters it would have written)."""
    cfg, out = write_config(tmp_path, data_dir, epochs=epochs, **options)
    code, _, err = cli("train", cfg, "-q", "train.SGD.keepCheckPointFiles=true")
    assert code == 0, err
    finished = final_parameters(out)
    os.remove(os.path.join(out, "model.dnn"))
    return cfg, out, finished


def test_resuming_with_other_training_settings_is_refused_naming_them(tmp_path, data_dir):
    cfg, out, _ = interrupted_run(tmp_path, data_dir)
    code, _, err = cli("train", cfg, "train.SGD.learningRatesPerSample=0.05", "SGD.maxEpochs=3")
    assert code == EXIT_CONFIG, err
    assert err.startswith("<command line>:1:1: config error: SGD.learningRatesPerSample: the checkpoint "
                          f"{out}/model.dnn.2.ckp was written with other training settings: "
                          'SGD.learningRatesPerSample ("0.01*2:0.005" in the checkpoint, 0.05 now)'), err
    assert "--resume-anyway" in err and "makeMode = false" in err
    assert not os.path.exists(os.path.join(out, "model.dnn.3"))


def test_resuming_with_another_network_names_the_nodes(tmp_path, data_dir):
    cfg, _, _ = interrupted_run(tmp_path, data_dir)
    code, _, err = cli("train", cfg, "train.network.h=DenseLayer {16, activation=Tanh} (features)")
    assert code == EXIT_CONFIG, err
    assert err.startswith(f"{position_of(cfg, 'network = {')}: config error: network: the checkpoint ")
    assert "network (nodes changed: h.arrayOfFunctions[0].W, h.x.product, h.arrayOfFunctions[0].b and 3 more)" in err


def test_resume_anyway_continues_with_the_new_settings(tmp_path, data_dir):
    cfg, out, _ = interrupted_run(tmp_path, data_dir)
    code, _, err = cli("train", cfg, "SGD.maxEpochs=3", "train.SGD.learningRatesPerSample=0.05", "--resume-anyway")
    assert code == 0, err
    assert "with changed settings (--resume-anyway): SGD.learningRatesPerSample" in err
    assert "resuming from epoch 3" in err
    assert [r["learningRatePerSample"] for r in records(out) if r["event"] == "epoch"] == [0.01, 0.01, 0.05]


def test_make_mode_false_starts_afresh_instead(tmp_path, data_dir):
    cfg, out, _ = interrupted_run(tmp_path, data_dir)
    code, _, err = cli("train", cfg, "train.SGD.learningRatesPerSample=0.05", "makeMode=false")
    assert code == 0, err
    assert "starting fresh" in err
    assert [r["learningRatePerSample"] for r in records(out) if r["event"] == "epoch"] == [0.05, 0.05]


def test_more_epochs_resume_like_any_restart(tmp_path, data_dir):
    cfg, _, _ = interrupted_run(tmp_path, data_dir)
    code, _, err = cli("train", cfg, "SGD.maxEpochs=3", "train.SGD.numMBsToShowResult=7")
    assert code == 0 and "resuming from epoch 3" in err, err


def test_a_busy_output_directory_names_the_run_holding_it(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, epochs=5, mb=2)
    holder = Reader(spawn("train", cfg))
    holder.until("Epoch[ 1 of 5]-Minibatch")
    code, _, err = cli("train", cfg)
    assert code == EXIT_BUSY, err
    assert err.startswith(f"{position_of(cfg, 'modelPath')}: busy: modelPath: the output directory '{out}' is in "
                          f"use by another training run (pid {holder.proc.pid} on ")
    assert f"netlang train {cfg} --no-progress" in err
    holder.proc.kill()
    holder.proc.wait()
    code, _, err = cli("train", cfg, "-q", "SGD.maxEpochs=1")    # the kernel released the dead run's lock
    assert code == 0, err


# ---- a damaged newest checkpoint ---------------------------------------------------------------------------

def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, data_dir):
    cfg, out, finished = interrupted_run(tmp_path, data_dir, epochs=3)
    newest = os.path.join(out, "model.dnn.3.ckp")
    with open(newest, "r+b") as fh:
        data = bytearray(fh.read())
        data[len(data) // 2] ^= 0xFF
        fh.seek(0)
        fh.write(bytes(data))
    code, _, err = cli("train", cfg)
    assert code == 0, err
    assert "warning: the checkpoint model.dnn.3.ckp is damaged (damaged model file: " in err
    assert "resuming from the complete checkpoint before it, model.dnn.2.ckp" in err
    assert "resuming from epoch 3" in err
    assert not any(advice in err for advice in NO_NUMPY_ADVICE)
    for name, value in finished.items():
        assert np.array_equal(value, final_parameters(out)[name]), name


def test_no_usable_checkpoint_is_a_data_error(tmp_path, data_dir):
    cfg, out, _ = interrupted_run(tmp_path, data_dir)
    for path in glob.glob(os.path.join(out, "model.dnn.*.ckp")):
        with open(path, "wb") as fh:
            fh.write(b"PK\x03\x04 not really")
    code, _, err = cli("train", cfg)
    assert code == EXIT_DATA, err
    assert err.startswith(f"{out}/model.dnn: data error: no checkpoint of this run can be used: the checkpoint "
                          "model.dnn.2.ckp is damaged")
    assert "makeMode = false" in err


def test_the_previous_checkpoint_is_kept_while_training(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, epochs=5, mb=2)
    child = Reader(spawn("train", cfg))
    child.until("Epoch[ 4 of 5]-Minibatch")
    child.proc.kill()
    child.proc.wait()
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "*.ckp"))) == \
        ["model.dnn.2.ckp", "model.dnn.3.ckp"]


# ---- bad values in data ----------------------------------------------------------------------------------

def data_with(tmp_path, data_dir, line_number: int, line: str, name: str = "Train_cntk_text.txt") -> str:
    directory = tmp_path / "data"
    if not directory.exists():
        shutil.copytree(data_dir, directory)
    path = directory / name
    lines = path.read_text().splitlines()
    lines[line_number - 1] = line
    path.write_text("\n".join(lines) + "\n")
    return str(directory)


@pytest.mark.parametrize("value, column", [("nan", 11), ("-inf", 11), ("1e39", 11)])
def test_a_non_finite_value_in_data_is_a_data_error_at_its_line(tmp_path, data_dir, value, column):
    data = data_with(tmp_path, data_dir, 5, f"|features {value} 1.0 |labels 0 1 0")
    cfg, out = write_config(tmp_path, data)
    code, _, err = cli("train", cfg, "precision=float")
    assert code == EXIT_DATA, err
    assert f"\n{data}/Train_cntk_text.txt:5:{column}: data error: stream 'features': '{value}' is not a finite " \
           "number\n" in err
    assert not os.path.exists(os.path.join(out, "model.dnn"))


def test_evaluating_data_with_nan_is_a_data_error(tmp_path, data_dir, trained):
    cfg, _ = trained
    data = data_with(tmp_path, data_dir, 3, "|features 0.5 NaN |labels 0 1 0", "Test_cntk_text.txt")
    code, stdout, err = cli("eval", cfg, f"test.reader.file={data}/Test_cntk_text.txt")
    assert code == EXIT_DATA and stdout == "", err
    assert err.startswith(f"{data}/Test_cntk_text.txt:3:15: data error: stream 'features': 'NaN' is not a finite "
                          "number"), err


def test_eval_json_reports_a_non_finite_metric_as_null_and_fails(tmp_path, trained):
    cfg, out = trained

    def nan_weights(content):
        name = "param/h.arrayOfFunctions[0].W.npy"
        weights = np.load(io.BytesIO(content[name]))
        weights[...] = np.nan
        buffer = io.BytesIO()
        np.save(buffer, weights)
        content[name] = buffer.getvalue()

    model = rewrite_model(os.path.join(out, "model.dnn"), str(tmp_path / "nan.dnn"), members=nan_weights)
    code, stdout, err = cli("eval", cfg, f"modelPath={model}", "--json")
    assert code == EXIT_DATA, err

    def no_nan(token):
        raise AssertionError(f"{token} is not JSON")

    result = json.loads(stdout, parse_constant=no_nan)
    assert result["metrics"]["ce"] is None and result["nonFinite"] == ["ce"]
    assert err.startswith("data error: not a finite number: test: ce = nan")


def test_a_criterion_that_is_not_one_number_per_sample_is_a_config_error_at_the_node(tmp_path, data_dir):
    cfg, _ = write_config(tmp_path, data_dir)
    for command in ("check", "train"):
        code, _, err = cli(command, cfg, "--no-data" if command == "check" else "-q", "train.network.criterionNodes=(z)")
        assert code == EXIT_CONFIG, err
        assert err.startswith(f"{position_of(cfg, 'DenseLayer {3}')}: network error: the criterion 'z' is not one "
                              "number per sample: its value is [3 x #]"), err


@pytest.mark.parametrize("rate, value", [("1/0", "inf"), ("0/0", "nan"), ("0.01*2:1/0", "inf")])
def test_a_division_by_zero_as_learning_rate_is_a_config_error_at_the_value(tmp_path, data_dir, rate, value):
    cfg, _ = write_config(tmp_path, data_dir, lr=rate)
    at = position_of(cfg, "learningRatesPerSample = ", len("learningRatesPerSample = ") + rate.index("/") - 1)
    for command in ("check", "train"):
        code, _, err = cli(command, cfg, "--no-data" if command == "check" else "-q")
        assert code == EXIT_CONFIG, err
        assert err.startswith(f"{at}: config error: train.SGD.learningRatesPerSample: a schedule value is {value}, "
                              "not a finite number"), err


# ---- output directories ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["check", "train"])
def test_a_model_directory_that_cannot_be_made_is_exit_73_at_model_path(tmp_path, data_dir, command):
    (tmp_path / "blocker").write_text("a file, not a directory")
    cfg, _ = write_config(tmp_path, data_dir, out=str(tmp_path / "blocker" / "out"))
    code, _, err = cli(command, cfg, "--no-data" if command == "check" else "-q")
    assert code == EXIT_CANT_CREATE, err
    assert err.startswith(f"{position_of(cfg, 'modelPath')}: output error: modelPath: cannot create the directory "
                          f"'{tmp_path}/blocker/out'"), err


def test_a_write_directory_that_cannot_be_made_is_exit_73_at_output_path(tmp_path, trained):
    cfg, _ = trained
    (tmp_path / "blocker").write_text("")
    code, _, err = cli("write", cfg, "command=write", f"write.outputPath={tmp_path}/blocker/x/result")
    assert code == EXIT_CANT_CREATE, err
    assert err.startswith("<command line>:2:1: output error: outputPath: cannot create the directory "
                          f"'{tmp_path}/blocker/x'"), err


def test_a_data_directory_that_cannot_be_made_is_exit_73(tmp_path):
    (tmp_path / "blocker").write_text("")
    code, _, err = cli("data", "prepare", "synthetic", "--out", str(tmp_path / "blocker" / "data"))
    assert code == EXIT_CANT_CREATE, err
    assert err.startswith(f"output error: --out: cannot create the directory '{tmp_path}/blocker/data'"), err


def test_check_leaves_the_directories_it_probes_as_it_found_them(tmp_path, data_dir):
    cfg, _ = write_config(tmp_path, data_dir, out=str(tmp_path / "new" / "deeper" / "out"))
    code, _, err = cli("check", cfg, "--no-data", "-q")
    assert code == 0, err
    assert not (tmp_path / "new").exists()


# ---- memory ------------------------------------------------------------------------------------------

def test_check_reports_the_memory_a_training_needs(tmp_path, data_dir):
    cfg, _ = write_config(tmp_path, data_dir, mb=32)
    code, stdout, err = cli("check", cfg, "--no-data")
    assert code == 0, err
    # 51 parameters in double precision; momentum SGD keeps one buffer, plus multipliers and segment ids.
    assert ("train: memory for training: parameters 408 B, gradients 408 B, learner state 1020 B; values and "
            "gradients of a step 13.0 KB (planned by their lifetimes) for a minibatch of 32 samples; cpu has ") in stdout
    code, stdout, _ = cli("check", cfg, "--no-data", "--json")
    memory = json.loads(stdout)["actions"]["train"]["memory"]
    assert (memory["parameters"], memory["gradients"], memory["learnerState"]) == (408, 408, 1020)
    assert memory["device"] == "cpu" and memory["deviceMemory"] > 0


def test_a_network_too_large_for_the_device_is_a_config_error_in_check_and_train(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir)
    huge = "train.network.h=DenseLayer {800000, activation=Tanh} (DenseLayer {800000} (features))"
    for command in ("check", "train"):
        code, _, err = cli(command, cfg, huge, "--no-data" if command == "check" else "-q")
        assert code == EXIT_CONFIG, err
        assert err.startswith(f"{position_of(cfg, 'network = {')}: config error: the network does not fit the "
                              "device: training needs "), err
        assert "TB for parameters 4.7 TB, gradients 4.7 TB" in err
    assert not os.path.exists(os.path.join(out, "model.dnn.1"))


# ---- soft labels ---------------------------------------------------------------------------------------

def test_labels_that_are_no_distribution_get_a_warning_at_the_first_such_line(tmp_path, data_dir):
    data = data_with(tmp_path, data_dir, 7, "|features 1 1 |labels 0 0.7 0.6")
    data_with(tmp_path, data_dir, 9, "|features 1 1 |labels 0 -1 2")
    cfg, _ = write_config(tmp_path, data)
    result = subprocess.run([sys.executable, "-m", "netlang", "check", cfg], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert (f"{data}/Train_cntk_text.txt:7: warning: stream 'labels': its values sum to 1.3, so it is not a "
            "distribution, but CrossEntropyWithSoftmax 'ce' reads it as one") in result.stderr
    assert result.stderr.count("warning: stream 'labels'") == 1


def test_soft_labels_that_sum_to_one_are_fine(tmp_path, data_dir, caplog):
    data = data_with(tmp_path, data_dir, 7, "|features 1 1 |labels 0.2 0.3 0.5")
    cfg, _ = write_config(tmp_path, data)
    with caplog.at_level(logging.WARNING, logger="netlang.readers"):
        code, _, err = cli("check", cfg)
    assert code == 0, err
    assert not [r for r in caplog.records if "distribution" in r.getMessage()]


# ---- overrides --------------------------------------------------------------------------------------------

def test_an_unbalanced_override_is_a_syntax_error_that_shows_the_override(tmp_path, data_dir):
    cfg, _ = write_config(tmp_path, data_dir)
    code, _, err = cli("train", cfg, "SGD.maxEpochs=1", "train=[SGD=[maxEpochs=2")
    assert code == EXIT_CONFIG, err
    assert err.startswith("<command line>:2:24: syntax error: in override 2: unexpected end of input — expected "
                          "']'"), err
    assert "     2 | train=[SGD=[maxEpochs=2\n" in err


# ---- divergence and NumPy's warnings --------------------------------------------------------------------

def test_the_divergence_watch_warns_once_when_the_loss_stays_far_above_its_start():
    # Windows of one minibatch each (numMBsToShowResult = 1); they add up to windows of WINDOW.
    watch = DivergenceWatch("ce")
    said = [watch.observe(1.0 * 10, 10, 1, 1, 0.1) for _ in range(WINDOW)]     # the start: 1.0 per sample
    said += [watch.observe(3.0 * 10, 10, 1, 2, 0.5) for _ in range(SUSTAINED)]
    warnings = [w for w in said if w]
    assert len(warnings) == 1 and said[-1] == warnings[0]
    assert "the training is diverging: ce averaged 3 per sample" in warnings[0]
    assert "in epoch 2 with learning rate 0.5 per sample" in warnings[0]
    assert not [w for w in (watch.observe(30.0, 10, 1, 2, 0.5) for _ in range(5 * WINDOW)) if w]


def test_a_falling_or_briefly_rising_loss_is_no_divergence():
    watch = DivergenceWatch()
    losses = [1.0] * WINDOW + [0.5] * WINDOW + [3.0] * (SUSTAINED - WINDOW) + [0.4] * 5 * WINDOW
    assert not [w for w in (watch.observe(v, 1, 1, 1, 0.1) for v in losses) if w]


def test_the_divergence_watch_continues_from_its_state():
    watch, again = DivergenceWatch(), DivergenceWatch()
    for _ in range(WINDOW + 7):
        watch.observe(1.0, 1, 1, 1, 0.1)
    again.load_state(json.loads(json.dumps(watch.state())))
    assert again.state() == watch.state()


def test_a_diverging_training_warns_with_the_epoch_and_the_rate(tmp_path, data_dir):
    cfg, _ = write_config(tmp_path, data_dir, epochs=4, mb=4, lr="0.01*2:2")
    code, _, err = cli("train", cfg, "--no-progress")
    assert code == 0, err
    assert err.count("warning: the training is diverging: ce averaged ") == 1
    assert "in epoch 3 with learning rate 2 per sample (try a lower learning rate)" in err


def test_numpy_runtime_warnings_never_reach_the_user(tmp_path, data_dir):
    cfg, _ = write_config(tmp_path, data_dir, mb=4, lr="30")
    result = subprocess.run([sys.executable, "-m", "netlang", "train", cfg, "precision=float", "--no-progress",
                             "train.network.h=DenseLayer {8, activation=ReLU} (features)"],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "RuntimeWarning" not in result.stderr and "Warning:" not in result.stderr
    assert f"{position_of(cfg, 'CrossEntropyWithSoftmax')}: network error: the criterion 'ce' became nan in " \
           "epoch " in result.stderr
    assert "lower the learning rate (30 per sample in epoch " in result.stderr


def test_a_model_file_from_training_still_loads(trained):
    assert load_model(os.path.join(trained[1], "model.dnn")).network.node("z") is not None
