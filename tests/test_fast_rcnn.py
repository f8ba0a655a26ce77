"""Fast R-CNN configs: CNTK's fastrcnn style passes `netlang check` and trains; the repository's configs
(configs/vision/shapes_classifier.net, fast_rcnn.net) check and run end to end on a tiny shapes set.

The real figures (mAP on the full set) come from the README's commands; these runs only show that
every block works: load → clone → ROIPooling → `W * fcOut + b`, `axis = 1` criteria, the edit blocks
that make the test-shaped detector and the baseline, the write blocks and score-detections.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from training_runs import cli

from netlang.compiler.graph import evaluate_text, load_config
from netlang.compiler.graph.network import build_action_network, network_from_value
from netlang.datasets.shapes import prepare_shapes
from netlang.ir.modelfile import save_model
from netlang.runtime.executor import initial_parameters

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(os.path.dirname(HERE), "configs", "vision")

# A classifier with the node names CNTK's AlexNet has where Fast R-CNN cuts it.
CLASSIFIER = """
    features = Input {8:8:3}
    labels = Input {6}
    conv5_y = ConvolutionalLayer {4, (3:3), pad = true, activation = ReLU} (features)
    pool3 = MaxPoolingLayer {(2:2), stride = 2} (conv5_y)
    h2 = DenseLayer {16, activation = ReLU} (pool3)
    h2_d = Dropout (h2)
    z = LinearLayer {6} (h2_d)
    ce = CrossEntropyWithSoftmax (labels, z)
    criterionNodes = (ce) ; outputNodes = (z)
"""



def save_untrained(text: str, path: str) -> None:
    network = network_from_value(evaluate_text(text))
    save_model(path, network, initial_parameters(network))


def fastrcnn_style_files(root):
    """The classifier model and four 16x16 images with three regions each."""
    (root / "models").mkdir()
    (root / "data").mkdir()
    save_untrained(CLASSIFIER, str(root / "models" / "classifier.model"))
    rng = np.random.default_rng(0)
    maps, rois, labels = [], [], []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "data" / f"{i}.png")
        maps.append(f"{i}.png\t0\n")
        rois.append("|rois 0 0 7 7 8 8 15 15 2 4 12 13\n")
        hot = np.eye(6, dtype=int)[[0, i % 5 + 1, 0]]
        labels.append("|roiLabels " + " ".join(map(str, hot.ravel())) + "\n")
    (root / "data" / "train.txt").write_text("".join(maps))
    (root / "data" / "train.rois.txt").write_text("".join(rois))
    (root / "data" / "train.roilabels.txt").write_text("".join(labels))


def test_a_config_in_cntks_fastrcnn_style_passes_check_and_trains(tmp_path, monkeypatch):
    shutil.copy(os.path.join(HERE, "data", "fastrcnn_style.cntk"), tmp_path / "fastrcnn.cntk")
    fastrcnn_style_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli("check", "fastrcnn.cntk", "--json")
    assert code == 0, err
    document = json.loads(stdout)
    nodes = {n["name"]: n for n in document["actions"]["Train"]["nodes"]}
    assert nodes["z.roiOut"]["op"] == "ROIPooling" and nodes["z.roiOut"]["shape"] == "[4 x 4 x 4 x 3 x #]"
    assert nodes["z"]["shape"] == "[6 x 3 x #]" and nodes["ce"]["shape"] == "[1]"
    # Frozen convolutions count no learnable parameters: the dense layer (16·64 + 16) and W, b (6·16 + 6).
    assert document["actions"]["Train"]["parameters"] == 16 * 64 + 16 + 6 * 16 + 6
    assert document["data"]["Train.reader"]["streams"] == ["features", "ignored", "roiLabels", "rois"]
    code, stdout, err = cli("run", "fastrcnn.cntk", "-q")
    assert code == 0, err
    assert stdout.startswith("Test: ce = ") and "errs = " in stdout


# ---- the repository's configs on a tiny set -------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny shapes set and an untrained classifier model with the classifier config's network."""
    root = tmp_path_factory.mktemp("frcn")
    prepare_shapes(str(root / "data"), seed=1, train_images=4, test_images=2)
    overrides = (f"DataDir={root / 'data'}", f"OutDir={root / 'classifier'}")
    config = load_config(os.path.join(CONFIGS, "shapes_classifier.net"), overrides)
    network = build_action_network(config.action("train").network_expr())
    os.makedirs(root / "classifier")
    save_model(str(root / "classifier" / "model.dnn"), network, initial_parameters(network))
    return root


def fast_rcnn_overrides(root) -> list[str]:
    return [f"DataDir={root / 'data'}", f"OutDir={root / 'frcn'}",
            f"ClassifierModel={root / 'classifier' / 'model.dnn'}", "train=[SGD=[maxEpochs=1]]"]


def test_the_classifier_config_checks_with_its_data_and_runs_on_any_device(workspace):
    code, stdout, err = cli("check", os.path.join(CONFIGS, "shapes_classifier.net"), f"DataDir={workspace / 'data'}",
                            "--json")
    assert code == 0, err
    document = json.loads(stdout)
    conv = 3 * 3 * 3 * 16 + 16 + 3 * 3 * 16 * 32 + 32 + 3 * 3 * 32 * 64 + 64
    dense = 8 * 8 * 64 * 128 + 128 + 128 * 6 + 6
    assert document["config"]["deviceId"] == "auto" and document["actions"]["train"]["parameters"] == conv + dense


def test_the_fast_rcnn_config_checks(workspace):
    code, stdout, err = cli("check", os.path.join(CONFIGS, "fast_rcnn.net"), *fast_rcnn_overrides(workspace),
                            "--json")
    assert code == 0, err
    document = json.loads(stdout)
    assert document["config"]["deviceId"] == "auto"
    assert document["actions"]["makeDetector"]["deferred"]["written_by"] == "train"   # loads what train writes
    assert document["actions"]["makeBaseline"]["parameters"] == 0                      # all of it frozen
    nodes = {n["name"]: n for n in document["actions"]["train"]["nodes"]}
    assert nodes["z"]["shape"] == "[6 x 64 x #]"
    assert document["actions"]["train"]["parameters"] == 8 * 8 * 64 * 128 + 128 + 6 * 128 + 6     # convolutions frozen


def test_the_fast_rcnn_config_runs_every_block_and_its_output_scores(workspace):
    code, stdout, err = cli("run", os.path.join(CONFIGS, "fast_rcnn.net"), *fast_rcnn_overrides(workspace), "-q")
    assert code == 0, err
    for name in ("detections.z", "baseline.z"):
        code, stdout, err = cli("data", "score-detections", str(workspace / "frcn" / name),
                                "--rois", str(workspace / "data" / "test.rois.txt"),
                                "--boxes", str(workspace / "data" / "test.boxes.json"), "--json")
        assert code == 0, err
        assert set(json.loads(stdout)) >= {"mAP@0.5", "mAP@[.5:.95]"}
