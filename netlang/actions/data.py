"""`netlang data prepare DATASET …`: turn public data sets and synthetic data into reader formats.

    netlang data prepare mnist --source DIR --out DIR [--no-png]
    netlang data prepare fashion-mnist --source DIR --out DIR [--no-png]
    netlang data prepare synthetic --out DIR [--seed N --classes K --dim D --samples N]
    netlang data prepare atis --source DIR --out DIR [--min-count N]
    netlang data prepare fsdd --source DIR --out DIR
    netlang data prepare shapes --out DIR [--seed N --train-images N --test-images N]
    netlang data score-slots PREDICTIONS REFERENCE [--labels slots.wl] [--json] [--per-type]
    netlang data score-utterances OUTPUT --scp LIST --mlf FILE --labels FILE [--silence sil] [--json]
    netlang data score-detections SCORES --rois FILE --boxes FILE [--nms 0.3] [--json]

MNIST and Fashion-MNIST share the IDX layout and the output files (CNTK's
`Train-28x28_cntk_text.txt`/`Test-28x28_cntk_text.txt`, plus PNGs and map files for the image reader).
Nothing is downloaded: `--source` is a directory holding the four IDX files (MNIST) or the two
IOB files (ATIS). `score-slots` scores slot tagging with conlleval's chunk rules
(netlang/datasets/conlleval.py): the labels the `write` action wrote against a reference CTF file
(or an ATIS IOB file). FSDD's recordings become HTK features, SCP lists and an MLF
(netlang/datasets/fsdd.py); `score-utterances` decides each utterance from the frame log-posteriors
(or utterance scores) the `write` action wrote (netlang/datasets/utterance_scoring.py). `prepare
shapes` writes the synthetic detection set of the Fast R-CNN configs (netlang/datasets/shapes.py);
`score-detections` turns the class scores of every region that the `write` action wrote into
detections (per-class NMS) and reports VOC-style mAP@0.5 and COCO-style mAP@[.5:.95]
(netlang/datasets/detection.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from netlang.actions.directories import make_directory
from netlang.actions.output import stdout_console
from netlang.datasets import atis, conlleval, detection, fsdd, utterance_scoring
from netlang.datasets.atis import prepare_atis
from netlang.datasets.fsdd import prepare_fsdd
from netlang.datasets.mnist import prepare_mnist
from netlang.datasets.shapes import prepare_shapes
from netlang.datasets.synthetic import prepare_synthetic
from netlang.errors import DataError, DataPosition, UsageError
from netlang.readers import htk

EXAMPLE = "netlang data prepare synthetic --out data/synthetic --classes 3 --dim 2"


def add_subcommands(parser) -> list:
    """`prepare DATASET` and `score-slots` under `netlang data`; returns the parsers that take options
    (the CLI adds the global flags to them)."""
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION", title="actions")
    actions.required = True
    prepare = actions.add_parser("prepare", help="write a data set in reader formats",
                                 description="Write a data set in the formats netlang's readers take.")
    datasets = prepare.add_subparsers(dest="dataset", metavar="DATASET", title="data sets")
    datasets.required = True
    for name, what in (("mnist", "MNIST handwritten digits"), ("fashion-mnist", "Fashion-MNIST clothing images")):
        sub = datasets.add_parser(name, help=f"{what} from IDX files",
                                  description=f"{what}: IDX files → CTF text, PNGs and map files.",
                                  epilog=f"example:\n  netlang data prepare {name} --source ../shared/data/{name} "
                                         f"--out data/{name}",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--source", required=True, metavar="DIR",
                         help="directory with train-images-idx3-ubyte(.gz) and the other three IDX files")
        sub.add_argument("--out", required=True, metavar="DIR", help="output directory")
        sub.add_argument("--no-png", action="store_true", help="write the CTF files only")
    synthetic = datasets.add_parser("synthetic", help="Gaussian blobs, a few thousand samples, no download",
                                    description="A seeded synthetic classification set (Gaussian blobs) as CTF.",
                                    epilog=f"example:\n  {EXAMPLE}",
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    synthetic.add_argument("--out", required=True, metavar="DIR", help="output directory")
    synthetic.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synthetic.add_argument("--classes", type=int, default=3, help="number of classes (default 3)")
    synthetic.add_argument("--dim", type=int, default=2, help="feature dimension (default 2)")
    synthetic.add_argument("--samples", type=int, default=2000, help="training samples (default 2000)")
    _add_atis_parser(datasets)
    _add_fsdd_parser(datasets)
    _add_shapes_parser(datasets)
    score = _add_score_slots_parser(actions)
    score_utterances = _add_score_utterances_parser(actions)
    score_detections = _add_score_detections_parser(actions)
    return [prepare, score, score_utterances, score_detections, *datasets.choices.values()]


def _add_atis_parser(datasets) -> None:
    atis = datasets.add_parser(
        "atis", help="ATIS air travel queries: slot tags and intents, from IOB files",
        description="ATIS: IOB files → CTF sequences (query, prevWord, nextWord, slotLabels, intent) "
                    "and the vocabularies query.wl, slots.wl, intent.wl.",
        epilog="example:\n  netlang data prepare atis --source ../shared/data/atis --out data/atis",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    atis.add_argument("--source", required=True, metavar="DIR",
                      help="directory with atis.train.w-intent.iob and atis.test.w-intent.iob")
    atis.add_argument("--out", required=True, metavar="DIR", help="output directory")
    atis.add_argument("--min-count", type=int, default=1, metavar="N",
                      help="training words seen fewer than N times become <unk> (default 1: none)")


def _add_shapes_parser(datasets) -> None:
    shapes = datasets.add_parser(
        "shapes", help="synthetic object detection: coloured shapes on clutter, boxes, region proposals",
        description="A synthetic detection set for Fast R-CNN: 64x64 images of five shape classes on cluttered "
                    "backgrounds with ground-truth boxes; region proposals and per-region labels as CTF, image map "
                    "files, and 32x32 crops for pre-training a classifier. The test set has held-out colours and "
                    "background styles.",
        epilog="example:\n  netlang data prepare shapes --out data/shapes",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    shapes.add_argument("--out", required=True, metavar="DIR", help="output directory")
    shapes.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    shapes.add_argument("--train-images", type=int, default=1500, metavar="N", help="training images (default 1500)")
    shapes.add_argument("--test-images", type=int, default=250, metavar="N", help="test images (default 250)")


def _add_score_detections_parser(actions):
    score = actions.add_parser(
        "score-detections", help="object detection mAP@0.5 (VOC) and mAP@[.5:.95] (COCO) of scored regions",
        description="Score the regions of each image as detections: SCORES is the write action's output for "
                    "the network's class scores (one line per image, the scores of every region, background "
                    "first), ROIS the CTF file of the regions the network read, BOXES the ground truth "
                    "(<set>.boxes.json of netlang data prepare shapes). Scores are turned into probabilities "
                    "with a softmax per region, each class's boxes go through non-maximum suppression, and "
                    "mAP@0.5 (VOC-style) and mAP@[.5:.95] (COCO-style) are reported.",
        epilog="example:\n  netlang data score-detections out/fast_rcnn/detections.z --rois data/shapes/test.rois.txt "
               "--boxes data/shapes/test.boxes.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("scores", metavar="SCORES", help="the write action's output: class scores per region")
    score.add_argument("--rois", required=True, metavar="FILE", help="CTF file of the regions (|rois x1 y1 x2 y2 …)")
    score.add_argument("--boxes", required=True, metavar="FILE", help="ground truth (<set>.boxes.json)")
    score.add_argument("--nms", type=float, default=0.3, metavar="IOU",
                       help="suppress boxes overlapping a better one of their class by more (default 0.3)")
    score.add_argument("--probabilities", action="store_true",
                       help="the scores are probabilities already (no softmax)")
    score.add_argument("--json", action="store_true", help="print the scores as one JSON document")
    return score


def _add_fsdd_parser(datasets) -> None:
    fsdd = datasets.add_parser(
        "fsdd", help="Free Spoken Digit Dataset: HTK log-mel features, SCP lists, an MLF of frame labels",
        description="FSDD: 8 kHz WAV recordings → HTK FBANK features (features/*.fbank), the MLF fsdd.mlf "
                    "(the digit over speech, sil over leading and trailing low-energy frames), labels.txt, and "
                    "the SCP lists train.scp (indices 5–49), test.scp (0–4), dev.scp (5–9), "
                    "train_nodev.scp (10–49).",
        epilog="example:\n  netlang data prepare fsdd --source ../shared/data/fsdd --out data/fsdd",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    fsdd.add_argument("--source", required=True, metavar="DIR",
                      help="the data set's directory (with recordings/) or the recordings folder")
    fsdd.add_argument("--out", required=True, metavar="DIR", help="output directory")


def _add_score_utterances_parser(actions):
    score = actions.add_parser(
        "score-utterances", help="utterance accuracy (and frame error rate) of an acoustic model's outputs",
        description="Decide each utterance of an isolated-word test set from the output the write action "
                    "wrote: frame log-posteriors (one line per frame, the SCP list's utterances in order) "
                    "decide by the highest average log-posterior over the utterance's speech frames (its "
                    "frames not labelled silence in the MLF); one line per utterance decides by the arg-max. "
                    "The reference is the one non-silence label of the utterance's frames.",
        epilog="example:\n  netlang data score-utterances out/fsdd_dnn/test.logPosterior --scp data/fsdd/test.scp "
               "--mlf data/fsdd/fsdd.mlf --labels data/fsdd/labels.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("output", metavar="OUTPUT", help="the write action's output file (format.type = real)")
    score.add_argument("--scp", required=True, metavar="LIST", help="the SCP list the output was written for")
    score.add_argument("--mlf", required=True, metavar="FILE", action="append",
                       help="the MLF with the utterances' frame labels (may be given more than once)")
    score.add_argument("--labels", required=True, metavar="FILE", help="the label mapping file (one label per line)")
    score.add_argument("--silence", default="sil", metavar="LABEL", help="the silence label (default sil)")
    score.add_argument("--json", action="store_true", help="print the scores as one JSON document")
    return score


def _add_score_slots_parser(actions):
    score = actions.add_parser(
        "score-slots", help="slot tagging precision, recall and F1 (conlleval rules)",
        description="Score predicted slot labels against a reference with conlleval's chunk rules. "
                    "PREDICTIONS has one label per line and word (the write action's output with "
                    "format.type = \"category\"; the last word of a line counts, blank lines may "
                    "separate sentences). REFERENCE is a CTF file with a one-hot slot stream (its "
                    "labels are read from --labels) or an ATIS .iob file.",
        epilog="example:\n  netlang data score-slots out/atis_slots_lstm/slots.z data/atis/atis.test.ctf",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("predictions", metavar="PREDICTIONS", help="predicted labels, one per line")
    score.add_argument("reference", metavar="REFERENCE", help="reference CTF file (or .iob file)")
    score.add_argument("--labels", metavar="FILE",
                       help="label list of the CTF reference (default: slots.wl next to it)")
    score.add_argument("--stream", default="slotLabels",
                       help="the reference's slot stream (default slotLabels; S2 for CNTK's SLU data)")
    score.add_argument("--per-type", action="store_true", help="also print the scores of each slot type")
    score.add_argument("--json", action="store_true", help="print the scores as one JSON document")
    return score


def run(args) -> int:
    if args.data_action == "score-slots":
        return run_score_slots(args)
    if args.data_action == "score-detections":
        return run_score_detections(args)
    if args.data_action == "score-utterances":
        return run_score_utterances(args)
    console = stdout_console(args)
    started = time.perf_counter()
    make_directory(args.out, "--out")
    if args.dataset == "atis":
        counts = prepare_atis(os.path.expanduser(args.source), args.out, min_count=args.min_count)
    elif args.dataset == "fsdd":
        counts = prepare_fsdd(os.path.expanduser(args.source), args.out)
    elif args.dataset in ("mnist", "fashion-mnist"):
        counts = prepare_mnist(os.path.expanduser(args.source), args.out, pngs=not args.no_png)
    elif args.dataset == "shapes":
        counts = prepare_shapes(args.out, seed=args.seed, train_images=args.train_images,
                                test_images=args.test_images)
    else:
        counts = prepare_synthetic(args.out, seed=args.seed, classes=args.classes, dim=args.dim,
                                   samples=args.samples)
    if getattr(args, "verbosity", 0) >= 0:
        for name, count in counts.items():
            unit = "entries" if name.endswith(".wl") else "sequences" if args.dataset == "atis" else "samples"
            unit = ("labels" if name == fsdd.LABELS_FILE else "utterances") if args.dataset == "fsdd" else unit
            unit = "images" if args.dataset == "shapes" and name in ("train.txt", "test.txt") else unit
            console.print(f"wrote {os.path.join(args.out, name)} ({count} {unit})", markup=False)
        console.print(f"{args.dataset}: done in {time.perf_counter() - started:.1f} s", markup=False)
    return 0


def run_score_slots(args) -> int:
    reference, labels = _slot_reference(args)
    predictions = conlleval.read_predictions(args.predictions)
    if labels is not None:
        conlleval.check_labels_known(predictions, labels)
    result = conlleval.score(zip(reference, conlleval.split_like(predictions, reference)))
    if args.json:
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
        return 0
    console = stdout_console(args)
    console.print(result.summary(), markup=False)
    if args.per_type:
        for line in result.type_lines():
            console.print(line, markup=False)
    return 0


def _slot_reference(args) -> tuple[list[list[str]], list[str] | None]:
    """The reference label sequences, and the label list the predictions must come from (CTF only)."""
    if args.reference.endswith(".iob"):
        return [list(u.slots) for u in atis.read_iob(args.reference)], None
    labels_path = args.labels or os.path.join(os.path.dirname(args.reference), atis.SLOT_LABELS)
    labels = atis.Vocabulary.read(labels_path)
    return atis.read_slot_references(args.reference, labels, args.stream), labels.entries


def run_score_detections(args) -> int:
    classes, truth = detection.read_ground_truth(args.boxes)
    regions = detection.read_regions(args.rois)
    if len(regions) != len(truth):
        raise DataError(f"{len(regions)} images have regions, the ground truth has {len(truth)}",
                        DataPosition(args.rois), hint="score the regions file of the same set as the boxes")
    scores = detection.read_region_scores(args.scores, regions, len(classes))
    if not args.probabilities:
        scores = [detection.softmax(s) for s in scores]
    found = [d for image, (boxes, s) in enumerate(zip(regions, scores))
             for d in detection.detections(image, boxes, s, nms_iou=args.nms)]
    result = detection.score(found, truth, classes)
    if args.json:
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
        return 0
    console = stdout_console(args)
    console.print(result.summary(), markup=False)
    console.print("AP@0.5 per class: " + ", ".join(f"{k} {v:.4f}" for k, v in result.ap50.items()), markup=False)
    return 0


def run_score_utterances(args) -> int:
    labels = htk.read_label_mapping(args.labels)
    if args.silence not in labels:
        raise UsageError(f"the silence label '{args.silence}' is not in {args.labels}",
                         hint="name it with --silence")
    silence = labels.index(args.silence)
    frame_labels = _reference_frames(args, {label: k for k, label in enumerate(labels)}, silence)
    outputs = _read_output(args.output)
    frames = sum(len(f) for f in frame_labels)
    if len(outputs) == frames and outputs.shape[1] == len(labels):
        result = utterance_scoring.score_frames(outputs, frame_labels, silence)
    elif len(outputs) == len(frame_labels) and outputs.shape[1] <= len(labels):
        words = np.array([utterance_scoring.reference_word(f, silence) for f in frame_labels])
        result = utterance_scoring.score_utterances(outputs, words)
    else:
        raise DataError(f"{len(outputs)} lines of {outputs.shape[1]} values fit neither the {frames} frames of "
                        f"{len(labels)} labels nor the {len(frame_labels)} utterances of {args.scp}",
                        DataPosition(args.output),
                        hint="write the output with the same SCP list, in file order (the write action's)")
    if args.json:
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
    else:
        stdout_console(args).print(result.summary(), markup=False)
    return 0


def _reference_frames(args, classes: dict[str, int], silence: int) -> list[np.ndarray]:
    """The frame labels of the SCP list's utterances, in its order; each must carry one word."""
    by_key = {u.key: u for path in args.mlf for u in htk.parse_mlf(path, classes)}
    frame_labels = []
    for entry in htk.parse_scp(args.scp):
        labelled = by_key.get(entry.key)
        if labelled is None:
            raise DataError(f"{entry.where}: the utterance has no labels in {', '.join(args.mlf)}",
                            DataPosition(entry.scp, entry.line))
        if utterance_scoring.reference_word(labelled.labels, silence) is None:
            raise DataError(f"{labelled.where}: an utterance to decide carries one word besides "
                            f"'{args.silence}'", DataPosition(labelled.mlf, labelled.line))
        frame_labels.append(labelled.labels)
    return frame_labels


def _read_output(path: str) -> np.ndarray:
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except OSError as err:
        raise DataError(f"cannot read the output file: {err.strerror or err}", DataPosition(path)) from None
    except ValueError as err:
        raise DataError(f"the output file is not lines of numbers ({err})", DataPosition(path),
                        hint="write it with format.type = real (the default)") from None
    if values.size == 0:
        raise DataError("the output file is empty", DataPosition(path))
    return values
