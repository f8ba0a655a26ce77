"""End-to-end training on small generated data: determinism, resume, interruption, eval, write, errors."""
from __future__ import annotations

import glob
import json
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from training_runs import cli

from netlang.compiler.graph import evaluate_text, network
from netlang.compiler.lang.nodes import BuildContext
from netlang.datasets.synthetic import prepare_synthetic
from netlang.ir.modelfile import load_model, save_model

CONFIG = """
command = train:test
modelPath = "{out}/model.dnn"
deviceId = "cpu"
precision = "{precision}"
train = {{
    action = "train"
    network = {{
        features = Input {{2}} ; labels = Input {{3}}
        h = DenseLayer {{8, activation=Tanh}} (features)
        z = DenseLayer {{3}} (h)
        ce = CrossEntropyWithSoftmax (labels, z) ; errs = ClassificationError (labels, z)
        criterionNodes = (ce) ; evaluationNodes = (errs) ; outputNodes = (z)
    }}
    SGD = {{
        maxEpochs = {epochs} ; minibatchSize = {mb} ; learningRatesPerSample = 0.01*2:0.005
        momentumAsTimeConstant = 100 ; numMBsToShowResult = 50 ; dropoutRate = 0
    }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/Train_cntk_text.txt"
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
test = {{
    action = "test"
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/Test_cntk_text.txt" ; randomize = false
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
write = {{
    action = "write"
    outputPath = "{out}/result"
    outputNodeNames = z
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/Test_cntk_text.txt"
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(str(path), seed=3, classes=3, dim=2, samples=2000)
    return str(path)


def write_config(tmp_path, data_dir, name="cfg.net", epochs=3, mb=32, precision="double", out=None):
    out = out or str(tmp_path / "out")
    path = tmp_path / name
    path.write_text(CONFIG.format(out=out, data=data_dir, epochs=epochs, mb=mb, precision=precision))
    return str(path), out



def epoch_losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [r["criterion"] for r in map(json.loads, fh) if r["event"] == "epoch"]


def final_parameters(out):
    return load_model(os.path.join(out, "model.dnn")).parameters


# ---- training works and is deterministic -------------------------------------------------------

def test_training_lowers_the_loss_and_eval_reports_json(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir)
    code, _, err = cli("train", cfg, "--no-progress")
    assert code == 0, err
    losses = epoch_losses(out)
    assert len(losses) == 3 and losses[-1] < losses[0]
    code, stdout, err = cli("eval", cfg, "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert set(result) == {"metrics", "samples", "counts"} and result["samples"] == 500
    assert result["counts"] == {"ce": 500, "errs": 500}       # one label per sample
    assert set(result["metrics"]) == {"ce", "errs"} and result["metrics"]["errs"] < 0.4   # chance is 0.67


def test_same_seed_gives_identical_losses(tmp_path, data_dir):
    a, out_a = write_config(tmp_path, data_dir, "a.net", out=str(tmp_path / "a"))
    b, out_b = write_config(tmp_path, data_dir, "b.net", out=str(tmp_path / "b"))
    assert cli("train", a, "-q")[0] == 0 and cli("train", b, "-q")[0] == 0
    assert epoch_losses(out_a) == epoch_losses(out_b)
    for name, value in final_parameters(out_a).items():
        assert np.array_equal(value, final_parameters(out_b)[name])


def test_epoch_models_and_checkpoints_are_written(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, epochs=2)
    assert cli("train", cfg, "-q")[0] == 0
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "model.dnn*"))) == \
        ["model.dnn", "model.dnn.1", "model.dnn.2", "model.dnn.2.ckp"]
    assert os.path.exists(os.path.join(out, "config.resolved.yaml"))


def test_finished_training_is_not_repeated_in_make_mode(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, epochs=1)
    assert cli("train", cfg, "-q")[0] == 0
    code, _, err = cli("train", cfg)
    assert code == 0 and "nothing to do" in err


def test_write_action_writes_one_line_per_sample(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, epochs=1)
    assert cli("train", cfg, "-q")[0] == 0
    code, _, err = cli("write", cfg, "command=write")
    assert code == 0, err
    lines = open(os.path.join(out, "result.z")).read().splitlines()
    assert len(lines) == 500 and len(lines[0].split()) == 3


def test_options_may_follow_the_overrides(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, epochs=3)
    code, _, err = cli("train", cfg, "SGD.maxEpochs=1", "--no-progress")
    assert code == 0, err
    assert len(epoch_losses(out)) == 1 and "Finished Epoch[ 1 of 1]" in err
    code, stdout, err = cli("eval", cfg, "--json", f"modelPath={out}/model.dnn.1")
    assert code == 0, err
    assert json.loads(stdout)["samples"] == 500


def test_run_executes_every_block_of_the_command_list_in_order(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, epochs=1)
    code, stdout, err = cli("run", cfg, "command=train:test:write", "--no-progress")
    assert code == 0, err
    assert "Finished Epoch[ 1 of 1]" in err
    lines = stdout.splitlines()
    assert lines[0].startswith("test: ce = ") and lines[0].endswith("(500 samples)")
    assert lines[1] == f"write: wrote z for 500 samples to {out}/result.z"


# ---- resume and interruption -------------------------------------------------------------------

# A child's progress line is about 100 bytes and an epoch of these runs is 500 minibatches. With a
# line per minibatch and a one-page pipe, the child can write only about 40 lines that the test has
# not read yet; then it blocks in its next write. So when the test has read the first line of an
# epoch, the child is at most ~80 minibatches into that epoch, however loaded the machine is, and a
# signal sent then arrives inside that epoch.
PIPE_SIZE = 4096


def _spawn(cfg):
    """`netlang train cfg` in a child that reports every minibatch on stderr, into a small pipe."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "netlang", "train", cfg, "--no-progress",
                             "train.SGD.numMBsToShowResult=1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pipesize=PIPE_SIZE, env=env)


def _read_until(proc, line_start: str, timeout: float = 120) -> str:
    """The child's stderr up to the first line that starts with `line_start` (leading blanks aside).
    Fails, saying what the child printed, if it ends or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    seen = b""
    while True:
        text = seen.decode(errors="replace")
        if any(line.lstrip().startswith(line_start) for line in text.splitlines()):
            return text
        left = deadline - time.monotonic()
        assert left > 0, f"no line starting with {line_start!r} within {timeout:g} s; stderr so far:\n{text}"
        ready, _, _ = select.select([proc.stderr], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(proc.stderr.fileno(), PIPE_SIZE)
            assert chunk, f"the run ended (exit {proc.wait()}) before a line starting with {line_start!r}:\n{text}"
            seen += chunk


def test_killed_run_resumes_from_last_checkpoint_and_matches_uninterrupted(tmp_path, data_dir):
    ref_cfg, ref_out = write_config(tmp_path, data_dir, "ref.net", epochs=5, mb=4, out=str(tmp_path / "ref"))
    assert cli("train", ref_cfg, "-q")[0] == 0

    cfg, out = write_config(tmp_path, data_dir, "run.net", epochs=5, mb=4, out=str(tmp_path / "run"))
    proc = _spawn(cfg)
    _read_until(proc, "Epoch[ 3 of 5]-Minibatch")   # epoch 2's checkpoint is written
    proc.send_signal(signal.SIGKILL)               # during epoch 3
    proc.wait()
    assert not os.path.exists(os.path.join(out, "model.dnn"))
    code, _, err = cli("train", cfg)
    assert code == 0, err
    assert "resuming from epoch 3" in err
    for name, value in final_parameters(ref_out).items():
        assert np.array_equal(value, final_parameters(out)[name]), name


def test_sigint_writes_a_checkpoint_exits_130_and_resumes_exactly(tmp_path, data_dir):
    ref_cfg, ref_out = write_config(tmp_path, data_dir, "ref.net", epochs=3, mb=4, out=str(tmp_path / "ref"))
    assert cli("train", ref_cfg, "-q")[0] == 0

    cfg, out = write_config(tmp_path, data_dir, "run.net", epochs=3, mb=4, out=str(tmp_path / "run"))
    proc = _spawn(cfg)
    before = _read_until(proc, "Epoch[ 2 of 3]-Minibatch")   # inside epoch 2
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    stderr = before + rest.decode(errors="replace")
    assert proc.returncode == 130, stderr
    assert "checkpoint written" in stderr and "Traceback" not in stderr
    assert os.path.exists(os.path.join(out, "model.dnn.ckp"))
    code, _, err = cli("train", cfg)
    assert code == 0, err
    assert "resuming from epoch 2" in err
    for name, value in final_parameters(ref_out).items():
        assert np.array_equal(value, final_parameters(out)[name]), name


# ---- bad inputs: clear errors, the right exit code, no model file --------------------------------

def _no_model_files(out):
    return not glob.glob(os.path.join(out, "model.dnn*"))


def test_ctf_line_with_wrong_dimension_is_a_data_error(tmp_path, data_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = open(os.path.join(data_dir, "Train_cntk_text.txt")).read().splitlines()
    lines[6] = "|features 0.5 |labels 0 1 0"
    (bad / "Train_cntk_text.txt").write_text("\n".join(lines) + "\n")
    (bad / "Test_cntk_text.txt").write_text(open(os.path.join(data_dir, "Test_cntk_text.txt")).read())
    cfg, out = write_config(tmp_path, str(bad))
    code, _, err = cli("train", cfg)
    assert code == 65
    assert "Train_cntk_text.txt:7:" in err and "features" in err and "expected 2" in err
    assert _no_model_files(out)


def test_missing_data_file_is_a_data_error(tmp_path):
    cfg, out = write_config(tmp_path, str(tmp_path / "nowhere"))
    code, _, err = cli("train", cfg)
    assert code == 65 and "nowhere/Train_cntk_text.txt" in err
    assert _no_model_files(out)


def test_reader_dimension_different_from_input_is_a_config_error(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir)
    text = open(cfg).read().replace("features = Input {2}", "features = Input {5}")
    open(cfg, "w").write(text)
    code, _, err = cli("train", cfg)
    assert code == 78
    assert "cfg.net:9:" in err and "dimension 2" in err and "'features'" in err
    assert _no_model_files(out)


def test_unknown_sgd_key_suggests_the_right_one(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir)
    text = open(cfg).read().replace("maxEpochs = 3", "maxEpoch = 3")
    open(cfg, "w").write(text)
    code, _, err = cli("train", cfg)
    assert code == 78 and "cfg.net:16:" in err and "maxEpoch" in err and "did you mean 'maxEpochs'" in err
    assert _no_model_files(out)


def test_a_trained_model_file_loads_as_a_network_value(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, epochs=1)
    assert cli("train", cfg, "-q")[0] == 0
    loader = tmp_path / "load.net"
    loader.write_text(f'command = look\nlook = {{ action = "test" ; modelPath = "{out}/model.dnn"\n'
                      f'  network = (BS.Network.Load ("{out}/model.dnn"))\n'
                      f'  reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data_dir}/Test_cntk_text.txt"\n'
                      f'             input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }} }}\n')
    code, stdout, err = cli("check", str(loader), "--json")
    assert code == 0, err
    document = json.loads(stdout)
    assert document["actions"]["look"]["parameters"] == 2 * 8 + 8 + 8 * 3 + 3
    assert document["data"]["look.reader"]["samples"] == 16


def test_precomputed_statistics_are_gathered_and_saved_with_the_model(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, epochs=1)
    text = open(cfg).read().replace(
        "h = DenseLayer {{8, activation=Tanh}} (features)".format(),
        "n = PerDimMeanVarNormalization (features, Mean (features), InvStdDev (features))\n"
        "        h = DenseLayer {8, activation=Tanh} (n)")
    open(cfg, "w").write(text)
    code, _, err = cli("train", cfg)
    assert code == 0, err
    assert "precomputing" in err
    model = load_model(os.path.join(out, "model.dnn"))
    mean_node = next(n for n in model.network.nodes if n.op == "Mean")
    means = [model.state[f"node/{mean_node.name}/value"]]
    assert means[0].shape == (2,)
    rows = np.loadtxt(os.path.join(data_dir, "Train_cntk_text.txt"), usecols=(1, 2))
    np.testing.assert_allclose(means[0], rows.mean(axis=0), rtol=1e-5)
    assert cli("eval", cfg, "--json")[0] == 0


def test_cross_validation_runs_after_every_epoch(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, epochs=2)
    text = open(cfg).read().replace(
        'train = {\n    action = "train"',
        'train = {\n    action = "train"\n    cvReader = { readerType = "CNTKTextFormatReader" ; '
        f'file = "{data_dir}/Test_cntk_text.txt" ; input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}')
    open(cfg, "w").write(text)
    code, _, err = cli("train", cfg)
    assert code == 0, err
    assert "[Validate]" in err
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        epochs = [r for r in map(json.loads, fh) if r["event"] == "epoch"]
    assert [sorted(r["cv"]) for r in epochs] == [["ce", "errs"], ["ce", "errs"]]


def test_write_category_format_maps_the_argmax_to_labels(tmp_path, data_dir):
    cfg, out = write_config(tmp_path, data_dir, epochs=1)
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    text = open(cfg).read().replace('outputNodeNames = z',
                                    f'outputNodeNames = z\n    format = {{ type = "category" ; labelMappingFile = "{labels}" }}')
    open(cfg, "w").write(text)
    assert cli("train", cfg, "-q")[0] == 0
    assert cli("write", cfg, "command=write")[0] == 0
    lines = open(os.path.join(out, "result.z")).read().splitlines()
    assert len(lines) == 500 and set(lines) <= {"red", "green", "blue"} and len(set(lines)) > 1


# ---- what a criterion is averaged over ---------------------------------------------------------

def test_a_per_sequence_label_is_counted_once_per_sequence(tmp_path):
    """An intent-style model (one label per word sequence) is averaged over sequences, as CNTK
    counts samples with labels; the reader's word count stays the minibatch's size."""
    rng = np.random.default_rng(0)
    lines, words = [], 0
    for key in range(40):
        length = int(rng.integers(2, 7))
        label = key % 2
        for t in range(length):
            word = int(rng.integers(0, 5)) + 5 * label      # the label is readable from any word
            lines.append(f"{key} |w {word}:1" + (f" |c {label}:1" if t == 0 else ""))
        words += length
    (tmp_path / "seqs.ctf").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "intent.net"
    cfg.write_text(f"""
command = train:test
deviceId = "cpu"
precision = "double"
modelPath = "{tmp_path}/model.dnn"
reader = {{ readerType = "CNTKTextFormatReader" ; file = "{tmp_path}/seqs.ctf" ; randomize = false
           input = {{ w = {{ dim = 10 ; format = "sparse" }} ; c = {{ dim = 2 ; format = "sparse" }} }} }}
train = {{
    action = "train"
    network = {{
        w = SparseInput {{10}}
        c = Input {{2, dynamicAxis=DynamicAxis()}}
        z = DenseLayer {{2}} (BS.Sequences.Last (EmbeddingLayer {{4}} (w)))
        ce = CrossEntropyWithSoftmax (c, z)
        errs = ClassificationError (c, z)
        criterionNodes = (ce) ; evaluationNodes = (errs)
    }}
    SGD = {{ minibatchSize = 30 ; maxEpochs = 2 ; learningRatesPerSample = 0.1 }}
}}
test = {{ action = "test" }}
""")
    code, _, err = cli("train", str(cfg), "--no-progress")
    assert code == 0, err
    with open(tmp_path / "metrics.jsonl") as fh:
        epochs = [r for r in map(json.loads, fh) if r["event"] == "epoch"]
    assert [r["samples"] for r in epochs] == [40, 40]          # sequences, not the words
    code, stdout, err = cli("eval", str(cfg), "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["samples"] == words and result["counts"] == {"ce": 40, "errs": 40}
    errors = result["metrics"]["errs"] * 40
    assert abs(errors - round(errors)) < 1e-9                  # a whole number of wrong sequences


def test_write_gives_sequence_outputs_one_line_per_step_in_reader_order(tmp_path):
    lengths = [3, 1, 4, 2]
    rows = []
    lines = []
    for key, length in enumerate(lengths):
        for t in range(length):
            row = [key + 0.1 * t, -key - 0.01 * t]
            rows.append(row)
            lines.append(f"{key} |x {row[0]} {row[1]}")
    (tmp_path / "seqs.ctf").write_text("\n".join(lines) + "\n")
    model = tmp_path / "model.dnn"
    net = network.build_network(evaluate_text("net = { x = Input {2} ; z = Tanh (x) ; outputNodes = (z) }").get("net"),
                                BuildContext("", None))
    save_model(str(model), net, {})
    cfg = tmp_path / "write.net"
    cfg.write_text(f"""
command = write
deviceId = "cpu"
precision = "double"
modelPath = "{model}"
write = {{
    action = "write"
    outputPath = "{tmp_path}/out"
    minibatchSize = 6
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{tmp_path}/seqs.ctf" ; randomize = false
               input = {{ x = {{ dim = 2 }} }} }}
}}
""")
    code, _, err = cli("write", str(cfg))
    assert code == 0, err
    written = np.loadtxt(tmp_path / "out.z", ndmin=2)
    np.testing.assert_allclose(written, np.tanh(np.array(rows)), rtol=1e-6)
