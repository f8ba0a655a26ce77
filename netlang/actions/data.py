"""`netlang data prepare DATASET …`: turn public data sets and synthetic data into reader formats.

    netlang data prepare mnist --source DIR --out DIR [--no-png]
    netlang data prepare fashion-mnist --source DIR --out DIR [--no-png]
    netlang data prepare synthetic --out DIR [--seed N --classes K --dim D --samples N]
    netlang data prepare atis --source DIR --out DIR [--min-count N]
    netlang data score-slots PREDICTIONS REFERENCE [--labels slots.wl] [--json] [--per-type]
    netlang data prepare fsdd --source DIR --out DIR
    netlang data score-utterances OUTPUT --scp LIST --mlf FILE --labels FILE [--silence sil] [--json]

MNIST and Fashion-MNIST share the IDX layout and the output files (CNTK's
`Train-28x28_cntk_text.txt`/`Test-28x28_cntk_text.txt`, plus PNGs and map files for the image reader).
Nothing is downloaded: `--source` is a directory holding the four IDX files (MNIST) or the two
IOB files (ATIS). `score-slots` scores slot tagging with conlleval's chunk rules
(netlang/datasets/conlleval.py): the labels the `write` action wrote against a reference CTF file
(or an ATIS IOB file). FSDD's recordings become HTK features, SCP lists and an MLF
(netlang/datasets/fsdd.py); `score-utterances` decides each utterance from the frame log-posteriors
(or utterance scores) the `write` action wrote (netlang/datasets/utterance_scoring.py).
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
from netlang.datasets import atis, conlleval, fsdd, utterance_scoring
from netlang.datasets.atis import prepare_atis
from netlang.datasets.fsdd import prepare_fsdd
from netlang.datasets.mnist import prepare_mnist
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
    score = _add_score_slots_parser(actions)
    score_utterances = _add_score_utterances_parser(actions)
    return [prepare, score, score_utterances, *datasets.choices.values()]


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
    else:
        counts = prepare_synthetic(args.out, seed=args.seed, classes=args.classes, dim=args.dim,
                                   samples=args.samples)
    if getattr(args, "verbosity", 0) >= 0:
        for name, count in counts.items():
            unit = "entries" if name.endswith(".wl") else "sequences" if args.dataset == "atis" else "samples"
            unit = ("labels" if name == fsdd.LABELS_FILE else "utterances") if args.dataset == "fsdd" else unit
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
