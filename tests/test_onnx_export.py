"""ONNX export: onnxruntime computes what netlang computes, for the repository's model families."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import netlang
from netlang import cli
from netlang.api import load_text
from netlang.errors import NetworkError, UsageError
from netlang.export.onnx import export_onnx
from netlang.ops.sparse import SparseRows
from netlang.runtime.feeding import synthetic_feeds

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
HELLO = str(ROOT / "examples" / "hello.net")
TOLERANCE = 1e-5


def fresh_network(config: str):
    """The train action's network of a config, randomly initialised (float32), batch-norm statistics
    set as a trained model would have them."""
    runner = netlang.load(str(ROOT / config)).network("train", precision="float")
    rng = np.random.default_rng(7)
    for node in runner.network.nodes:
        if node.op == "BatchNormalization":
            scale, bias, mean, variance, count = (runner.parameters[i.name] for i in node.inputs[1:])
            scale[...] = rng.normal(1.0, 0.2, scale.shape)
            bias[...] = rng.normal(0.0, 0.2, bias.shape)
            mean[...] = rng.normal(0.0, 0.1, mean.shape)
            variance[...] = rng.uniform(0.5, 2.0, variance.shape)
            count[...] = 100
    return runner


def dense(feed):
    """A feed as onnxruntime takes it: sparse rows become dense one-hot rows."""
    if not isinstance(feed, SparseRows):
        return np.asarray(feed, np.float32)
    rows = np.zeros((feed.rows, feed.row_size), np.float32)
    for row in range(feed.rows):
        start, end = feed.offsets[row], feed.offsets[row + 1]
        rows[row, feed.indices[start:end]] = feed.values[start:end]
    return rows.reshape(feed.shape)


def round_trip(runner, feeds, tmp_path) -> dict:
    """netlang's outputs and onnxruntime's on the exported model, by output name."""
    parameters = {k: runner.backend.to_host(v) for k, v in runner.parameters.items()}
    path = tmp_path / "model.onnx"
    export_onnx(runner.network, parameters, str(path))
    session = ort.InferenceSession(str(path))
    results = session.run(None, {i.name: dense(feeds[i.name]) for i in session.get_inputs()})
    expected = runner.forward(feeds)
    return {o.name: (expected[o.name], got) for o, got in zip(session.get_outputs(), results)}


def assert_close(pairs: dict) -> None:
    """Within 1e-5 of netlang's outputs, relative to their magnitude where that exceeds 1 (both
    compute in float32, whose precision is relative)."""
    for name, (expected, got) in pairs.items():
        assert got.shape == expected.shape, name
        error = np.abs(got - expected).max() / max(1.0, np.abs(expected).max())
        assert error <= TOLERANCE, (name, error)


def image_feeds(runner, samples: int) -> dict:
    feeds = synthetic_feeds(runner.network, samples, seed=1)
    feeds["features"] = feeds["features"] * 255.0          # pixel values, as the readers give them
    return feeds


@pytest.mark.parametrize("config", ["configs/vision/mnist_mlp.net", "configs/vision/mnist_convnet.net",
                                    "configs/vision/resnet20_cifar10.net"])
def test_vision_models_run_in_onnxruntime_as_in_netlang(config, tmp_path):
    runner = fresh_network(config)
    pairs = round_trip(runner, image_feeds(runner, 4), tmp_path)
    assert set(pairs) == {"z"} and np.abs(pairs["z"][0]).max() > 1e-2
    assert_close(pairs)


@pytest.mark.parametrize("config", ["configs/text/atis_slots_lstm.net", "configs/text/atis_intent.net"])
def test_recurrent_models_run_as_scans_in_onnxruntime(config, tmp_path):
    runner = fresh_network(config)
    pairs = round_trip(runner, synthetic_feeds(runner.network, 3 * 6, sequence_length=6, seed=2), tmp_path)
    assert_close(pairs)
    model = onnx.load(str(tmp_path / "model.onnx"))
    assert "Scan" in {node.op_type for node in model.graph.node}


def test_normalisation_softmax_and_transposed_convolution_export(tmp_path):
    runner = load_text("""
        x = Input {6:6:2}
        W = ParameterTensor {(3:3:4:2), init='uniform', initValueScale=1}
        up = ConvolutionTranspose (W, x, (3:3:4), mapDims=2, stride=(2:2), autoPadding=(false:false:false))
        k = ParameterTensor {(3:3:4:3), init='uniform', initValueScale=1}
        c = Convolution (k, up, (3:3:4), mapDims=3, autoPadding=(true:true:false))
        p = Pooling (c, "average", (2:2), stride=(2:2), autoPadding=(true:true))
        g = ParameterTensor {(1), init='fixedValue', value=1.5}
        n = LayerNormalization (p, g, g)
        s = Softmax (p)
        outputNodes = (s : n)
    """)
    feeds = {"x": np.random.default_rng(0).normal(size=(3, 2, 6, 6))}
    parameters = {k: np.asarray(v) for k, v in runner.parameters.items()}
    path = tmp_path / "model.onnx"
    export_onnx(runner.network, parameters, str(path))
    session = ort.InferenceSession(str(path))
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": feeds["x"].astype(np.float32)})))
    expected = runner.forward(feeds)
    for name in ("s", "n"):
        np.testing.assert_allclose(got[name], expected[name], atol=TOLERANCE)


# ---- the command ------------------------------------------------------------------------------------

@pytest.fixture
def trained_hello(tmp_path):
    model = tmp_path / "hello.dnn"
    netlang.train(HELLO, [f"modelPath={model}"])
    return model


def test_export_writes_a_model_file_as_onnx(trained_hello, tmp_path, capsys):
    target = tmp_path / "hello.onnx"
    assert cli.main(["export", str(trained_hello), "-o", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    got = ort.InferenceSession(str(target)).run(["z"], {"features": x})[0]
    np.testing.assert_allclose(got, netlang.load_model(str(trained_hello)).predict({"features": x})["z"], atol=1e-6)


def test_export_of_a_config_takes_its_actions_model(trained_hello, tmp_path):
    target = tmp_path / "from_config.onnx"
    assert cli.main(["export", HELLO, "--action", "test", f"modelPath={trained_hello}", "-o", str(target)]) == 0
    assert [o.name for o in onnx.load(str(target)).graph.output] == ["z"]


def test_an_op_that_cannot_be_exported_is_named_with_its_config_line(trained_hello, tmp_path, capsys):
    code = cli.main(["export", HELLO, f"modelPath={trained_hello}", "--outputs", "z:ce", "-o", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 78
    assert "cannot export node 'ce'" in err and "CrossEntropyWithSoftmax" in err and "hello.net:" in err
    assert cli.main(["export", str(trained_hello), "--outputs", "ce", "-o", str(tmp_path / "x.onnx")]) == 78
    assert "cannot export node 'ce'" in capsys.readouterr().err          # a model file alone: no config line


def test_batch_normalisation_without_statistics_is_refused(tmp_path):
    runner = netlang.load(str(ROOT / "configs/vision/resnet20_cifar10.net")).network("train", precision="float")
    parameters = {k: np.asarray(v) for k, v in runner.parameters.items()}
    with pytest.raises(NetworkError, match="runCount 0"):
        export_onnx(runner.network, parameters, str(tmp_path / "x.onnx"))


def test_export_without_onnx_says_what_to_install(monkeypatch, tmp_path, trained_hello):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(UsageError) as raised:
        cli_args = ["export", str(trained_hello), "-o", str(tmp_path / "x.onnx")]
        from netlang.actions import export

        export.run(cli.parse_command_line(cli.build_parser(), cli_args))
    assert "netlang[onnx]" in raised.value.hint
