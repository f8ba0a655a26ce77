"""The synthetic detection set (`netlang data prepare shapes`) and detection scoring (`score-detections`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from training_runs import cli

from netlang.datasets import detection, shapes
from netlang.datasets.detection import Detection, coco_ap, iou, nms, precision_recall, score, voc_ap


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    shapes.prepare_shapes(str(out), seed=4, train_images=6, test_images=4)
    return out


# ---- the data set ----------------------------------------------------------------------------------

def test_every_file_has_one_line_per_image_with_its_regions_and_labels(data):
    for name, images, regions in (("train", 6, shapes.NUM_TRAIN_ROIS), ("test", 4, len(shapes.grid_proposals()))):
        maps = (data / f"{name}.txt").read_text().splitlines()
        rois = detection.read_regions(str(data / f"{name}.rois.txt"))
        labels = detection.read_stream_rows(str(data / f"{name}.roilabels.txt"), "roiLabels")
        assert len(maps) == len(rois) == len(labels) == images
        assert all(len(r) == regions for r in rois)
        one_hot = [np.array(lab).reshape(regions, len(shapes.CLASSES)) for lab in labels]
        assert all((h.sum(axis=1) == 1).all() for h in one_hot)
        assert (data / maps[0].split("\t")[0]).exists()


def test_test_regions_are_the_proposal_grid_and_never_look_at_the_ground_truth(data):
    grid = shapes.grid_proposals()
    for regions in detection.read_regions(str(data / "test.rois.txt")):
        np.testing.assert_array_equal(regions, grid)


def test_region_labels_follow_the_overlap_with_the_objects(data):
    truth = json.loads((data / "train.boxes.json").read_text())["images"]
    rois = detection.read_regions(str(data / "train.rois.txt"))
    labels = detection.read_stream_rows(str(data / "train.roilabels.txt"), "roiLabels")
    for image, regions, label_rows in zip(truth, rois, labels):
        classes = np.array(label_rows).reshape(len(regions), -1).argmax(axis=1)
        boxes = np.array([o["box"] for o in image["objects"]], dtype=float)
        overlaps = iou(regions, boxes)
        expected = np.where(overlaps.max(axis=1) >= 0.5,
                            np.array([o["label"] for o in image["objects"]])[overlaps.argmax(axis=1)], 0)
        np.testing.assert_array_equal(classes, expected)
        assert 0 < (classes > 0).sum() <= shapes.NUM_TRAIN_ROIS * shapes.FOREGROUND_FRACTION


def test_the_test_set_holds_out_colours_and_backgrounds(data):
    info = json.loads((data / "shapes.json").read_text())
    assert not set(info["train hue bands (of 12)"]) & set(info["test hue bands (of 12)"])
    assert not set(info["train backgrounds"]) & set(info["test backgrounds"])
    assert info["sets"]["test"]["proposal recall at IoU 0.5"] == 1.0


def test_objects_span_a_four_times_range_of_sizes_and_stay_visible():
    rng = np.random.default_rng(0)
    objects = [o for _ in range(200) for o in shapes.render(rng, range(12), shapes.TRAIN_BACKGROUNDS)[1]]
    sides = np.array([np.sqrt((o["box"][2] - o["box"][0] + 1) * (o["box"][3] - o["box"][1] + 1)) for o in objects])
    assert sides.min() < 14 and sides.max() > 44
    visible = np.array([o["visible"] for o in objects])
    assert visible.min() >= shapes.MIN_VISIBLE and (visible < 0.95).mean() > 0.1     # some are partly hidden


def test_crops_are_labelled_objects_and_background(data):
    lines = (data / "crops.train.txt").read_text().splitlines()
    labels = [int(line.split("\t")[1]) for line in lines]
    assert labels.count(0) == len(labels) // 2 and set(labels) - {0} <= set(range(1, len(shapes.CLASSES)))


def test_the_same_seed_writes_the_same_data(tmp_path, data):
    shapes.prepare_shapes(str(tmp_path), seed=4, train_images=6, test_images=4)
    for name in ("train.rois.txt", "test.boxes.json", "crops.train.txt"):
        assert (tmp_path / name).read_bytes() == (data / name).read_bytes()


# ---- scoring ---------------------------------------------------------------------------------------

def test_iou_counts_pixels_with_inclusive_corners():
    assert iou(np.array([[0, 0, 9, 9]]), np.array([[5, 0, 14, 9]]))[0, 0] == pytest.approx(50 / 150)
    assert iou(np.array([[0, 0, 9, 9]]), np.array([[10, 10, 12, 12]]))[0, 0] == 0


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 9, 9], [1, 0, 10, 9], [20, 20, 29, 29]], dtype=float)
    assert nms(boxes, np.array([0.5, 0.9, 0.4]), 0.3) == [1, 2]


def test_voc_ap_is_the_area_under_the_monotone_precision():
    # Ranked: hit, miss, hit with two objects: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    precision, recall = np.array([1, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])
    assert voc_ap(precision, recall) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert coco_ap(precision, recall) == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)


def test_a_second_detection_of_one_object_is_a_false_positive():
    truth = {0: np.array([[0, 0, 9, 9]], dtype=float)}
    found = [Detection(0, 1, 0.9, (0, 0, 9, 9)), Detection(0, 1, 0.8, (0, 0, 9, 9))]
    precision, recall = precision_recall(found, truth, 0.5)
    np.testing.assert_allclose(precision, [1, 0.5])
    np.testing.assert_allclose(recall, [1, 1])


def test_perfect_boxes_score_one_and_loose_boxes_score_less_at_strict_thresholds():
    classes = ["__background__", "a", "b"]
    truth = [[(1, (0, 0, 19, 19)), (2, (30, 30, 49, 49))]]
    exact = [Detection(0, 1, 0.9, (0, 0, 19, 19)), Detection(0, 2, 0.8, (30, 30, 49, 49))]
    loose = [Detection(0, 1, 0.9, (2, 2, 21, 21)), Detection(0, 2, 0.8, (32, 32, 51, 51))]   # IoU 0.68
    assert score(exact, truth, classes).map50 == 1.0 and score(exact, truth, classes).map_coco == 1.0
    result = score(loose, truth, classes)
    assert result.map50 == 1.0 and result.map_coco == pytest.approx(0.4)        # hits at IoU 0.50 … 0.65


def test_score_detections_scores_the_write_output(tmp_path, data):
    """Scores that pick, for every object, the proposal overlapping it most reach mAP@0.5 = 1."""
    truth = json.loads((data / "test.boxes.json").read_text())["images"]
    regions = detection.read_regions(str(data / "test.rois.txt"))
    lines = []
    for image, boxes in zip(truth, regions):
        logits = np.zeros((len(boxes), len(shapes.CLASSES)))
        logits[:, 0] = 5
        for o in image["objects"]:
            best = iou(boxes, np.array([o["box"]], dtype=float))[:, 0].argmax()
            logits[best, o["label"]] = 10
        lines.append(" ".join(f"{v:g}" for v in logits.ravel()))
    (tmp_path / "out.z").write_text("\n".join(lines) + "\n")
    code, stdout, err = cli("data", "score-detections", str(tmp_path / "out.z"), "--rois", str(data / "test.rois.txt"),
                            "--boxes", str(data / "test.boxes.json"), "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["mAP@0.5"] == 1.0 and 0 < result["mAP@[.5:.95]"] < 1
    assert result["objects"] == sum(len(t["objects"]) for t in truth)


def test_score_detections_names_a_line_with_the_wrong_number_of_scores(tmp_path, data):
    (tmp_path / "out.z").write_text("1 2 3\n")
    code, _, err = cli("data", "score-detections", str(tmp_path / "out.z"), "--rois", str(data / "test.rois.txt"),
                       "--boxes", str(data / "test.boxes.json"))
    assert code == 65 and "out.z:1" in err and "expected 3318" in err
