"""Reader config block → minibatch source.

Two spellings of a reader block are understood (reference/brainscript.md §5.5), with keys matched
case-insensitively as CNTK's config layer does:

* legacy: `reader = [ readerType = "CNTKTextFormatReader" ; file = … ; input = [ … ] ]`, where the
  reader block itself configures its one deserializer;
* composite: `reader = [ deserializers = ( [ type = "CNTKTextFormatDeserializer" ; file ; input ] : … ) ]`,
  where the deserializers are joined by sequence key.

Deserializer types are looked up in a registry. A format module registers its builder with
`register_deserializer`; the modules of known types are imported on first use (`_PLUGINS`), so the
image and HTK deserializers plug in by adding their module and one line there.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from netlang.errors import ConfigError, suggest
from netlang.readers.ctf import DEFAULT_CHUNK_SIZE, CtfDeserializer, CtfStream
from netlang.readers.prefetch import PrefetchingSource
from netlang.readers.source import Deserializer, MinibatchSource
from netlang.readers.windows import TruncatedSource

# CNTKTextFormatReader's default window: 128 chunks of 32 MB, about 4 GB of text.
CTF_DEFAULT_WINDOW_CHUNKS = 128

_REQUIRED = object()


class ConfigView:
    """Case-insensitive, typed read access to a resolved config block; errors name the key path."""

    def __init__(self, mapping: Mapping, path: str):
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"expected a record [ … ], found {_describe(mapping)}", key=path)
        self.path = path
        self._items = {str(k).lower(): (str(k), v) for k, v in mapping.items()}

    def has(self, key: str) -> bool:
        return key.lower() in self._items

    def keys(self) -> list[str]:
        return [name for name, _ in self._items.values()]

    def items(self) -> list[tuple[str, Any]]:
        return list(self._items.values())

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}"

    def get(self, key: str, default: Any = _REQUIRED) -> Any:
        entry = self._items.get(key.lower())
        if entry is not None:
            return entry[1]
        if default is _REQUIRED:
            raise ConfigError(f"required key '{key}' is missing", key=self.path,
                              hint=suggest(key, self.keys()))
        return default

    def block(self, key: str) -> "ConfigView":
        return ConfigView(self.get(key), self.key_path(key))

    def string(self, key: str, default: Any = _REQUIRED, choices: tuple[str, ...] | None = None) -> Any:
        value = self.get(key, default)
        if value is default and default is not _REQUIRED:
            return value
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, found {_describe(value)}", key=self.key_path(key))
        if choices is not None and value.lower() not in choices:
            raise ConfigError(f"'{value}' is not one of " + ", ".join(f"'{c}'" for c in choices),
                              key=self.key_path(key), hint=suggest(value, choices))
        return value

    def integer(self, key: str, default: Any = _REQUIRED, minimum: int | None = None) -> Any:
        value = self.get(key, default)
        if value is default and default is not _REQUIRED:
            return value
        number = _as_int(value)
        if number is None:
            raise ConfigError(f"expected a whole number, found {_describe(value)}", key=self.key_path(key))
        if minimum is not None and number < minimum:
            raise ConfigError(f"must be ≥ {minimum}, found {number}", key=self.key_path(key))
        return number

    def boolean(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self.get(key, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"expected true or false, found {_describe(value)}", key=self.key_path(key))

    def reject_typos(self, known: tuple[str, ...]) -> None:
        """An unknown key that is close to a known one is almost certainly a typo: say so."""
        lowered = {k.lower() for k in known}
        for name in self.keys():
            if name.lower() not in lowered:
                hint = suggest(name, known)
                if hint:
                    raise ConfigError(f"unknown key '{name}'", key=self.path, hint=hint)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, Mapping):
        return "a record"
    if isinstance(value, (list, tuple)):
        return "an array"
    return repr(value)


def resolve_path(path: str, base_dir: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


# ---- the registry ------------------------------------------------------------------------------

DeserializerBuilder = Callable[[ConfigView, str, Any], Deserializer]

_builders: dict[str, tuple[str, DeserializerBuilder]] = {}   # lower-cased type -> (its spelling, builder)

# Deserializer types whose module registers them when imported (on first use).
_PLUGINS = {
    "imagedeserializer": ("ImageDeserializer", "netlang.readers.image"),
    "base64imagedeserializer": ("Base64ImageDeserializer", "netlang.readers.image"),
    "htkfeaturedeserializer": ("HTKFeatureDeserializer", "netlang.readers.htk"),
    "htkmlfdeserializer": ("HTKMLFDeserializer", "netlang.readers.htk"),
}
_LEGACY_READERS = {        # lower-cased readerType -> (its spelling, the deserializer type it configures)
    "cntktextformatreader": ("CNTKTextFormatReader", "CNTKTextFormatDeserializer"),
    "imagereader": ("ImageReader", "ImageDeserializer"),
}


def register_deserializer(type_name: str, builder: DeserializerBuilder) -> None:
    """Make `type = "<type_name>"` (any case) build a deserializer with `builder(cfg, base_dir, dtype)`."""
    _builders[type_name.lower()] = (type_name, builder)


def register_legacy_reader(reader_type: str, deserializer_type: str) -> None:
    """Make `readerType = "<reader_type>"` configure one deserializer of `deserializer_type`."""
    _LEGACY_READERS[reader_type.lower()] = (reader_type, deserializer_type)


def _builder(type_name: str, key: str) -> DeserializerBuilder:
    lowered = type_name.lower()
    if lowered not in _builders and lowered in _PLUGINS:
        module = _PLUGINS[lowered][1]
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"deserializer type '{type_name}' is not available in this build", key=key,
                              hint=f"its module {module} could not be loaded ({err})") from None
    if lowered not in _builders:
        known = [name for name, _ in _builders.values()] + [name for name, _ in _PLUGINS.values()]
        raise ConfigError(f"deserializer type '{type_name}' is not available", key=key,
                          hint=suggest(type_name, known) or "available: " + ", ".join(sorted(set(known))))
    return _builders[lowered][1]


# ---- CTF ---------------------------------------------------------------------------------------

_CTF_STREAM_KEYS = ("dim", "format", "alias", "definesMBSize")


def build_ctf(cfg: ConfigView, base_dir: str, dtype) -> CtfDeserializer:
    """A CTF deserializer from `file`, `input = [ name = [ dim ; format ; alias ; definesMBSize ] ]` and options."""
    path = resolve_path(cfg.string("file"), base_dir)
    inputs = cfg.block("input")
    streams = []
    for name, value in inputs.items():
        stream = ConfigView(value, inputs.key_path(name))
        stream.reject_typos(_CTF_STREAM_KEYS)
        streams.append(CtfStream(
            name=name,
            dim=stream.integer("dim", minimum=1),
            is_sparse=stream.string("format", "dense", choices=("dense", "sparse")).lower() == "sparse",
            alias=stream.string("alias", None),
            defines_mb_size=stream.boolean("definesMBSize", False),
        ))
    if not streams:
        raise ConfigError("the 'input' block declares no streams", key=inputs.path,
                          hint="input = [ features = [ dim = 784 ; format = \"dense\" ] ]")
    return CtfDeserializer(
        path, streams,
        chunk_size_bytes=cfg.integer("chunkSizeInBytes", DEFAULT_CHUNK_SIZE, minimum=1),
        skip_sequence_ids=cfg.boolean("skipSequenceIds", False),
        max_errors=cfg.integer("maxErrors", 0, minimum=0),
        dtype=dtype,
    )


register_deserializer("CNTKTextFormatDeserializer", build_ctf)


# ---- the reader block --------------------------------------------------------------------------

def create_source(reader_cfg: Mapping, base_dir: str, *, epoch_size: int | None = None,
                  streams_wanted: Mapping[str, int] | None = None, randomize: bool | None = None,
                  dtype=np.float32, prefetch: bool = False, truncation: tuple | None = None,
                  distributions: Mapping[str, str] | None = None):
    """The minibatch source a reader block describes.

    `epoch_size` (from SGD) overrides the reader's `epochSize`; `streams_wanted` maps the network's
    input names to their dimensions (an int or a shape tuple; 0 = not known): the source then
    carries just those streams, and a name or dimension that does not match the reader is an error.
    `randomize=False` forces file order (the `write` action). `truncation=(length, parallel)` cuts
    the sequences into windows for truncated BPTT (readers/truncation.py). `prefetch=True` wraps the
    source in a read-ahead thread. `distributions` maps streams the network reads as distributions
    (CrossEntropyWithSoftmax's labels) to that node; deserializers that can tell warn about rows that
    cannot be one.
    """
    cfg = ConfigView(reader_cfg, "reader")
    deserializers, default_window = _deserializers(cfg, base_dir, dtype)
    do_randomize, sample_window = _randomize_setting(cfg) if randomize is None else (randomize, None)
    if sample_window is not None:
        window, sample_based = sample_window, True
    else:
        sample_based = cfg.boolean("sampleBasedRandomizationWindow", False)
        # A chunk-count default means nothing in samples; then the default is the whole data.
        window = cfg.integer("randomizationWindow", None if sample_based else default_window, minimum=1)
    if epoch_size is None:
        epoch_size = cfg.integer("epochSize", 0, minimum=0)
    seed = cfg.integer("randomizationSeed", 0, minimum=0)
    for d in deserializers:
        # Deserializers that randomize their own samples (image augmentation) follow the reader's
        # settings, including the forced file order of the write action.
        configure = getattr(d, "set_randomization", None)
        if configure is not None:
            configure(do_randomize, seed)
        expect = getattr(d, "expect_distributions", None)
        if expect is not None and distributions:
            expect(dict(distributions))
    source = MinibatchSource(
        deserializers,
        randomize=do_randomize,
        randomization_window=window,
        sample_based_window=sample_based,
        seed=seed,
        epoch_size=epoch_size,
        streams=_check_wanted(deserializers, streams_wanted),
    )
    if truncation is not None:
        source = TruncatedSource(source, *truncation)
    return PrefetchingSource(source) if prefetch else source


def _deserializers(cfg: ConfigView, base_dir: str, dtype) -> tuple[list[Deserializer], int | None]:
    """The deserializers and the default randomization window (None = the whole data)."""
    if cfg.has("deserializers"):
        entries = cfg.get("deserializers")
        if isinstance(entries, Mapping):
            entries = [entries]
        if not isinstance(entries, (list, tuple)) or not entries:
            raise ConfigError("expected an array of deserializer records ( [ … ] : [ … ] )",
                              key=cfg.key_path("deserializers"))
        built = []
        for i, entry in enumerate(entries):
            view = ConfigView(entry, f"{cfg.key_path('deserializers')}[{i}]")
            built.append(_builder(view.string("type"), view.key_path("type"))(view, base_dir, dtype))
        return built, None
    reader_type = cfg.string("readerType")
    legacy = _LEGACY_READERS.get(reader_type.lower())
    if legacy is None:
        raise ConfigError(f"reader type '{reader_type}' is not available", key=cfg.key_path("readerType"),
                          hint=suggest(reader_type, [name for name, _ in _LEGACY_READERS.values()]) or
                          "use readerType = \"CNTKTextFormatReader\" or a deserializers = ( … ) block")
    built = _builder(legacy[1], cfg.key_path("readerType"))(cfg, base_dir, dtype)
    default = CTF_DEFAULT_WINDOW_CHUNKS if isinstance(built, CtfDeserializer) else None
    return [built], default


def _randomize_setting(cfg: ConfigView) -> tuple[bool, int | None]:
    """`randomize`: true/false, or (HTK style) auto/none or a window size in samples."""
    value = cfg.get("randomize", True)
    if isinstance(value, str) and value.lower() in ("auto", "none"):
        return value.lower() == "auto", None
    number = _as_int(value)
    if number is not None and not isinstance(value, str) and number > 1:
        return True, number
    return cfg.boolean("randomize", True), None


def _check_wanted(deserializers: list[Deserializer], wanted: Mapping[str, int] | None) -> list[str] | None:
    if wanted is None:
        return None
    infos = {info.name: info for d in deserializers for info in d.stream_infos()}
    for name, dim in wanted.items():
        if isinstance(dim, (tuple, list)):
            dim = int(np.prod(dim)) if all(dim) else 0      # a shape; 0 anywhere = not inferred yet
        info = infos.get(name)
        if info is None:
            raise ConfigError(f"network input '{name}' has no stream in the reader",
                              key="reader.input",
                              hint=suggest(name, infos) or
                              "the reader's streams are " + ", ".join(f"'{n}'" for n in infos))
        if dim and int(dim) != info.dim:
            raise ConfigError(f"network input '{name}' has dimension {dim}, but the reader stream has {info.dim}",
                              key=f"reader.input.{name}.dim",
                              hint="make the input's shape and the reader's 'dim' agree")
    return list(wanted)
