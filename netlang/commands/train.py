"""`netlang train cfg.net [key=value ...]`: run the train blocks of the config."""
from __future__ import annotations

from netlang.actions.train import run_train
from netlang.commands import add_command_parser, add_config_arguments
from netlang.commands.actions import blocks_for, load, progress_for

DESCRIPTION = """Train the network of each block with action = "train" (in command order). Models are
written as <modelPath>.<epoch> with a checkpoint after every epoch and <modelPath> at the end; with
makeMode = true (the default) a restarted run resumes from the newest checkpoint. Ctrl-C or SIGTERM
stops at the next minibatch, writes a checkpoint and exits 130."""


def register(subparsers) -> None:
    parser = add_command_parser(subparsers, "train", DESCRIPTION, "netlang train cfg.net SGD.maxEpochs=5")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    config = load(args)
    progress = progress_for(args)
    try:
        for name, view in blocks_for(config, "train"):
            run_train(config, name, view, progress)
    finally:
        progress.close()
    return 0
