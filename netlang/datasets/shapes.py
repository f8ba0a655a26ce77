"""`netlang data prepare shapes`: a synthetic object-detection set for Fast R-CNN (CNTK's toy grocery set,
made here so that nothing is downloaded).

**Images.** 64 × 64 RGB images, each with one to four objects of five classes (circle, square,
triangle, cross, diamond) over a cluttered background. Objects are flat-coloured with a little shading
and noise, 12 to 48 pixels tall (a 4× range, log-uniform), with aspect ratios 0.8–1.25; they may
overlap (box IoU up to 0.35) and hide each other, as long as every object keeps at least 60 % of its
area visible. A ground-truth box is the object's full extent, `x1 y1 x2 y2`, corners inclusive.

**An honest test set.** The test images differ from the training images in what a detector could
over-fit to: object colours come from hue bands no training object has (three bands of 30° out of
twelve), and backgrounds are drawn in styles the training set never shows (training: gradients,
stripes, line clutter, blotches; test: checkerboards and scribbles). Sizes, overlaps and occlusion
follow the same rules in both.

**Region proposals** do not look at the ground truth on the test set: they are a multi-scale sliding
grid of square boxes (sides 10 to 50 pixels, steps of 2^(1/3), stride 0.4 of the side), the same
for every image: 553 boxes, of which one overlaps every object with IoU ≥ 0.5 (`shapes.json` gives
the recall at 0.5 and 0.7). Training images sample `NUM_TRAIN_ROIS` regions from the grid plus
jittered ground-truth boxes: up to a quarter foreground (IoU ≥ 0.6 with an object, labelled with its
class) and the rest background (IoU < 0.4, half of them from 0.1–0.4 when there are such); regions
in between are not used, so the detector learns to rank an object's well-placed boxes above its
nearly-placed ones. The test set's region labels use VOC's single threshold, 0.5.

**Files** (in `--out`), in the formats the Fast R-CNN configs read:

* `train.txt`, `test.txt`: image map files (`images/<set>/<i>.png<TAB>0`; the label column is unused);
* `train.rois.txt`, `test.rois.txt`: CTF, one line per image, `|rois x1 y1 x2 y2 …` for its regions;
* `train.roilabels.txt`, `test.roilabels.txt`: CTF, `|roiLabels …`: per region, one-hot over the
  background and the five classes;
* `train.boxes.json`, `test.boxes.json`: the ground truth, per image its objects (class, box, visible
  fraction), read by `netlang data score-detections`;
* `crops.train.txt`, `crops.test.txt` and `crops/`: a classification set for pre-training, 32 × 32
  crops of objects (with varying context, so objects appear at 13–29 pixels) and of background;
* `classes.txt` (the background first) and `shapes.json` (the settings and counts).

Everything is drawn from generators seeded by `--seed`: the same arguments write the same files.
"""
from __future__ import annotations

import colorsys
import json
import math
import os

import numpy as np
from PIL import Image, ImageDraw

from netlang.datasets.detection import iou
from netlang.errors import UsageError

CLASSES = ("__background__", "circle", "square", "triangle", "cross", "diamond")
IMAGE_SIZE = 64
CROP_SIZE = 32
SIZE_RANGE = (12.0, 48.0)
ASPECT_RANGE = (0.8, 1.25)
MAX_OBJECTS = 4
MAX_PAIR_IOU = 0.35
MIN_VISIBLE = 0.6
HUE_BANDS = 12
TEST_HUE_BANDS = (1, 5, 9)                      # 30–60°, 150–180°, 270–300°: never a training colour
TRAIN_BACKGROUNDS = ("gradient", "stripes", "lines", "blotches")
TEST_BACKGROUNDS = ("checker", "scribbles")
NUM_TRAIN_ROIS = 64
FOREGROUND_FRACTION = 0.25
# Training regions: foreground from this IoU, background below the other (see the module docstring).
FOREGROUND_IOU = 0.6
BACKGROUND_IOU = 0.4
PROPOSAL_SIDES = tuple(round(10 * 2 ** (k / 3), 1) for k in range(8))     # 10 … 50.4 pixels
PROPOSAL_STRIDE = 0.4                                                      # of the side
SUPERSAMPLE = 4


# ---- drawing -------------------------------------------------------------------------------------

def _colour(rng, hue_bands, saturation, value) -> np.ndarray:
    band = rng.choice(hue_bands)
    hue = (band + rng.uniform()) / HUE_BANDS
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value))) * 255


def _dull(rng) -> np.ndarray:
    """A background colour: any hue, little saturation."""
    return _colour(rng, range(HUE_BANDS), (0.0, 0.35), (0.15, 0.9))


def _coordinates():
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / IMAGE_SIZE
    return x, y


def _mix(a, b, t) -> np.ndarray:
    return a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]


def _gradient(rng):
    x, y = _coordinates()
    angle = rng.uniform(0, 2 * math.pi)
    t = (x * math.cos(angle) + y * math.sin(angle))
    return _mix(_dull(rng), _dull(rng), (t - t.min()) / max(t.max() - t.min(), 1e-9))


def _stripes(rng):
    x, y = _coordinates()
    angle, period = rng.uniform(0, math.pi), rng.uniform(4, 12) / IMAGE_SIZE
    t = 0.5 + 0.5 * np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period)
    return _mix(_dull(rng), _dull(rng), t)


def _strokes(rng, base, count, width, curved: bool):
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(count):
        colour = tuple(int(c) for c in _dull(rng))
        if curved:
            steps = rng.normal(0, 6, (12, 2)).cumsum(axis=0) + rng.uniform(0, IMAGE_SIZE, 2)
            draw.line([tuple(p) for p in steps], fill=colour, width=int(rng.integers(*width)))
        else:
            ends = rng.uniform(-8, IMAGE_SIZE + 8, 4)
            draw.line(tuple(ends), fill=colour, width=int(rng.integers(*width)))
    return np.asarray(image, dtype=np.float64)


def _lines(rng):
    return _strokes(rng, np.broadcast_to(_dull(rng), (IMAGE_SIZE, IMAGE_SIZE, 3)), int(rng.integers(8, 20)),
                    (1, 3), curved=False)


def _blotches(rng):
    coarse = rng.uniform(0, 1, (6, 6))
    t = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((IMAGE_SIZE, IMAGE_SIZE),
                                                                           Image.BICUBIC)) / 255
    return _mix(_dull(rng), _dull(rng), t)


def _checker(rng):
    x, y = _coordinates()
    cell = rng.uniform(4, 12) / IMAGE_SIZE
    t = ((np.floor(x / cell + rng.uniform()) + np.floor(y / cell + rng.uniform())) % 2).astype(float)
    return _mix(_dull(rng), _dull(rng), t)


def _scribbles(rng):
    return _strokes(rng, _gradient(rng), int(rng.integers(4, 9)), (1, 4), curved=True)


BACKGROUNDS = {"gradient": _gradient, "stripes": _stripes, "lines": _lines, "blotches": _blotches,
               "checker": _checker, "scribbles": _scribbles}


def _outline(label: int, box) -> list:
    """The shape of class `label` filling `box` (x0, y0, x1, y1, supersampled pixels): a polygon, or
    None for the ellipse."""
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    name = CLASSES[label]
    if name == "circle":
        return None
    if name == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if name == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if name == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    bar_w, bar_h = w / 6, h / 6                           # the cross: two bars a third as thick as the box
    return [(cx - bar_w, y0), (cx + bar_w, y0), (cx + bar_w, cy - bar_h), (x1, cy - bar_h), (x1, cy + bar_h),
            (cx + bar_w, cy + bar_h), (cx + bar_w, y1), (cx - bar_w, y1), (cx - bar_w, cy + bar_h),
            (x0, cy + bar_h), (x0, cy - bar_h), (cx - bar_w, cy - bar_h)]


def shape_mask(label: int, box) -> np.ndarray:
    """Coverage (0..1) of each image pixel by the object `label` drawn in `box` (x1 y1 x2 y2, inclusive)."""
    size = IMAGE_SIZE * SUPERSAMPLE
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    x1, y1, x2, y2 = box
    scaled = (x1 * SUPERSAMPLE, y1 * SUPERSAMPLE, (x2 + 1) * SUPERSAMPLE - 1, (y2 + 1) * SUPERSAMPLE - 1)
    outline = _outline(label, scaled)
    if outline is None:
        draw.ellipse(scaled, fill=255)
    else:
        draw.polygon(outline, fill=255)
    return np.asarray(canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX), dtype=np.float64) / 255


# ---- one image -----------------------------------------------------------------------------------

def _random_box(rng) -> tuple:
    side = math.exp(rng.uniform(*np.log(SIZE_RANGE)))
    aspect = rng.uniform(*ASPECT_RANGE)
    w = round(min(side * math.sqrt(aspect), IMAGE_SIZE - 2))
    h = round(min(side / math.sqrt(aspect), IMAGE_SIZE - 2))
    x1, y1 = int(rng.integers(0, IMAGE_SIZE - w + 1)), int(rng.integers(0, IMAGE_SIZE - h + 1))
    return (x1, y1, x1 + w - 1, y1 + h - 1)


def _layout(rng) -> list[tuple[int, tuple]]:
    """(label, box) of the objects of one image, in drawing order."""
    wanted = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.3, 0.3, 0.2]))
    objects = []
    for _ in range(wanted * 20):
        if len(objects) == wanted:
            break
        box = _random_box(rng)
        if objects and iou(np.array([box]), np.array([b for _, b in objects])).max() > MAX_PAIR_IOU:
            continue
        objects.append((int(rng.integers(1, len(CLASSES))), box))
    return objects


def render(rng, hue_bands, backgrounds) -> tuple[np.ndarray, list[dict]]:
    """One image (H, W, 3 uint8) and its objects [{class, label, box, visible}], every object at least
    MIN_VISIBLE visible."""
    while True:
        objects = _layout(rng)
        masks = [shape_mask(label, box) for label, box in objects]
        covered_later = np.zeros((len(masks), IMAGE_SIZE, IMAGE_SIZE))
        for i in range(len(masks) - 2, -1, -1):
            covered_later[i] = 1 - (1 - covered_later[i + 1]) * (1 - masks[i + 1])
        visible = [float((m * (1 - c)).sum() / m.sum()) for m, c in zip(masks, covered_later)]
        if min(visible) >= MIN_VISIBLE:
            break
    image = BACKGROUNDS[backgrounds[int(rng.integers(len(backgrounds)))]](rng).astype(np.float64)
    x, y = _coordinates()
    for (label, box), mask in zip(objects, masks):
        colour = _colour(rng, hue_bands, (0.55, 1.0), (0.65, 1.0))
        angle = rng.uniform(0, 2 * math.pi)
        shade = 1 + 0.15 * (x * math.cos(angle) + y * math.sin(angle) - 0.5)
        paint = colour[None, None, :] * shade[..., None] + rng.normal(0, 6, (IMAGE_SIZE, IMAGE_SIZE, 3))
        image = image * (1 - mask[..., None]) + paint * mask[..., None]
    image += rng.normal(0, 4, image.shape)
    found = [{"class": CLASSES[label], "label": label, "box": list(box), "visible": round(v, 3)}
             for (label, box), v in zip(objects, visible)]
    return np.clip(image, 0, 255).astype(np.uint8), found


# ---- regions -------------------------------------------------------------------------------------

def grid_proposals() -> np.ndarray:
    """The multi-scale sliding grid (P, 4): square boxes of every side in PROPOSAL_SIDES, at most
    PROPOSAL_STRIDE of the side apart, covering the image from edge to edge."""
    boxes = []
    for side in PROPOSAL_SIDES:
        w = round(side)
        count = math.ceil((IMAGE_SIZE - w) / max(side * PROPOSAL_STRIDE, 1)) + 1
        for y in np.linspace(0, IMAGE_SIZE - w, count).round():
            for x in np.linspace(0, IMAGE_SIZE - w, count).round():
                boxes.append((x, y, x + w - 1, y + w - 1))
    return np.array(boxes, dtype=np.float64)


def _jittered(rng, box, count: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    w, h = x2 - x1 + 1, y2 - y1 + 1
    out = []
    for _ in range(count):
        scale = math.exp(rng.uniform(-0.25, 0.25))
        nw, nh = w * scale * math.exp(rng.uniform(-0.1, 0.1)), h * scale * math.exp(rng.uniform(-0.1, 0.1))
        cx, cy = (x1 + x2) / 2 + rng.uniform(-0.2, 0.2) * w, (y1 + y2) / 2 + rng.uniform(-0.2, 0.2) * h
        out.append(np.clip([cx - nw / 2, cy - nh / 2, cx + nw / 2 - 1, cy + nh / 2 - 1], 0, IMAGE_SIZE - 1))
    return np.round(np.array(out))


def region_labels(regions: np.ndarray, objects: list[dict], threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(label per region: the class of the object it overlaps with IoU ≥ `threshold`, else 0; its best IoU)."""
    if not objects:
        return np.zeros(len(regions), dtype=np.int64), np.zeros(len(regions))
    overlaps = iou(regions, np.array([o["box"] for o in objects], dtype=np.float64))
    best = overlaps.max(axis=1)
    labels = np.array([o["label"] for o in objects])[overlaps.argmax(axis=1)]
    return np.where(best >= threshold, labels, 0), best


def training_regions(rng, objects: list[dict], grid: np.ndarray, count: int = NUM_TRAIN_ROIS) -> np.ndarray:
    """`count` regions for a training image: up to a quarter foreground, the rest background."""
    candidates = np.concatenate([grid] + [_jittered(rng, o["box"], 24) for o in objects])
    labels, best = region_labels(candidates, objects, FOREGROUND_IOU)
    foreground = np.flatnonzero(labels > 0)
    hard = np.flatnonzero((best >= 0.1) & (best < BACKGROUND_IOU))
    easy = np.flatnonzero(best < 0.1)
    take_fg = min(len(foreground), int(count * FOREGROUND_FRACTION))
    take_hard = min(len(hard), (count - take_fg) // 2)
    chosen = [rng.choice(foreground, take_fg, replace=False), rng.choice(hard, take_hard, replace=False),
              rng.choice(easy, count - take_fg - take_hard, replace=len(easy) < count - take_fg - take_hard)]
    return candidates[np.concatenate(chosen).astype(np.int64)]


# ---- crops ---------------------------------------------------------------------------------------

def crop(image: np.ndarray, box) -> np.ndarray:
    """The square around `box` resized to CROP_SIZE, the image's edge pixels repeated beyond it."""
    pad = IMAGE_SIZE
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    x1, y1, x2, y2 = (int(round(v)) + pad for v in box)
    region = Image.fromarray(padded[y1:y2 + 1, x1:x2 + 1])
    return np.asarray(region.resize((CROP_SIZE, CROP_SIZE), Image.BILINEAR))


def _square_around(rng, box, context) -> tuple:
    x1, y1, x2, y2 = box
    side = max(x2 - x1 + 1, y2 - y1 + 1) * rng.uniform(*context)
    cx = (x1 + x2) / 2 + rng.uniform(-0.08, 0.08) * side
    cy = (y1 + y2) / 2 + rng.uniform(-0.08, 0.08) * side
    return (cx - side / 2, cy - side / 2, cx + side / 2 - 1, cy + side / 2 - 1)


def crops_of(rng, image: np.ndarray, objects: list[dict], per_object: int = 2) -> list[tuple[np.ndarray, int]]:
    """Object crops (object 13–29 pixels of 32) and as many background crops (IoU < 0.3 with every object)."""
    out = []
    boxes = np.array([o["box"] for o in objects], dtype=np.float64)
    for o in objects:
        for _ in range(per_object):
            out.append((crop(image, _square_around(rng, o["box"], (1.1, 2.4))), o["label"]))
    while len(out) < 2 * per_object * len(objects):
        side = rng.uniform(12, 56)
        x, y = rng.uniform(-side / 4, IMAGE_SIZE - 3 * side / 4, 2)
        box = (x, y, x + side - 1, y + side - 1)
        if iou(np.array([box]), boxes).max() < 0.3:
            out.append((crop(image, box), 0))
    return out


# ---- files ---------------------------------------------------------------------------------------

def _ctf_line(name: str, values: np.ndarray, integers: bool) -> str:
    text = " ".join(str(int(v)) for v in values.ravel()) if integers else " ".join(f"{v:g}" for v in values.ravel())
    return f"|{name} {text}\n"


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(len(CLASSES), dtype=np.int64)[labels]


def _write_text(path: str, lines) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii", newline="\n") as fh:
        fh.writelines(lines)
    os.replace(tmp, path)


def proposal_recall(objects_per_image: list[list[dict]], grid: np.ndarray, threshold: float) -> float:
    """The fraction of objects some grid box overlaps with IoU ≥ `threshold`."""
    boxes = [o["box"] for objects in objects_per_image for o in objects]
    return float((iou(np.array(boxes, dtype=np.float64), grid).max(axis=1) >= threshold).mean()) if boxes else 0.0


def _write_set(out_dir: str, name: str, seed: list, count: int, hue_bands, backgrounds, grid, train: bool) -> dict:
    # One generator each for the images, their regions and their crops: how the regions are sampled
    # does not change the images.
    draw, sample, cut = (np.random.default_rng(seed + [part]) for part in range(3))
    folder = os.path.join(out_dir, "images", name)
    crop_folder = os.path.join(out_dir, "crops", name)
    os.makedirs(folder, exist_ok=True)
    os.makedirs(crop_folder, exist_ok=True)
    maps, rois, roi_labels, crop_lines, truth = [], [], [], [], []
    for i in range(count):
        image, objects = render(draw, hue_bands, backgrounds)
        Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.png"))
        maps.append(f"images/{name}/{i:05d}.png\t0\n")
        regions = training_regions(sample, objects, grid) if train else grid
        rois.append(_ctf_line("rois", regions, integers=True))
        threshold = FOREGROUND_IOU if train else 0.5
        roi_labels.append(_ctf_line("roiLabels", _one_hot(region_labels(regions, objects, threshold)[0]), integers=True))
        for j, (pixels, label) in enumerate(crops_of(cut, image, objects)):
            Image.fromarray(pixels).save(os.path.join(crop_folder, f"{i:05d}_{j}.png"))
            crop_lines.append(f"crops/{name}/{i:05d}_{j}.png\t{label}\n")
        truth.append({"image": f"images/{name}/{i:05d}.png", "objects": objects})
    _write_text(os.path.join(out_dir, f"{name}.txt"), maps)
    _write_text(os.path.join(out_dir, f"{name}.rois.txt"), rois)
    _write_text(os.path.join(out_dir, f"{name}.roilabels.txt"), roi_labels)
    _write_text(os.path.join(out_dir, f"crops.{name}.txt"), crop_lines)
    _write_text(os.path.join(out_dir, f"{name}.boxes.json"),
                [json.dumps({"classes": list(CLASSES), "images": truth}, indent=1)])
    objects = [o for t in truth for o in t["objects"]]
    return {"images": count, "objects": len(objects), "crops": len(crop_lines),
            "regions per image": len(regions),
            "partly hidden objects": sum(o["visible"] < 0.99 for o in objects),
            "object sizes": [min(max(o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]) + 1 for o in objects),
                             max(max(o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]) + 1 for o in objects)],
            "proposal recall at IoU 0.5": round(proposal_recall([t["objects"] for t in truth], grid, 0.5), 4),
            "proposal recall at IoU 0.7": round(proposal_recall([t["objects"] for t in truth], grid, 0.7), 4)}


def prepare_shapes(out_dir: str, *, seed: int = 0, train_images: int = 1500, test_images: int = 250) -> dict:
    """Write the data set (see the module docstring) and shapes.json (its settings and counts); returns
    {map file: images or crops}."""
    if train_images < 1 or test_images < 1:
        raise UsageError("--train-images and --test-images must be at least 1")
    if seed < 0:
        raise UsageError(f"--seed must be ≥ 0, not {seed}")
    os.makedirs(out_dir, exist_ok=True)
    grid = grid_proposals()
    train_bands = [b for b in range(HUE_BANDS) if b not in TEST_HUE_BANDS]
    sets = {"train": _write_set(out_dir, "train", [seed, 1], train_images, train_bands, TRAIN_BACKGROUNDS, grid,
                                train=True),
            "test": _write_set(out_dir, "test", [seed, 2], test_images, TEST_HUE_BANDS, TEST_BACKGROUNDS, grid,
                               train=False)}
    _write_text(os.path.join(out_dir, "classes.txt"), [c + "\n" for c in CLASSES])
    info = {"seed": seed, "classes": list(CLASSES), "image size": IMAGE_SIZE, "crop size": CROP_SIZE,
            "object sizes": list(SIZE_RANGE), "train hue bands (of 12)": train_bands,
            "test hue bands (of 12)": list(TEST_HUE_BANDS), "train backgrounds": list(TRAIN_BACKGROUNDS),
            "test backgrounds": list(TEST_BACKGROUNDS), "grid proposals": len(grid), "sets": sets}
    _write_text(os.path.join(out_dir, "shapes.json"), [json.dumps(info, indent=1) + "\n"])
    return {"train.txt": train_images, "test.txt": test_images, "crops.train.txt": sets["train"]["crops"],
            "crops.test.txt": sets["test"]["crops"]}
