"""Typed settings for tests, made the one way a config makes them: config text → evaluator → schema
(a `View`) → compiler/lang/settings.py. Blocks may be given as text or as Python dicts (written out
as BrainScript records)."""
from __future__ import annotations

from netlang.compiler.lang import settings
from netlang.compiler.lang.blocks import (
    AUTO_ADJUST_SCHEMA,
    DESERIALIZER_SCHEMA,
    READER_SCHEMA,
    SGD_SCHEMA,
    TRANSFORM_SCHEMA,
)
from netlang.compiler.lang.evaluator import evaluate_text
from netlang.compiler.lang.views import validate


def brainscript(value) -> str:
    """A Python value written as a BrainScript expression: dicts are records, lists arrays."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{ " + " ; ".join(f"{key} = {brainscript(item)}" for key, item in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "(" + " : ".join(brainscript(item) for item in value) + ")"
    raise TypeError(f"no BrainScript form for {value!r}")


def view(schema, block, path: str, name: str = "t.net"):
    """`block` (text of the block's members, or a dict) validated with `schema`."""
    text = block if isinstance(block, str) else " ; ".join(f"{k} = {brainscript(v)}" for k, v in block.items())
    return validate(evaluate_text(text, name), schema, path)


def sgd(text: str = "", name: str = "t.net") -> settings.SGDSettings:
    """SGD settings from the members of an SGD block (maxEpochs and a learning rate are filled in
    when the text gives none)."""
    text = text if "maxEpochs" in text else f"maxEpochs = 1\n{text}"
    if "learningRates" not in text:
        text += "\nlearningRatesPerSample = 1"
    return settings.sgd_settings(view(SGD_SCHEMA, text, "SGD", name))


def auto_adjust(text: str = "") -> settings.AutoAdjustSettings:
    return settings.auto_adjust_settings(view(AUTO_ADJUST_SCHEMA, f'autoAdjustLR = "adjustAfterEpoch"\n{text}',
                                              "SGD.AutoAdjust"))


def reader(block) -> settings.ReaderSettings:
    return settings.reader_settings(view(READER_SCHEMA, block, "reader"))


def deserializer(block) -> settings.DeserializerSettings:
    """A deserializer from a reader-like block: a composite entry when it has `type`, else what a
    legacy reader block configures."""
    if "type" in block:
        return settings.deserializer_settings(view(DESERIALIZER_SCHEMA, block, "reader.deserializers[0]"))
    return reader(block).legacy


def transform(block) -> settings.TransformSettings:
    return settings.transform_settings(view(TRANSFORM_SCHEMA, block, "t"))
