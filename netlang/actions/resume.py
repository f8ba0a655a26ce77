"""What a resumed training must share with the run that wrote its checkpoint.

Every checkpoint stores the settings that change what training computes: the network (per node: op,
shape, dynamic axis, attributes), the SGD block, the reader block, precision, randomSeed and
parallelTrain. A run that finds a checkpoint written with other values of these refuses to resume
(a config error naming the keys), unless it is told to go on (`--resume-anyway`) or to start afresh
(`makeMode = false`). Settings that only change what is shown or kept (maxEpochs, reporting,
keepCheckPointFiles, deviceId …) may change between runs: raising maxEpochs to train on is a
resume like any other.
"""
from __future__ import annotations

import hashlib
import json

from netlang.errors import ConfigError
from netlang.ir.graph import Network
from netlang.ir.modelfile import graph_to_json

# Keys whose change does not change the computation.
NOT_TRAINING = {
    "SGD": {"modelPath", "maxEpochs", "keepCheckPointFiles", "traceLevel", "numMBsToShowResult",
            "firstMBsToShowResult", "numMBsToCUDAProfile", "sigFigs", "unitTest", "gradientCheck",
            "maxTempMemSizeInSamplesForCNN", "packThresholdSizeInKB"},
    "reader": {"traceLevel", "verbosity", "cacheIndex", "keepDataInMemory", "multiThreadedDeserialization",
               "maxErrors"},
}


def resume_record(config, view, network: Network) -> tuple[dict, dict]:
    """(settings by dotted key as plain JSON values, the source span of each key where it has one)."""
    settings, spans = {}, {}
    for block in ("SGD", "reader"):
        sub = view.get(block)
        if sub is None:
            continue
        for key, value in _flattened(sub.to_dict(), f"{block}."):
            if key.split(".")[1] not in NOT_TRAINING[block]:
                settings[key] = value
                spans[key] = _span_of(sub, key.split(".")[1])
    for key, holder in (("precision", view), ("randomSeed", config.top), ("parallelTrain", config.top)):
        settings[key] = holder.to_dict().get(key)
        spans[key] = holder.span_of(key)
    settings["network"] = network_signature(network)
    ref = view.network_expr()
    spans["network"] = ref.span if ref is not None else None
    return json.loads(json.dumps(settings, default=str)), spans


def _span_of(block, name: str):
    """Where key `name` of `block` is set; a legacy reader's stream block (`features = [ … ]`, no
    field of the schema) is where that block is written."""
    if block.schema.field(name) is None:
        stream = block.extra_blocks.get(name)
        return stream.span if stream is not None else block.span
    return block.span_of(name)


def network_signature(network: Network) -> dict:
    """Per node: op, shape, dynamic axis and a digest of its attributes. A parameter's initialisation
    is left out: a resumed run takes the checkpoint's values whatever the config says."""
    signature = {}
    for entry in graph_to_json(network)["nodes"]:
        attrs = {} if entry["parameter"] else entry["attrs"]
        digest = hashlib.sha256(json.dumps(attrs, sort_keys=True, default=str).encode()).hexdigest()[:12]
        signature[entry["name"]] = (f"{entry['op']} {entry['shape']} {entry['layout']} "
                                    f"{entry['inputs']} lr×{entry['learningRateMultiplier']} {digest}")
    return signature


def _flattened(values: dict, prefix: str):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _flattened(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def differences(stored: dict, current: dict) -> list[str]:
    """The keys whose values differ, each with what it was and what it is (networks: which nodes)."""
    found = []
    for key in sorted(set(stored) | set(current), key=lambda k: (k != "network", k)):
        then, now = stored.get(key), current.get(key)
        if then == now:
            continue
        if key == "network" and isinstance(then, dict) and isinstance(now, dict):
            found.append(f"network ({_node_changes(then, now)})")
        else:
            found.append(f"{key} ({_shown(then)} in the checkpoint, {_shown(now)} now)")
    return found


def _node_changes(then: dict, now: dict) -> str:
    parts = []
    for what, names in (("nodes added", [n for n in now if n not in then]),
                        ("nodes removed", [n for n in then if n not in now]),
                        ("nodes changed", [n for n in now if n in then and then[n] != now[n]])):
        if names:
            parts.append(f"{what}: {', '.join(names[:3])}" + (f" and {len(names) - 3} more" if len(names) > 3 else ""))
    return "; ".join(parts)


def _shown(value) -> str:
    return "not set" if value is None else json.dumps(value)


def check_resume(stored: dict | None, current: dict, spans: dict, checkpoint: str, resume_anyway: bool,
                 progress) -> None:
    """Refuse to resume from `checkpoint` when its settings differ, unless `resume_anyway`.
    A checkpoint of an older netlang, which stored no settings, is trusted."""
    if not isinstance(stored, dict):
        return
    changed = differences(stored, current)
    if not changed:
        return
    listed = "; ".join(changed)
    if resume_anyway:
        progress.message(f"warning: resuming from {checkpoint} with changed settings (--resume-anyway): {listed}")
        return
    first = next(key for key in sorted(set(stored) | set(current), key=lambda k: (k != "network", k))
                 if stored.get(key) != current.get(key))
    raise ConfigError(f"the checkpoint {checkpoint} was written with other training settings: {listed}",
                      spans.get(first), key=first,
                      hint="--resume-anyway continues from it with the new settings; makeMode = false starts "
                           "afresh; another modelPath keeps both runs")
