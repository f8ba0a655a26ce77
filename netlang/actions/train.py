"""The `train` action: network + SGD block + reader → epochs of training, checkpoints, resume."""
from __future__ import annotations

import os

import yaml

from netlang.actions import common
from netlang.compiler import netbuild
from netlang.runtime.learners import SGDSettings
from netlang.runtime.progress import Progress
from netlang.runtime.trainer import Trainer, TrainSettings


def sgd_values(sgd_view) -> dict:
    """The SGD block's typed values by CNTK key (what SGDSettings.from_cntk reads)."""
    return {f.name: value for f, value, _ in sgd_view.items() if value is not None}


def train_settings(config, name: str, view) -> TrainSettings:
    sgd = view.SGD
    model_path = view.modelPath
    if not model_path:
        raise view.block_error("the train action needs modelPath", hint="set modelPath = \"out/model.dnn\"")
    out_dir = os.path.dirname(os.path.abspath(model_path))
    evaluation = [sgd.evalCriterionNodeName] if sgd.evalCriterionNodeName else None
    dropout = sgd.dropoutRate
    return TrainSettings(
        model_path=model_path,
        max_epochs=int(sgd.maxEpochs),
        minibatch_size=lambda epoch: int(sgd.minibatchSize.value(epoch)),
        epoch_size=int(sgd.epochSize or 0),
        num_mbs_to_show_result=int(sgd.numMBsToShowResult or 0),
        first_mbs_to_show_result=int(sgd.firstMBsToShowResult or 0),
        keep_checkpoint_files=bool(sgd.keepCheckPointFiles),
        make_mode=bool(view.makeMode),
        dropout_rate=(lambda epoch: float(dropout.value(epoch))) if dropout is not None else None,
        seed=common.top_seed(config),
        metrics_log=os.path.join(out_dir, "metrics.jsonl"),
        criterion=sgd.trainCriterionNodeName,
        evaluation=evaluation,
        meta={"config": config.path, "action": name},
    )


def save_resolved_config(config, model_path: str) -> None:
    from netlang.config import resolved_config_dict
    from netlang.runtime.modelio import atomic_write

    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.resolved.yaml")
    text = yaml.safe_dump(resolved_config_dict(config), sort_keys=False).encode("utf-8")
    atomic_write(path, lambda fh: fh.write(text))


def run_train(config, name: str, view, progress: Progress | None = None, comm=None) -> list:
    progress = progress or Progress()
    ref = view.network_expr()
    if ref is None:
        raise view.block_error("the train action needs a network", hint="add network = { … } (or BrainScriptNetworkBuilder)")
    network = netbuild.build_action_network(ref)
    netbuild.require_training_nodes(network, ref.span)
    backend = common.backend_for(view)
    settings = train_settings(config, name, view)
    sgd = SGDSettings.from_cntk(sgd_values(view.SGD), view.SGD.span)
    if os.path.exists(settings.model_path) and settings.make_mode:
        progress.message(f"{name}: the final model {settings.model_path} exists; nothing to do "
                         f"(makeMode = true; delete it or set makeMode = false to train again)")
        return []
    source = common.create_reader(view.reader, network, epoch_size=settings.epoch_size, dtype=backend.dtype)
    cv_source = None
    try:
        if view.cvReader is not None:
            cv_source = common.create_reader(view.cvReader, network, randomize=False, dtype=backend.dtype)
        trainer = Trainer(network, backend, sgd, settings, source, cv_source, progress, comm)
        resume = trainer.find_resume_point() if settings.make_mode else None
        if resume:
            start = trainer.restore(resume)
            trainer.start_epoch = start
            progress.message(f"{name}: resuming from epoch {start} ({os.path.basename(resume)})")
        else:
            if not settings.make_mode and trainer.find_resume_point():
                progress.message(f"{name}: makeMode = false: starting fresh, ignoring existing checkpoints")
            trainer.initialize()
            trainer.precompute()
        save_resolved_config(config, settings.model_path)
        progress.message(f"{name}: {network.parameter_count():,} learnable parameters; "
                         f"training {settings.max_epochs} epochs on {backend.device} ({backend.dtype.__name__})")
        return trainer.train()
    finally:
        for s in (source, cv_source):
            close = getattr(s, "close", None)
            if close:
                close()
