"""Scoring object detections: per-class non-maximum suppression, VOC and COCO average precision.

Boxes are `x1 y1 x2 y2` in pixels with inclusive corners (the ROI convention of netlang/ops/roi.py),
so a box's width is `x2 − x1 + 1`, as in the PASCAL VOC development kit.

* **Detections from scored regions.** Each region (ROI) of an image has one score per class, class 0
  being the background; `detections` turns the scores of every foreground class into candidate
  boxes (score ≥ `min_score`), suppresses, per class, every box that overlaps a better one by more
  than `nms_iou` (greedy NMS, Fast R-CNN's 0.3), and keeps the `per_image` best of the image.
* **VOC-style AP at one IoU threshold.** Detections of a class, over all images, best first, are
  matched to that class's ground-truth boxes: a detection is a true positive when its best-overlapping
  box of the same image has IoU ≥ the threshold and no better detection took it. AP is the area under
  the precision/recall curve with precision made monotone (every recall point, VOC 2010 onwards);
  mAP is its mean over the classes that have ground truth.
* **COCO-style mAP@[.5:.95]**: the mean of mAP at IoU 0.50, 0.55, …, 0.95, each AP the mean of the
  monotone precision at the 101 recall points 0, 0.01, …, 1 (COCO's interpolation).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from netlang.errors import DataError, DataPosition

COCO_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


@dataclass(frozen=True)
class Detection:
    image: int
    label: int                 # 1..K (0 is the background)
    score: float
    box: tuple                 # x1 y1 x2 y2


def box_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0] + 1).clip(0) * (boxes[..., 3] - boxes[..., 1] + 1).clip(0)


def iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over union of every box (n, 4) with every other (m, 4): (n, m)."""
    boxes, others = np.asarray(boxes, dtype=np.float64), np.asarray(others, dtype=np.float64)
    low = np.maximum(boxes[:, None, :2], others[None, :, :2])
    high = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    inter = (high - low + 1).clip(0).prod(axis=-1)
    union = box_area(boxes)[:, None] + box_area(others)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Indices of the boxes greedy non-maximum suppression keeps, best first."""
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        best = order.pop(0)
        keep.append(int(best))
        if order:
            overlaps = iou(boxes[best:best + 1], boxes[order])[0]
            order = [i for i, o in zip(order, overlaps) if o <= threshold]
    return keep


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def detections(image: int, boxes: np.ndarray, scores: np.ndarray, *, min_score: float = 0.01,
               nms_iou: float = 0.3, per_image: int = 100) -> list[Detection]:
    """The detections of one image from its regions (R, 4) and their class scores (R, K + 1)."""
    real = box_area(boxes) > 1                   # all-zero padding rows are no regions
    boxes, scores = boxes[real], scores[real]
    found = []
    for label in range(1, scores.shape[1]):
        candidates = np.flatnonzero(scores[:, label] >= min_score)
        for i in (candidates[k] for k in nms(boxes[candidates], scores[candidates, label], nms_iou)):
            found.append(Detection(image, label, float(scores[i, label]), tuple(float(v) for v in boxes[i])))
    found.sort(key=lambda d: -d.score)
    return found[:per_image]


def precision_recall(found: list[Detection], truth: dict[int, np.ndarray], threshold: float):
    """(precision, recall) after each of `found` (one class, all images), best first; `truth` maps
    image → that class's ground-truth boxes (n, 4)."""
    total = sum(len(b) for b in truth.values())
    taken = {image: np.zeros(len(b), dtype=bool) for image, b in truth.items()}
    hits = np.zeros(len(found))
    for rank, d in enumerate(sorted(found, key=lambda d: -d.score)):
        boxes = truth.get(d.image)
        if boxes is None or not len(boxes):
            continue
        overlaps = iou(np.array([d.box]), boxes)[0]
        best = int(overlaps.argmax())
        if overlaps[best] >= threshold and not taken[d.image][best]:
            taken[d.image][best] = True
            hits[rank] = 1
    true_pos = np.cumsum(hits)
    precision = true_pos / np.arange(1, len(found) + 1)
    recall = true_pos / max(total, 1)
    return precision, recall


def _monotone(precision: np.ndarray) -> np.ndarray:
    return np.maximum.accumulate(precision[::-1])[::-1]


def voc_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision/recall curve, precision made monotone, at every recall step."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = _monotone(np.concatenate([[0.0], precision, [0.0]]))
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(((r[steps + 1] - r[steps]) * p[steps + 1]).sum())


def coco_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """Mean of the monotone precision at the recall points 0, 0.01, …, 1 (0 where not reached)."""
    if not len(precision):
        return 0.0
    p = _monotone(precision)
    points = np.linspace(0, 1, 101)
    at = np.searchsorted(recall, points, side="left")
    return float(np.where(at < len(p), p[np.minimum(at, len(p) - 1)], 0.0).mean())


@dataclass
class DetectionScores:
    classes: list[str]
    ap50: dict[str, float]                     # VOC-style AP at IoU 0.5, per class
    map50: float
    map_coco: float                            # COCO-style mAP@[.5:.95]
    images: int
    objects: int
    detections: int

    def as_dict(self) -> dict:
        return {"mAP@0.5": self.map50, "mAP@[.5:.95]": self.map_coco, "AP@0.5": self.ap50,
                "images": self.images, "objects": self.objects, "detections": self.detections}

    def summary(self) -> str:
        return (f"mAP@0.5 {self.map50:.4f} (VOC-style), mAP@[.5:.95] {self.map_coco:.4f} (COCO-style) over "
                f"{self.images} images, {self.objects} objects, {self.detections} detections")


def score(found: list[Detection], truth: list[list[tuple[int, tuple]]], classes: list[str]) -> DetectionScores:
    """Score detections against the ground truth: `truth[i]` lists (label, box) of image i;
    `classes[k]` names label k (classes[0] is the background)."""
    by_class: dict[int, dict[int, np.ndarray]] = {}
    for image, objects in enumerate(truth):
        for label, box in objects:
            by_class.setdefault(label, {}).setdefault(image, []).append(box)
    by_class = {k: {i: np.array(b, dtype=np.float64) for i, b in v.items()} for k, v in by_class.items()}
    found_by_class: dict[int, list[Detection]] = {}
    for d in found:
        found_by_class.setdefault(d.label, []).append(d)
    labels = sorted(by_class)
    ap50, coco = {}, {t: [] for t in COCO_THRESHOLDS}
    for label in labels:
        candidates = found_by_class.get(label, [])
        for threshold in COCO_THRESHOLDS:
            precision, recall = precision_recall(candidates, by_class[label], threshold)
            if threshold == 0.5:
                ap50[classes[label]] = voc_ap(precision, recall)
            coco[threshold].append(coco_ap(precision, recall))
    map50 = float(np.mean(list(ap50.values()))) if ap50 else 0.0
    map_coco = float(np.mean([np.mean(values) for values in coco.values()])) if labels else 0.0
    return DetectionScores(list(classes), ap50, map50, map_coco, len(truth), sum(len(t) for t in truth), len(found))


# ---- files -----------------------------------------------------------------------------------------

def read_ground_truth(path: str) -> tuple[list[str], list[list[tuple[int, tuple]]]]:
    """(class names, background first; per image its objects as (label, box)) from `<set>.boxes.json`."""
    try:
        with open(path, encoding="utf-8") as fh:
            document = json.load(fh)
        classes = list(document["classes"])
        truth = [[(classes.index(o["class"]), tuple(o["box"])) for o in image["objects"]]
                 for image in document["images"]]
    except OSError as err:
        raise DataError(f"cannot read the ground truth: {err.strerror or err}", DataPosition(path)) from None
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"not a ground-truth file of netlang data prepare shapes ({err})", DataPosition(path),
                        hint="give the <set>.boxes.json file the data set was written with") from None
    return classes, truth


def _lines(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            yield from enumerate(fh, start=1)
    except OSError as err:
        raise DataError(f"cannot read the file: {err.strerror or err}", DataPosition(path)) from None


def read_stream_rows(path: str, stream: str) -> list[np.ndarray]:
    """The values of stream `stream` on every line of a CTF file without sequence ids (one per image)."""
    return [values for _, values in _stream_rows(path, stream)]


def _stream_rows(path: str, stream: str):
    """(line number, values of `stream`) of every non-blank line."""
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        fields = {f.split(None, 1)[0]: f.split(None, 1)[1:] for f in line.split("|")[1:] if f.strip()}
        if stream not in fields:
            raise DataError(f"the line has no '|{stream}' stream", DataPosition(path, line_no),
                            hint="give the regions file the network read (e.g. test.rois.txt)")
        try:
            yield line_no, np.array((fields[stream] or [""])[0].split(), dtype=np.float64)
        except ValueError:
            raise DataError(f"the values of '|{stream}' are not numbers", DataPosition(path, line_no)) from None


def read_regions(path: str, stream: str = "rois") -> list[np.ndarray]:
    """The regions (R, 4) of every image (one CTF line each) of stream `stream`."""
    regions = []
    for line_no, values in _stream_rows(path, stream):
        if len(values) % 4:
            raise DataError(f"{len(values)} values are not regions of four numbers", DataPosition(path, line_no))
        regions.append(values.reshape(-1, 4))
    return regions


def read_region_scores(path: str, regions: list[np.ndarray], num_classes: int) -> list[np.ndarray]:
    """Per image the (R, K + 1) class scores of its regions, from the write action's output (one line
    per image: region after region, each its K + 1 scores)."""
    scores = []
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        index = len(scores)
        if index >= len(regions):
            raise DataError(f"more lines than the {len(regions)} images of the regions file",
                            DataPosition(path, line_no))
        try:
            values = np.array(line.split(), dtype=np.float64)
        except ValueError:
            raise DataError("the scores are not numbers", DataPosition(path, line_no)) from None
        expected = len(regions[index]) * num_classes
        if len(values) != expected:
            raise DataError(f"{len(values)} scores, expected {expected} ({len(regions[index])} regions × "
                            f"{num_classes} classes)", DataPosition(path, line_no),
                            hint="write the network's per-region class scores (e.g. outputNodeNames = z)")
        scores.append(values.reshape(len(regions[index]), num_classes))
    if len(scores) != len(regions):
        raise DataError(f"{len(scores)} lines of scores for {len(regions)} images", DataPosition(path),
                        hint="write the scores of every image of the set, in file order")
    return scores
