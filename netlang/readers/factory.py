"""Reader settings → minibatch source.

Two spellings of a reader block are understood (reference/brainscript.md §5.5); the schema has
validated either, and `ReaderSettings` (compiler/lang/settings.py) carries it here:

* legacy: `reader = [ readerType = "CNTKTextFormatReader" ; file = … ; input = [ … ] ]`, where the
  reader block itself configures its one deserializer (`ReaderSettings.legacy`);
* composite: `reader = [ deserializers = ( [ type = "CNTKTextFormatDeserializer" ; file ; input ] : … ) ]`,
  where the deserializers are joined by sequence key.

Deserializer types are looked up in a registry. A format module registers its builder with
`register_deserializer`; the modules of known types are imported on first use (`_PLUGINS`), so the
image deserializer plugs in by adding its module and one line there. A builder makes one
deserializer or a list of them (an HTK deserializer makes one per stream; the legacy HTKMLFReader
configures features and labels). A problem with a setting is reported at the line that sets it
(`settings.error(key, …)`).

Two optional deserializer methods let the reader block reach its deserializers before the source is
built: `set_frame_mode(on)` (`frameMode = true`: every frame a sequence of its own) and
`align_with(deserializers)` (a deserializer checks itself against the others it is joined with).
"""
from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from typing import Callable

import numpy as np

from netlang.compiler.lang.settings import DeserializerSettings, ReaderSettings
from netlang.errors import ConfigError, suggest
from netlang.readers.ctf import CtfDeserializer, CtfStream
from netlang.readers.prefetch import PrefetchingSource
from netlang.readers.source import Deserializer, MinibatchSource
from netlang.readers.windows import TruncatedSource

log = logging.getLogger("netlang.readers")

# CNTKTextFormatReader's default window: 128 chunks of 32 MB, about 4 GB of text.
CTF_DEFAULT_WINDOW_CHUNKS = 128


def resolve_path(path: str, base_dir: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def data_file(settings: DeserializerSettings, base_dir: str) -> str:
    """The deserializer's `file`, resolved against `base_dir`."""
    if settings.file is None:
        raise settings.block_error("the reader needs a data file", hint="file = \"data/train.txt\"")
    return resolve_path(settings.file, base_dir)


# ---- the registry ------------------------------------------------------------------------------

DeserializerBuilder = Callable[[DeserializerSettings, str, object], Deserializer | list[Deserializer]]

_builders: dict[str, tuple[str, DeserializerBuilder]] = {}   # lower-cased type -> (its spelling, builder)

# Deserializer types whose module registers them when imported (on first use).
_PLUGINS = {
    "imagedeserializer": ("ImageDeserializer", "netlang.readers.image"),
    "base64imagedeserializer": ("Base64ImageDeserializer", "netlang.readers.image"),
    "htkfeaturedeserializer": ("HTKFeatureDeserializer", "netlang.readers.htk"),
    "htkmlfdeserializer": ("HTKMLFDeserializer", "netlang.readers.htk"),
    "htkmlfreader": ("HTKMLFReader", "netlang.readers.htk"),
}
_LEGACY_READERS = {        # lower-cased readerType -> (its spelling, the builder of what it configures)
    "cntktextformatreader": ("CNTKTextFormatReader", "CNTKTextFormatDeserializer"),
    "imagereader": ("ImageReader", "ImageDeserializer"),
    "htkmlfreader": ("HTKMLFReader", "HTKMLFReader"),       # features and labels
}


# CNTK's other reader types: their blocks are accepted, reading them is not implemented yet.
_CNTK_READERS_NOT_YET = {name.lower() for name in ("LMSequenceReader", "LUSequenceReader", "UCIFastReader",
                                                  "CNTKBinaryReader", "HTKDataReader")}


def register_deserializer(type_name: str, builder: DeserializerBuilder) -> None:
    """Make `type = "<type_name>"` (any case) build a deserializer with `builder(settings, base_dir, dtype)`."""
    _builders[type_name.lower()] = (type_name, builder)


def register_legacy_reader(reader_type: str, deserializer_type: str) -> None:
    """Make `readerType = "<reader_type>"` configure one deserializer of `deserializer_type`."""
    _LEGACY_READERS[reader_type.lower()] = (reader_type, deserializer_type)


def _builder(type_name: str, settings, key: str) -> DeserializerBuilder:
    """The builder of `type_name`, which `settings` set with `key`."""
    lowered = type_name.lower()
    if lowered not in _builders and lowered in _PLUGINS:
        module = _PLUGINS[lowered][1]
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise settings.error(key, f"deserializer type '{type_name}' is not available in this build",
                                 hint=f"its module {module} could not be loaded ({err})") from None
    if lowered not in _builders:
        known = [name for name, _ in _builders.values()] + [name for name, _ in _PLUGINS.values()]
        raise settings.error(key, f"deserializer type '{type_name}' is not available",
                             hint=suggest(type_name, known) or "available: " + ", ".join(sorted(set(known))))
    return _builders[lowered][1]


# ---- CTF ---------------------------------------------------------------------------------------

def build_ctf(settings: DeserializerSettings, base_dir: str, dtype) -> CtfDeserializer:
    """A CTF deserializer from `file`, `input = [ name = [ dim ; format ; alias ; definesMBSize ] ]` and options."""
    path = data_file(settings, base_dir)
    streams = []
    for name, stream in settings.streams.items():
        if stream.dim is None:
            raise stream.block_error(f"stream '{name}' needs dim (values per sample)", hint="e.g. dim = 784")
        streams.append(CtfStream(name=name, dim=stream.dim, is_sparse=stream.format == "sparse",
                                 alias=stream.alias, defines_mb_size=stream.defines_mb_size))
    if not streams:
        raise settings.error("input", "the 'input' block declares no streams",
                             hint="input = [ features = [ dim = 784 ; format = \"dense\" ] ]")
    return CtfDeserializer(path, streams, chunk_size_bytes=settings.chunk_size_in_bytes,
                           skip_sequence_ids=settings.skip_sequence_ids, max_errors=settings.max_errors, dtype=dtype)


register_deserializer("CNTKTextFormatDeserializer", build_ctf)


# ---- the reader block --------------------------------------------------------------------------

def create_source(reader: ReaderSettings, base_dir: str, *, epoch_size: int | None = None,
                  streams_wanted: Mapping[str, int] | None = None, randomize: bool | None = None,
                  dtype=np.float32, prefetch: bool = False, truncation: tuple | None = None,
                  distributions: Mapping[str, str] | None = None):
    """The minibatch source a reader block describes.

    `epoch_size` (from SGD) overrides the reader's `epochSize`; `streams_wanted` maps the network's
    input names to their dimensions (an int or a shape tuple; 0 = not known): the source then
    carries just those streams, and a name or dimension that does not match the reader is an error.
    `randomize=False` forces file order (the `write` action). `truncation=(length, parallel)` cuts
    the sequences into windows for truncated BPTT (readers/windows.py). `prefetch=True` wraps the
    source in a read-ahead thread. `distributions` maps streams the network reads as distributions
    (CrossEntropyWithSoftmax's labels) to that node; deserializers that can tell warn about rows that
    cannot be one.
    """
    deserializers, default_window = _deserializers(reader, base_dir, dtype)
    do_randomize, sample_window = (reader.randomizes, reader.sample_window) if randomize is None else (randomize, None)
    window, sample_based = _window(reader, sample_window, default_window)
    if epoch_size is None:
        epoch_size = reader.epoch_size or 0
    for d in deserializers:
        # Deserializers that randomize their own samples (image augmentation) follow the reader's
        # settings, including the forced file order of the write action.
        configure = getattr(d, "set_randomization", None)
        if configure is not None:
            configure(do_randomize, reader.randomization_seed)
        expect = getattr(d, "expect_distributions", None)
        if expect is not None and distributions:
            expect(dict(distributions))
    _read_frames(reader, deserializers, truncation)
    for d in deserializers:
        align = getattr(d, "align_with", None)
        if align is not None:
            align(deserializers)
    source = MinibatchSource(
        deserializers,
        randomize=do_randomize,
        randomization_window=window,
        sample_based_window=sample_based,
        seed=reader.randomization_seed,
        epoch_size=epoch_size,
        streams=_check_wanted(reader, deserializers, streams_wanted),
    )
    if truncation is not None:
        source = TruncatedSource(source, *truncation)
    return PrefetchingSource(source) if prefetch else source


def _read_frames(reader: ReaderSettings, deserializers: list[Deserializer], truncation: tuple | None) -> None:
    """`frameMode = true`: the deserializers that can make every frame a sequence of its own do so."""
    if not reader.frame_mode:
        return
    if truncation is not None:
        raise reader.error("frameMode", "frameMode = true reads single frames, but truncated BPTT needs whole "
                                        "utterances", hint="set frameMode = false in the reader")
    for d in deserializers:
        set_frame_mode = getattr(d, "set_frame_mode", None)
        if set_frame_mode is not None:
            set_frame_mode(True)
        else:
            log.warning("frameMode = true: %s reads whole sequences (frame mode is an HTK reader's)", d.description)


def _as_list(built) -> list[Deserializer]:
    return list(built) if isinstance(built, (list, tuple)) else [built]


def _deserializers(reader: ReaderSettings, base_dir: str, dtype) -> tuple[list[Deserializer], int | None]:
    """The deserializers and the default randomization window in chunks (None = the whole data)."""
    if reader.deserializers:
        built = [_builder(d.type, d, "type")(d, base_dir, dtype) for d in reader.deserializers]
        return [deserializer for each in built for deserializer in _as_list(each)], None
    if reader.reader_type is None:
        raise reader.block_error("the reader has neither readerType nor deserializers",
                                 hint="use readerType = \"CNTKTextFormatReader\" or a deserializers = ( … ) block")
    legacy = _LEGACY_READERS.get(reader.reader_type.lower())
    if legacy is None and reader.reader_type.lower() in _CNTK_READERS_NOT_YET:
        raise reader.error("readerType", f"reader type '{reader.reader_type}' is not supported by netlang yet",
                           hint="CTF data: readerType = \"CNTKTextFormatReader\"; images: \"ImageReader\"")
    if legacy is None:
        raise reader.error("readerType", f"reader type '{reader.reader_type}' is not available",
                           hint=suggest(reader.reader_type, [name for name, _ in _LEGACY_READERS.values()]) or
                           "use readerType = \"CNTKTextFormatReader\" or a deserializers = ( … ) block")
    built = _as_list(_builder(legacy[1], reader, "readerType")(reader.legacy, base_dir, dtype))
    default = CTF_DEFAULT_WINDOW_CHUNKS if isinstance(built[0], CtfDeserializer) else None
    return built, default


def _window(reader: ReaderSettings, sample_window: int | None, default_window: int | None) -> tuple[int | None, bool]:
    """(randomization window, whether it counts samples): `randomize = <n>` (HTK style) is a window
    of n samples; else `randomizationWindow`, in chunks unless sampleBasedRandomizationWindow."""
    if sample_window is not None:
        return sample_window, True
    sample_based = reader.sample_based_randomization_window
    if reader.randomization_window is not None:
        return reader.randomization_window, sample_based
    # A chunk-count default means nothing in samples; then the default is the whole data.
    return (None if sample_based else default_window), sample_based


def _check_wanted(reader: ReaderSettings, deserializers: list[Deserializer],
                  wanted: Mapping[str, int] | None) -> list[str] | None:
    if wanted is None:
        return None
    infos = {info.name: info for d in deserializers for info in d.stream_infos()}
    for name, dim in wanted.items():
        if isinstance(dim, (tuple, list)):
            dim = int(np.prod(dim)) if all(dim) else 0      # a shape; 0 anywhere = not inferred yet
        info = infos.get(name)
        if info is None:
            raise ConfigError(f"network input '{name}' has no stream in the reader", reader.block_span,
                              key=f"{reader.block_path}.input",
                              hint=suggest(name, infos) or
                              "the reader's streams are " + ", ".join(f"'{n}'" for n in infos))
        if dim and int(dim) != info.dim:
            stream = _stream_settings(reader, name)
            span = stream.span_of("dim") if stream is not None else reader.block_span
            raise ConfigError(f"network input '{name}' has dimension {dim}, but the reader stream has {info.dim}",
                              span, key=f"{reader.block_path}.input.{name}.dim",
                              hint="make the input's shape and the reader's 'dim' agree")
    return list(wanted)


def _stream_settings(reader: ReaderSettings, name: str):
    """The settings of stream `name`, wherever the reader declares it."""
    for deserializer in reader.deserializers or (reader.legacy,):
        if name in deserializer.streams:
            return deserializer.streams[name]
    return None
