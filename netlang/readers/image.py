"""ImageDeserializer: image map files → decoded, transformed images plus one-hot labels.

Reference §5.5. A map file has one image per line, `path<TAB>label` (label 0-based), optionally
preceded by a sequence key (`key<TAB>path<TAB>label`, for joining with other deserializers). Paths:

* `...` at the start stands for the map file's directory (`.../train/cat1.png`);
* `archive.zip@/inner/path` reads a member of a zip archive (STORE compression is fastest); each
  decoding thread keeps its own open handle per archive;
* any other relative path is resolved against the map file's directory (CNTK uses the working
  directory; the map file's directory makes a data set relocatable).

`Base64ImageDeserializer` files hold the images inline: `[key<TAB>]label<TAB>base64-encoded image`.

Each image is decoded with Pillow into HWC, channels in BGR order (as CNTK's OpenCV decoding gives
them, so CNTK mean files and models fit), greyscale when the Scale transforms ask for one channel, then
run through the transforms (netlang/readers/transforms.py) in the configured order. The features
stream holds what the chain outputs: CHW after `Transpose` (the layout of a `W:H:C` input), else HWC
as in CNTK; the legacy `ImageReader` form always ends with Transpose, as CNTK's did. The output
shape comes from the last Scale, or, without one, from the first image run through the chain
deterministically; an image that comes out another size is an error. The labels stream is one-hot
of `labelDim` (`dim`).

Images are read per sequence: a chunk is only a range of map-file lines, and the minibatch source
asks `read_sequences(chunks, positions, sweep)` for exactly the images of one minibatch and keeps
none of them afterwards. Holding decoded chunks instead would need memory for the whole
randomization window, by default the whole data set (ImageNet at 224×224 in float32: 770 GB); this
way memory is bounded by the minibatch, and each image is decoded once per sweep. `read_chunk` (a
whole chunk) remains for tools and for sources that read chunk-wise.

Randomness is per sample: sample `i` of sweep `s` draws from a generator seeded with
`(randomizationSeed, s, i)`, so the result does not depend on thread scheduling, chunking, which
images are read together, or rank, and every pass over the data gets fresh augmentations. The read
methods take the sweep from their caller (default 0); `sweep_dependent` says whether the data
depend on it, i.e. whether data read for one sweep may be reused in another. Random transforms run
only when the reader randomizes (`randomize`, default true; `set_randomization` lets the reader
pass its own setting and seed to a deserializer configured inside `deserializers = ( … )`);
otherwise crops are centred and unflipped and Color/Intensity are off (see transforms.py).
`cropType = MultiView10` makes 10 samples per image (consecutive sequences, keys `10 * key + view`).

Images are decoded and transformed in a thread pool: Pillow's decoders and resizers and NumPy's
array operations release the GIL, so large images decode in parallel (by default one thread per core
the process may use, at most 8; an MPI worker's share of the node, netlang/launcher.py); small ones are mostly Python work, so for samples under 96×96 pixels the default is one
thread (`num_threads` overrides both).
"""
from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image

from netlang.compiler.lang.settings import DeserializerSettings, StreamSettings
from netlang.errors import RELATIVE_PATH_HINT, ConfigError, DataError, DataPosition, suggest
from netlang.launcher import cores_per_worker
from netlang.readers.batch import ChunkData, DenseChunk, StreamInfo
from netlang.readers.factory import data_file, register_deserializer, resolve_path
from netlang.readers.transforms import (
    MULTIVIEW_COPIES,
    Crop,
    Mean,
    Scale,
    Transform,
    Transpose,
    legacy_transforms,
    parse_transform,
)

log = logging.getLogger("netlang.readers")

DEFAULT_IMAGES_PER_CHUNK = 128
# Decoding a small image is mostly Python work under the GIL, where a second thread only adds
# contention (benchmarks/bench_image_reader.py: 32x32 PNGs are faster on one thread, 224x224 ones
# nearly twice as fast on two); by default threads are used for samples of this many pixels or more.
THREADED_MIN_PIXELS = 96 * 96
MAX_DEFAULT_THREADS = 8


# ---- map files ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZipMember:
    archive: str
    member: str

    def __str__(self) -> str:
        return f"{self.archive}@/{self.member}"


@dataclass(frozen=True)
class InlineImage:
    """A base64 image inside the map file: where its text starts and how long it is."""

    offset: int
    length: int

    def __str__(self) -> str:
        return "the base64 image"


@dataclass
class MapFile:
    """The entries of a map file: where each image is, its label, key and line (1-based)."""

    path: str
    locations: list          # str (a file), ZipMember or InlineImage
    labels: np.ndarray
    keys: np.ndarray
    lines: np.ndarray
    positional: bool = False          # no line has a key: the keys are the lines' positions

    def __len__(self) -> int:
        return len(self.labels)

    def position(self, entry: int) -> DataPosition:
        return DataPosition(self.path, int(self.lines[entry]))


def read_map_file(path: str, *, inline_base64: bool = False) -> MapFile:
    """Index a map file (`[key<TAB>]path<TAB>label`, or `[key<TAB>]label<TAB>base64` when inline)."""
    directory = os.path.dirname(os.path.abspath(path))
    locations, labels, raw_keys, lines = [], [], [], []
    for line_no, offset, text in _lines(path):
        fields = text.split("\t")
        if len(fields) not in (2, 3):
            expected = "label<TAB>base64 image" if inline_base64 else "path<TAB>label"
            raise DataError(f"expected '{expected}', optionally after a sequence key and a tab; "
                            f"found {len(fields)} tab-separated field(s)", DataPosition(path, line_no),
                            hint="separate the fields with a single tab character")
        key = fields[0].strip() if len(fields) == 3 else None
        if inline_base64:
            label_text, payload = fields[-2], fields[-1]
            label_col = len(text) - len(payload) - len(label_text)
            payload_start = offset + len(text.encode("utf-8")) - len(payload.encode("utf-8"))
            locations.append(InlineImage(payload_start, len(payload.encode("utf-8"))))
        else:
            image, label_text = fields[-2], fields[-1]
            label_col = len(text) - len(label_text)
            if not image.strip():
                raise DataError("the image path is empty", DataPosition(path, line_no))
            locations.append(_locate(image, directory))
        labels.append(_label(label_text, DataPosition(path, line_no, label_col + 1)))
        raw_keys.append(key)
        lines.append(line_no)
    if not labels:
        raise DataError("the map file lists no images", DataPosition(path))
    keys = _sequence_keys(raw_keys, lines, path)
    return MapFile(path, locations, np.array(labels, dtype=np.int64), keys, np.array(lines, dtype=np.int64),
                   positional=all(key is None for key in raw_keys))


def _lines(path: str):
    """(line number, byte offset, text without the line end) of every non-blank line."""
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise DataError(f"cannot open the map file: {err.strerror or err}", DataPosition(path),
                        hint=f"check the reader's 'file'; {RELATIVE_PATH_HINT}") from None
    with fh:
        offset = 0
        for line_no, raw in enumerate(fh, start=1):
            start, offset = offset, offset + len(raw)
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw, start = raw[3:], start + 3
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataError(f"the line is not valid UTF-8 ({err.reason})",
                                DataPosition(path, line_no, err.start + 1)) from None
            if text.strip():
                yield line_no, start, text


def _locate(image: str, directory: str):
    """A map file's image reference → a file path or a zip member (see the module docstring)."""
    at = image.lower().find(".zip@")
    if at >= 0:
        archive, member = image[:at + 4], image[at + 5:]
        return ZipMember(_resolve(archive, directory), member.lstrip("/\\"))
    return _resolve(image, directory)


def _resolve(path: str, directory: str) -> str:
    if path.startswith("..."):
        return os.path.normpath(directory + os.sep + path[3:].lstrip("/\\"))
    return resolve_path(path, directory)


def _label(text: str, position: DataPosition) -> int:
    try:
        label = int(text.strip())
    except ValueError:
        raise DataError(f"the label '{text.strip()}' is not a whole number", position,
                        hint="labels are 0-based class indices") from None
    if label < 0:
        raise DataError(f"the label {label} is negative", position, hint="labels are 0-based class indices")
    return label


def _sequence_keys(raw: list, lines: list, path: str) -> np.ndarray:
    """Line order when no line has a key; the keys (numbers when all are) when every line has one."""
    given = [k is not None for k in raw]
    if not any(given):
        return np.arange(len(raw), dtype=np.int64)
    if not all(given):
        line = lines[given.index(False)]
        raise DataError("this line has no sequence key, but others do", DataPosition(path, line),
                        hint="give every line a key, or none")
    try:
        keys = np.array([int(k) for k in raw], dtype=np.int64)
    except ValueError:
        keys = np.array(raw, dtype=str)
    order = np.argsort(keys, kind="stable")
    repeated = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if len(repeated):
        line = lines[order[repeated[0] + 1]]
        raise DataError(f"the sequence key '{keys[order][repeated[0]]}' appears twice", DataPosition(path, line),
                        hint="sequence keys must be unique")
    return keys


# ---- reading image bytes -------------------------------------------------------------------------

class _ThreadHandles:
    """Open zip archives, one set per thread (a ZipFile must not be shared between threads)."""

    def __init__(self):
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list = []

    def get(self, path: str, opener):
        handles = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = {}
        handle = handles.get(path)
        if handle is None:
            handle = handles[path] = opener(path)
            with self._lock:
                self._all.append(handle)
        return handle

    def close(self) -> None:
        with self._lock:
            for handle in self._all:
                handle.close()
            self._all.clear()
        self._local = threading.local()


def _read_file(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


# ---- the deserializer ----------------------------------------------------------------------------

class ImageDeserializer:
    """Images of a map file with their one-hot labels, transformed (see the module docstring)."""

    def __init__(self, map_path: str, transforms: list[Transform], label_dim: int, *,
                 features_name: str = "features", labels_name: str = "labels", randomize: bool = True,
                 seed: int = 0, dtype=np.float32, num_threads: int | None = None,
                 images_per_chunk: int = DEFAULT_IMAGES_PER_CHUNK, inline_base64: bool = False):
        self.description = f"image map file {map_path}"
        self._map = read_map_file(map_path, inline_base64=inline_base64)
        self._check_labels(label_dim)
        self._transforms = list(transforms)
        self._check_transpose_is_last()
        self._channels = _decode_channels(self._transforms)
        self._views = MULTIVIEW_COPIES if any(isinstance(t, Crop) and t.kind == "multiview10"
                                              for t in self._transforms) else 1
        self._names = (features_name, labels_name)
        self._label_dim = label_dim
        self._dtype = np.dtype(dtype)
        self._randomize, self._seed = randomize, seed
        self._per_chunk = max(1, images_per_chunk)
        self._handles = _ThreadHandles()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._shape = self._output_shape()
        self._num_threads = max(1, num_threads if num_threads is not None else self._default_threads())

    # -- the Deserializer interface -------------------------------------------------------------

    def stream_infos(self) -> list[StreamInfo]:
        return [StreamInfo(self._names[0], self._shape), StreamInfo(self._names[1], (self._label_dim,))]

    @property
    def positional_keys(self) -> bool:
        return self._map.positional

    @property
    def num_sequences(self) -> int:
        return len(self._map) * self._views

    def num_chunks(self) -> int:
        return -(-self.num_sequences // self._per_chunk)

    def chunk_keys(self, chunk: int) -> np.ndarray:
        sequences = self._chunk_range(chunk)
        keys = self._map.keys[sequences // self._views]
        if self._views == 1:
            return keys
        views = sequences % self._views
        if keys.dtype.kind == "i":
            return keys * self._views + views
        return np.array([f"{k}/{v}" for k, v in zip(keys, views)], dtype=str)

    def chunk_sizes(self, chunk: int) -> np.ndarray:
        return np.ones(len(self._chunk_range(chunk)), dtype=np.int64)

    def read_chunk(self, chunk: int, sweep: int = 0) -> ChunkData:
        """Decode and transform the chunk's images; `sweep` selects the random draws (see above)."""
        return self._read(self._chunk_range(chunk), sweep)

    def read_sequences(self, chunks: np.ndarray, positions: np.ndarray, sweep: int = 0) -> ChunkData:
        """Decode and transform only the images at `positions[i]` of chunk `chunks[i]`, in that order
        (what one minibatch needs; see the module docstring)."""
        chunks, positions = np.asarray(chunks, dtype=np.int64), np.asarray(positions, dtype=np.int64)
        sequences = chunks * self._per_chunk + positions
        outside = ((chunks < 0) | (positions < 0) | (positions >= self._per_chunk)
                   | (sequences >= self.num_sequences))
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise IndexError(f"chunk {int(chunks[i])} has no sequence {int(positions[i])}")
        return self._read(sequences, sweep)

    def _read(self, sequences: np.ndarray, sweep: int) -> ChunkData:
        """Sequences `sequences` (in that order), decoded and transformed in the thread pool."""
        images = np.empty((len(sequences),) + self._shape, dtype=self._dtype)

        def load(part: np.ndarray) -> None:
            for i in part.tolist():
                images[i] = self.sample(int(sequences[i]), sweep)

        # Decoded in map order: files are read in the order they were listed, and of several bad
        # images the first in the map file is reported. One contiguous run per thread (fewer hand-overs
        # than a task per image); list() re-raises the failure of the first run that failed.
        order = np.argsort(sequences, kind="stable")
        size = max(1, -(-len(order) // self._num_threads))
        parts = [order[start:start + size] for start in range(0, len(order), size)]
        if len(parts) == 1:
            load(parts[0])
        elif parts:
            list(self._executor().map(load, parts))
        labels = np.zeros((len(sequences), self._label_dim), dtype=self._dtype)
        labels[np.arange(len(sequences)), self._map.labels[sequences // self._views]] = 1
        offsets = np.arange(len(sequences) + 1, dtype=np.int64)
        return ChunkData({self._names[0]: DenseChunk(images, offsets), self._names[1]: DenseChunk(labels, offsets)},
                         np.ones(len(sequences), dtype=bool))

    # -- samples --------------------------------------------------------------------------------

    def sample(self, index: int, sweep: int = 0) -> np.ndarray:
        """Sequence `index`'s features as the stream carries them (the transform chain's output)."""
        entry, view = divmod(index, self._views)
        rng = np.random.default_rng([self._seed, sweep, index]) if self._randomize else None
        image = self._transformed(entry, view, rng)
        if image.shape != self._shape:
            raise DataError(f"image '{self._map.locations[entry]}' comes out {_shape_text(image.shape)}, but the "
                            f"stream's samples are {_shape_text(self._shape)}", self._map.position(entry),
                            hint="end the transforms with a Scale so that every image gets the same size")
        return image

    @property
    def sweep_dependent(self) -> bool:
        """Whether `read_chunk` gives different data for different sweeps (random transforms while
        randomizing); when False a chunk's data can be cached across sweeps."""
        return self._randomize and any(t.is_random for t in self._transforms)

    def set_randomization(self, randomize: bool, seed: int) -> None:
        """Follow the reader's `randomize` and `randomizationSeed` (a composite reader sets them here)."""
        self._randomize, self._seed = bool(randomize), int(seed)

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        self._handles.close()

    def _transformed(self, entry: int, view: int, rng) -> np.ndarray:
        image = self._decode(entry)
        for transform in self._transforms:
            image = transform.apply(image, rng, view)
        return image

    def _decode(self, entry: int) -> np.ndarray:
        where = self._map.locations[entry]
        data = self._image_bytes(entry)
        try:
            with Image.open(io.BytesIO(data)) as img:
                mode = "L" if self._channels == 1 else "RGB"
                pixels = np.asarray(img if img.mode == mode else img.convert(mode))
        except Exception as err:  # noqa: BLE001 - Pillow raises many kinds; all mean a bad image
            raise DataError(f"cannot decode image '{where}': {err or type(err).__name__}", self._map.position(entry),
                            hint="the file is damaged or not an image format Pillow reads") from None
        return pixels[:, :, None] if pixels.ndim == 2 else pixels[:, :, ::-1]   # RGB → BGR

    def _image_bytes(self, entry: int) -> bytes:
        where = self._map.locations[entry]
        position = self._map.position(entry)
        if isinstance(where, ZipMember):
            try:
                archive = self._handles.get(where.archive, zipfile.ZipFile)
            except (OSError, zipfile.BadZipFile) as err:
                raise DataError(f"cannot open zip archive '{where.archive}': {getattr(err, 'strerror', None) or err}",
                                position) from None
            try:
                return archive.read(where.member)
            except KeyError:
                raise DataError(f"zip archive '{where.archive}' has no member '{where.member}'", position,
                                hint=suggest(where.member, archive.namelist()) or
                                "the part after '@' is the path inside the archive") from None
            except (OSError, zipfile.BadZipFile, RuntimeError) as err:
                raise DataError(f"cannot read '{where}': {err}", position) from None
        if isinstance(where, InlineImage):
            try:
                with open(self._map.path, "rb") as fh:      # opening per image costs little next to decoding
                    fh.seek(where.offset)
                    text = fh.read(where.length)
            except OSError as err:
                raise DataError(f"cannot read the map file: {err.strerror or err}", position) from None
            try:
                return base64.b64decode(text, validate=False)
            except (binascii.Error, ValueError) as err:
                raise DataError(f"the image is not valid base64 ({err})", position) from None
        try:
            return _read_file(where)
        except OSError as err:
            raise DataError(f"cannot read image '{where}': {err.strerror or err}", position,
                            hint="a relative path is resolved against the map file's directory") from None

    # -- construction helpers -------------------------------------------------------------------

    def _chunk_range(self, chunk: int) -> np.ndarray:
        if not 0 <= chunk < self.num_chunks():
            raise IndexError(f"chunk {chunk} is out of range 0..{self.num_chunks() - 1}")
        start = chunk * self._per_chunk
        return np.arange(start, min(start + self._per_chunk, self.num_sequences), dtype=np.int64)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._num_threads, thread_name_prefix="netlang-image")
            return self._pool

    def _default_threads(self) -> int:
        channels_last = not (self._transforms and isinstance(self._transforms[-1], Transpose))
        pixels = int(np.prod(self._shape[:2] if channels_last else self._shape[1:]))
        return min(MAX_DEFAULT_THREADS, cores_per_worker()) if pixels >= THREADED_MIN_PIXELS else 1

    def _check_labels(self, label_dim: int) -> None:
        too_big = np.flatnonzero(self._map.labels >= label_dim)
        if len(too_big):
            entry = int(too_big[0])
            raise DataError(f"the label {int(self._map.labels[entry])} is not below labelDim = {label_dim}",
                            self._map.position(entry), hint="labels are 0-based: 0 … labelDim-1")

    def _check_transpose_is_last(self) -> None:
        for transform in self._transforms[:-1]:
            if isinstance(transform, Transpose):
                raise ConfigError("Transpose must be the last transform",
                                  hint="the other transforms work on H×W×C images; Transpose makes them C×H×W")

    def _output_shape(self) -> tuple[int, ...]:
        """The shape of every sample: known from the last Scale, else from the first image."""
        size = None                                   # (H, W, C) while it is known without decoding
        for transform in self._transforms:
            if isinstance(transform, Scale):
                size = (transform.height, transform.width, transform.channels)
            elif isinstance(transform, Crop):
                size = None
            elif isinstance(transform, Mean) and size is not None and size != transform.mean.shape:
                raise ConfigError(f"the mean file {transform.path} holds a {_shape_text(transform.mean.shape)} "
                                  f"image, but the Scale before Mean makes {_shape_text(size)}",
                                  hint="scale to the size the mean file was computed at")
        if size is None:
            return tuple(self._transformed(0, 0, None).shape)
        if self._transforms and isinstance(self._transforms[-1], Transpose):
            return (size[2], size[0], size[1])
        return size


def _decode_channels(transforms: list[Transform]) -> int:
    """Decode greyscale when the Scale transforms ask for one channel, colour otherwise."""
    channels = {t.channels for t in transforms if isinstance(t, Scale)}
    if len(channels) > 1:
        raise ConfigError("the Scale transforms ask for different numbers of channels",
                          hint="give every Scale the same 'channels'")
    return channels.pop() if channels else 3


def _shape_text(shape: tuple) -> str:
    return "×".join(str(d) for d in shape)


# ---- the config blocks ---------------------------------------------------------------------------

def build_image_deserializer(settings: DeserializerSettings, base_dir: str, dtype, *, inline_base64: bool = False
                             ) -> ImageDeserializer:
    """An image deserializer from a composite `deserializers` entry (`file`, `input = [ features =
    [ transforms = ( … ) ] ; labels = [ labelDim ] ]`) or a legacy `ImageReader` block (`file`,
    `features = [ width ; height ; channels ; cropType … ]`, `labels = [ labelDim ]`). The reader
    sets its randomization (`set_randomization`)."""
    map_path = data_file(settings, base_dir)
    legacy = settings.legacy_streams
    features, labels = _image_and_label_streams(settings)
    transforms = _feature_transforms(features, base_dir, legacy)
    try:
        deserializer = ImageDeserializer(map_path, transforms, labels.dim, features_name=features.name,
                                         labels_name=labels.name, dtype=dtype, inline_base64=inline_base64)
    except ConfigError as err:
        if err.span is not None:
            raise
        # A chain the deserializer cannot run (Transpose not last, mixed channels) is the stream's.
        source = features.source("transforms")
        raise type(err)(err.message, source.span, hint=err.hint, key=source.path) from None
    if legacy:
        _check_declared_shape(features, deserializer)
    elif not any(isinstance(t, Transpose) for t in transforms):
        log.warning("%s: the transforms of stream '%s' do not end with Transpose, so its samples are H×W×C; "
                    "a W:H:C network input expects C×H×W: add [ type = \"Transpose\" ]", map_path, features.name)
    return deserializer


def _image_and_label_streams(settings: DeserializerSettings) -> tuple[StreamSettings, StreamSettings]:
    """The label stream is the one with `labelDim` (or `dim`); the other one holds the images."""
    images, labels = [], []
    for stream in settings.streams.values():
        (labels if stream.given("dim") else images).append(stream)
    if len(images) != 1 or len(labels) != 1:
        raise settings.block_error(f"an image reader has one image stream and one label stream; found "
                                   f"{len(images)} without and {len(labels)} with labelDim",
                                   hint="features = [ transforms = ( … ) ] ; labels = [ labelDim = 10 ]")
    return images[0], labels[0]


def _feature_transforms(features: StreamSettings, base_dir: str, legacy: bool) -> list[Transform]:
    if features.transforms is None:
        return legacy_transforms(features, base_dir) if legacy else []
    chain = [transform for record in features.transforms for transform in parse_transform(record, base_dir)]
    if legacy and not (chain and isinstance(chain[-1], Transpose)):
        chain.append(Transpose())                   # the legacy reader always delivers C×H×W
    return chain


def _check_declared_shape(features: StreamSettings, deserializer: ImageDeserializer) -> None:
    """A legacy block's width/height/channels must describe what its transforms make."""
    if not all(features.given(k) for k in ("width", "height", "channels")):
        return
    declared = (features.channels, features.height, features.width)
    actual = deserializer.stream_infos()[0].shape
    if declared != actual:
        raise features.block_error(f"width × height × channels declare C×H×W = {_shape_text(declared)}, but the "
                                   f"transforms make {_shape_text(actual)}",
                                   hint="end the transforms with a Scale to width × height × channels")


register_deserializer("ImageDeserializer", build_image_deserializer)
register_deserializer("Base64ImageDeserializer", partial(build_image_deserializer, inline_base64=True))
