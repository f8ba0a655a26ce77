"""`netlang data prepare DATASET …`: turn public data sets and synthetic data into reader formats.

    netlang data prepare mnist --source DIR --out DIR [--no-png]
    netlang data prepare fashion-mnist --source DIR --out DIR [--no-png]
    netlang data prepare synthetic --out DIR [--seed N --classes K --dim D --samples N]

MNIST and Fashion-MNIST share the IDX layout and the output files (CNTK's
`Train-28x28_cntk_text.txt`/`Test-28x28_cntk_text.txt`, plus PNGs and map files for the image reader).
Nothing is downloaded: `--source` is a directory holding the four IDX files.
"""
from __future__ import annotations

import argparse
import os
import time

from netlang.commands import add_command_parser, stdout_console

DESCRIPTION = """Prepare data for netlang's readers: convert MNIST or Fashion-MNIST IDX files to
CNTKTextFormat (+ PNG files and map files), or write a small synthetic classification set."""

EXAMPLE = "netlang data prepare synthetic --out data/synthetic --classes 3 --dim 2"


def register(subparsers) -> None:
    parser = add_command_parser(subparsers, "data", DESCRIPTION, EXAMPLE)
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION", title="actions")
    actions.required = True
    prepare = actions.add_parser("prepare", help="write a data set in reader formats",
                                 description="Write a data set in the formats netlang's readers take.")
    datasets = prepare.add_subparsers(dest="dataset", metavar="DATASET", title="data sets")
    datasets.required = True
    for name, what in (("mnist", "MNIST handwritten digits"), ("fashion-mnist", "Fashion-MNIST clothing images")):
        sub = datasets.add_parser(name, help=f"{what} from IDX files",
                                  description=f"{what}: IDX files → CTF text, PNGs and map files.",
                                  epilog=f"example:\n  netlang data prepare {name} --source ~/data/{name} "
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
    for leaf in (prepare, *datasets.choices.values()):
        _accept_global_flags(leaf)
    parser.set_defaults(func=run)


def _accept_global_flags(parser) -> None:
    """`--debug`, `-q` … also after the nested sub-command (the CLI adds them to `data` only)."""
    try:
        from netlang.cli import GLOBAL_FLAGS
    except ImportError:
        return
    for flags, options in GLOBAL_FLAGS:
        parser.add_argument(*flags, **dict(options, default=argparse.SUPPRESS))


def run(args) -> int:
    console = stdout_console(args)
    started = time.perf_counter()
    if args.dataset in ("mnist", "fashion-mnist"):
        from netlang.datasets.mnist import prepare_mnist

        counts = prepare_mnist(os.path.expanduser(args.source), args.out, pngs=not args.no_png)
    else:
        from netlang.datasets.synthetic import prepare_synthetic

        counts = prepare_synthetic(args.out, seed=args.seed, classes=args.classes, dim=args.dim,
                                   samples=args.samples)
    if getattr(args, "verbosity", 0) >= 0:
        for name, count in counts.items():
            console.print(f"wrote {os.path.join(args.out, name)} ({count} samples)", markup=False)
        console.print(f"{args.dataset}: done in {time.perf_counter() - started:.1f} s", markup=False)
    return 0
