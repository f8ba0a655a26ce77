"""The `test`/`eval` and `write` actions on a trained model file."""
from __future__ import annotations

import math
import os
import re

from netlang.actions import common
from netlang.actions.directories import make_directory, output_directory
from netlang.compiler.lang.settings import reader_settings
from netlang.errors import ConfigError, DataError, DataPosition
from netlang.ir.modelfile import atomic_write
from netlang.runtime.executor import Executor
from netlang.runtime.trainer import evaluate


def _executor(view):
    backend = common.backend_for(view)
    network, params, state = common.model_for_evaluation(view, backend)
    executor = Executor(network, backend, params)
    executor.load_state_arrays(state)
    return network, executor, backend


def run_eval(config, name: str, view) -> dict:
    """Each metric's per-sample average over the reader's data: {"metrics": {node: v}, "samples": N},
    plus {"nonFinite": [node, …]} when a metric is NaN or infinite."""
    network, executor, backend = _executor(view)
    names = list(view.evalNodeNames) if view.evalNodeNames else None
    nodes = common.select_nodes(network, names, ("criterion", "evaluation"), "evalNodeNames", view.span_of("evalNodeNames"))
    source = common.create_reader(reader_settings(view.reader), network, randomize=False, dtype=backend.dtype,
                                  epoch_size=int(view.epochSize or 0))
    try:
        mb_size = int(view.minibatchSize.value(1)) if view.minibatchSize is not None else 40960
        result = evaluate(executor, network, source, nodes, mb_size, backend)
    finally:
        source.close()
    not_finite = [k for k, v in result["metrics"].items() if not math.isfinite(v)]
    if not_finite:
        result["nonFinite"] = not_finite
    return result


def _label_mapping(path: str | None) -> list[str] | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return [line.rstrip("\r\n") for line in fh if line.strip()]
    except OSError:
        raise DataError("label mapping file not found", DataPosition(path)) from None


def _samples(values, mask, backend):
    """An output's values as one row per sample: a sequence output `(T, N, …)` gives its real steps
    sequence after sequence (the reader's order), anything else one row per item of its batch."""
    if mask is None:
        return values.reshape(len(values), -1)
    mask = backend.to_host(mask)
    # Steps are the first axis, sequences the second: take them sequence by sequence.
    return values.swapaxes(0, 1)[mask.T].reshape(int(mask.sum()), -1)


# What may stay as it is in an output file name; anything else in a node name is written %XX.
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9_.\[\]-]")


def node_output_path(output_path: str, node_name: str) -> str:
    """`<outputPath>.<node>`: the node's name is never a path component, so the file stays in
    outputPath's directory whatever the name (model files are data from anywhere)."""
    def escaped(match):
        return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8"))

    directory, base = os.path.split(output_path)
    file_name = f"{base}.{_UNSAFE_IN_FILE_NAME.sub(escaped, node_name)}"
    if not file_name.strip("."):          # only dots ('..'): not a file name of its own
        file_name = file_name.replace(".", "%2E")
    return os.path.join(directory, file_name)


def run_write(config, name: str, view) -> dict:
    """Write each output node's values to `<outputPath>.<node>`: one line per sample, values
    separated by spaces (`format.type = real`), or the arg-max's label (`category`); the samples of
    sequences come sequence after sequence, each one's steps in order."""
    if not view.outputPath:
        raise view.block_error("the write action needs outputPath", hint="outputPath = \"out/result\" writes out/result.<node>")
    make_directory(output_directory(view.outputPath), "outputPath", view.span_of("outputPath"))
    network, executor, backend = _executor(view)
    names = list(view.outputNodeNames) if view.outputNodeNames else None
    nodes = common.select_nodes(network, names, ("output",), "outputNodeNames", view.span_of("outputNodeNames"))
    fmt = view.format
    kind = fmt.type if fmt is not None else "real"
    labels = _label_mapping(fmt.labelMappingFile if fmt is not None else None)
    if kind == "category" and labels is None:
        raise ConfigError("format.type = category needs labelMappingFile", view.span_of("format"))
    chunks: dict[str, list[str]] = {n.name: [] for n in nodes}

    def collect(outputs, minibatch):
        for node in nodes:
            values = _samples(backend.to_host(outputs[node.name]), executor.output_masks.get(node.name), backend)
            if kind == "category":
                chunks[node.name].extend(labels[i] if i < len(labels) else str(i) for i in values.argmax(1))
            else:
                chunks[node.name].extend(" ".join(f"{v:.7g}" for v in row) for row in values)

    source = common.create_reader(reader_settings(view.reader), network, randomize=False, dtype=backend.dtype)
    try:
        mb_size = int(view.minibatchSize.value(1)) if view.minibatchSize is not None else 2048
        result = evaluate(executor, network, source, nodes, mb_size, backend, on_minibatch=collect)
    finally:
        source.close()
    written = {}
    for node in nodes:
        path = node_output_path(view.outputPath, node.name)
        text = ("\n".join(chunks[node.name]) + "\n").encode("utf-8")
        atomic_write(path, lambda fh, text=text: fh.write(text))
        written[node.name] = path
    return {"files": written, "samples": result["samples"]}
