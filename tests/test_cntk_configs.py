"""Whole `.cntk` configs in the styles of CNTK's examples (our own texts, tests/data/cntk/) build with
`netlang check`, and report the parameter count CNTK's rules give: the learnable parameters the
criterion depends on (reference §3.7), derived here by hand."""
from __future__ import annotations

import json
import os

import pytest

from netlang.cli import main

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "cntk")


def check(capsys, *path, extra=()) -> dict:
    code = main(["check", os.path.join(CONFIGS, *path), "--no-data", "--json", *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def dense(inputs: int, outputs: int) -> int:
    """W (outputs x inputs) and its bias."""
    return inputs * outputs + outputs


def conv(kernel: int, inputs: int, outputs: int) -> int:
    """A kernel × kernel convolution without bias and its batch normalization (scale and bias)."""
    return kernel * kernel * inputs * outputs + 2 * outputs


def lstmp(cell: int, inputs: int, aux: int = 0, stabilizers: int = 0) -> int:
    """CNTK's BS.RNNs.LSTMP without projection: each use of B(), W(), A(), H(), C() makes a new
    parameter — B, W and A four times (in each of the four gates' `pin ()`), H four times, the
    peephole C three times — plus the self-stabilizers (dh, dc and ct: 3 scalars)."""
    return 4 * cell + 4 * cell * inputs + 4 * cell * aux + 4 * cell * cell + 3 * cell + stabilizers


def test_getting_started_with_variables_and_unquoted_paths(capsys):
    report = check(capsys, "OneHidden.cntk")
    assert report["config"]["modelPath"] == "./Output/Models/01_OneHidden"
    train = report["actions"]["trainNetwork"]
    assert train["reader"]["file"] == "./DataSets/MNIST/Train-28x28_cntk_text.txt"
    # 784 pixels -> 200 ($hiddenDim$, substituted into the network text) -> 10 classes
    assert train["parameters"] == dense(28 * 28, 200) + dense(200, 10) == 159_010


def test_resnet_with_macros_included_through_config_dir(capsys):
    report = check(capsys, "ResNet", "ResNet_20.cntk")
    n = 3                                                              # blocks per stage: 6n+2 = 20 layers
    stem = conv(3, 3, 16)
    stage1 = n * 2 * conv(3, 16, 16)
    stage2 = conv(3, 16, 32) + conv(3, 32, 32) + conv(1, 16, 32) + (n - 1) * 2 * conv(3, 32, 32)
    stage3 = conv(3, 32, 64) + conv(3, 64, 64) + conv(1, 32, 64) + (n - 1) * 2 * conv(3, 64, 64)
    assert report["actions"]["TrainConvNet"]["parameters"] == stem + stage1 + stage2 + stage3 + dense(64, 10) \
        == 272_474


def test_the_macros_file_alone_is_a_library(capsys):
    report = check(capsys, "ResNet", "Macros.bs")
    assert report["library"] is True
    assert "ResNetBasicInc" in report["definitions"]


def test_slu_tagger_and_a_later_block_that_loads_its_model(capsys):
    report = check(capsys, "SLU", "ATIS.cntk")
    actions = report["actions"]
    # embedding 150 x 943 words; LSTM 300: B (4·300), W (4·300 x 150), H (4·300 x 300); dense 300 -> 129
    embedding = 150 * 943
    lstm = 4 * 300 + 4 * 300 * 150 + 4 * 300 * 300
    assert actions["TrainTagger"]["parameters"] == embedding + lstm + dense(300, 129) == 721_479
    # the write block loads the model TrainTagger writes: check does not load it, it says so
    assert actions["WriteTagger"]["deferred"] == {"loads": "Output/slu.cmf", "written_by": "TrainTagger"}


def test_an4_feed_forward_from_simple_network_builder(capsys):
    report = check(capsys, "AN4", "FeedForward.cntk")
    train = report["actions"]["speechTrain"]
    # 363 = 33 features x 11 frames -> 512 -> 512 -> 132 senones; W{i} (out x in), B{i} (out x 1)
    assert train["parameters"] == dense(363, 512) + dense(512, 512) + dense(512, 132) == 516_740
    names = {node["name"] for node in train["nodes"]}
    assert {"features", "MVNormalizedFeatures", "W0", "B0", "H1", "H2", "HLast", "labels", "CrossEntropyWithSoftmax",
            "EvalErrorPrediction", "Prior", "LogOfPrior", "ScaledLogLikelihood", "PosteriorProb"} <= names


def test_lrn_convnet_whose_lrn_weight_is_checked_by_element_count(capsys):
    report = check(capsys, "ConvNet", "ConvNet_LRN.cntk")
    # 32x32x3 -> conv 5x5 64 -> LRN -> pool 3/2 (15) -> conv 5x5 64 -> LRN -> pool 3/2 (7) -> 256 -> 10;
    # the LRN weights (1:1:4:1) have learningRateMultiplier 0 and do not count
    conv1 = 5 * 5 * 3 * 64 + 64
    conv2 = 5 * 5 * 64 * 64 + 64
    assert report["actions"]["Train"]["parameters"] == conv1 + conv2 + dense(7 * 7 * 64, 256) + dense(256, 10) \
        == 912_970


def test_g2p_stacked_lstmp_with_an_attention_hook(capsys):
    report = check(capsys, "G2P", "G2P.cntk")
    hidden, embedding, vocab, attention = 512, 300, 69, 128
    embeddings = 2 * vocab * embedding                        # Einput, Elabels
    stabilizers = 3                                           # S (inputEmbedded), S (decoderInput), S (decoderOutput.h)
    # two layers each; the upper layer reads a stabilized lower layer (+1), with inputs inferred (512)
    encoder = lstmp(hidden, embedding, stabilizers=3) + lstmp(hidden, hidden, stabilizers=3) + 1
    # only the first decoder layer gets the attention hook: its aux input A (512 x 512) four times,
    # and the hook: encoder projection, decoder projection, scorer, 1 + 3 stabilizers
    hook = attention * hidden + attention * hidden + attention + 4
    decoder = lstmp(hidden, embedding, aux=hidden, stabilizers=3) + hook + lstmp(hidden, hidden, stabilizers=3) + 1
    output = dense(hidden, vocab)
    assert report["actions"]["train"]["parameters"] == embeddings + stabilizers + encoder + decoder + output \
        == 8_791_186


@pytest.mark.parametrize("path", [("OneHidden.cntk",), ("AN4", "FeedForward.cntk"), ("SLU", "ATIS.cntk")])
def test_configs_check_with_overrides_in_cntk_style(capsys, path):
    report = check(capsys, *path, extra=("deviceId=-1", "OutputDir=/tmp/netlang-out"))
    assert report["config"]["deviceId"] == -1
    assert report["config"]["modelPath"].startswith("/tmp/netlang-out")
