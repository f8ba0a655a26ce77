"""HTK features and MLF labels: `HTKFeatureDeserializer`, `HTKMLFDeserializer`, the legacy `HTKMLFReader`.

Reference §5.5 (HTK part). The formats:

* **HTK feature file**: a 12-byte header (`nSamples` int32, `sampPeriod` int32 in 100 ns units,
  `sampSize` int16 bytes per frame, `parmKind` int16: a base kind such as MFCC or FBANK plus
  qualifier bits `_E _D _A …`), then `nSamples` frames of `sampSize / 4` float32 values each. HTK
  writes big-endian; a little-endian file is recognised by its header (the size it announces must
  fit the file). Kinds whose frames are not float32 vectors (WAVEFORM, IREFC, DISCRETE, compressed
  `_C`, VQ `_V`) are refused.
* **SCP list**: one utterance per line, `path`, `path[start,end]` (frames `start` to `end`, both
  included, of an archive holding many utterances) or `logicalName=path[start,end]`. The
  utterance's key is the logical name (else the path) without directories and extension. A path
  starting with `...` is relative to the SCP file's directory, and so is any other relative path,
  unless the stream sets `prefixPathInSCP` (prepended; a relative prefix is taken from the working
  directory).
* **MLF**: `#!MLF!#`, then per utterance a quoted name line (`"*/name.lab"`, keyed like the SCP by
  its base name without extension), lines `begin end label …` (times in 100 ns units; only the first
  three columns are read) and a `.` line. Segments must follow each other without gaps from time 0.
  Frame `t` is the 10 ms from `t * 100000`; a segment covers the frames its rounded times enclose.
  Several MLF files: `mlfFile` and/or `mlfFileList` (a file naming one MLF per line). Labels are
  numbered by `labelMappingFile` (one label per line, line k = class k) and delivered one-hot.

Streams of features and labels are joined on the utterance key by the minibatch source. Before the
source is built, the reader calls `align_with` on each deserializer: the MLF deserializer checks
that every utterance of every feature list has labels and the same number of frames as its features,
and keeps only the labelled utterances that have features (an MLF often covers a whole corpus).

**Context windows.** `contextWindow = n` (odd) puts `(n - 1) / 2` frames either side of each frame,
`contextWindow = left:right` chooses them; at an utterance's edges the first or last frame is
repeated. The sample is the frames `t - left … t + right` one after the other, so `dim` is the
file's dimension times the window (11 frames of 33 values: `dim = 363`). Windows are built when a
minibatch takes its frames (`FeatureFrames.take`): a chunk keeps its frames once, not eleven times.

**Frame mode.** With the reader's `frameMode = true` (the legacy HTKMLFReader's default), every
frame is a sequence of its own, keyed `utterance#t`, so the randomizer shuffles frames, not
utterances, and a minibatch is `minibatchSize` frames from all over the window. Otherwise an
utterance is one sequence (recurrent networks; truncated BPTT cuts it into windows).

Utterances are grouped into chunks of about `FRAMES_PER_CHUNK` frames (the unit of reading and of
block randomization); `randomize = <n>` makes windows of about n frames.
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass

import numpy as np

from netlang.compiler.lang.settings import DeserializerSettings, StreamSettings
from netlang.errors import DataError, DataPosition, suggest
from netlang.readers.batch import ChunkData, DenseChunk, StreamInfo, offsets_of, select_blocks
from netlang.readers.factory import register_deserializer, resolve_path

log = logging.getLogger("netlang.readers")

# About 5.5 minutes of speech at 10 ms: small enough that a window in frames can be a few chunks,
# large enough that a chunk is read with few file opens from an archive.
FRAMES_PER_CHUNK = 32768
MLF_HEADER = "#!MLF!#"
MLF_FRAME_PERIOD = 100000        # 10 ms in HTK's 100 ns units: MLF times are counted in these frames
HEADER_BYTES = 12

BASE_KINDS = ("WAVEFORM", "LPC", "LPREFC", "LPCEPSTRA", "LPDELCEP", "IREFC", "MFCC", "FBANK", "MELSPEC",
              "USER", "DISCRETE", "PLP", "ANON")
QUALIFIERS = ((0o100, "E"), (0o200, "N"), (0o400, "D"), (0o1000, "A"), (0o2000, "C"), (0o4000, "Z"),
              (0o10000, "K"), (0o20000, "0"), (0o40000, "V"), (0o100000, "T"))
_NOT_FLOAT_KINDS = {"WAVEFORM": "16-bit samples", "IREFC": "16-bit reflection coefficients",
                    "DISCRETE": "vector-quantised indices"}
_NOT_FLOAT_QUALIFIERS = {"C": "compressed 16-bit values", "V": "vector-quantisation indices"}


def kind_name(kind: int) -> str:
    """HTK's name of a parameter kind code, e.g. 0o2506 → `MFCC_E_D_A`."""
    base = kind & 0o77
    name = BASE_KINDS[base] if base < len(BASE_KINDS) else f"kind {base}"
    return name + "".join(f"_{q}" for bit, q in QUALIFIERS if kind & bit)


def utterance_key(name: str) -> str:
    """The key that joins features and labels: the name without directories and extension."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, _ = base.rpartition(".")
    return stem if dot and stem else base


# ---- feature files -----------------------------------------------------------------------------

@dataclass(frozen=True)
class HTKHeader:
    frames: int
    period: int          # 100 ns units
    sample_bytes: int
    kind: int
    big_endian: bool

    @property
    def dim(self) -> int:
        return self.sample_bytes // 4

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(">f4" if self.big_endian else "<f4")


def _header_fits(frames: int, period: int, sample_bytes: int, file_bytes: int) -> bool:
    # An archive holds exactly its frames; a checksum (_K) may add two bytes after them.
    return frames > 0 and period > 0 and sample_bytes > 0 and \
        HEADER_BYTES + frames * sample_bytes <= file_bytes <= HEADER_BYTES + frames * sample_bytes + 2


def read_header(path: str, where: str) -> HTKHeader:
    """The header of HTK feature file `path`; `where` names the utterance for errors. Refuses a
    header that does not fit the file and kinds whose frames are not float32 vectors."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(HEADER_BYTES)
            file_bytes = os.fstat(fh.fileno()).st_size
    except OSError as err:
        raise DataError(f"cannot open the feature file of {where}: {err.strerror or err}", DataPosition(path),
                        hint="the SCP file names it; a relative path is taken from the SCP file's directory") from None
    if len(raw) < HEADER_BYTES:
        raise DataError(f"bad HTK header ({where}): the file has {len(raw)} bytes, a header needs 12",
                        DataPosition(path))
    big = struct.unpack(">iihh", raw)
    little = struct.unpack("<iihh", raw)
    if _header_fits(big[0], big[1], big[2], file_bytes):
        fields, big_endian = big, True
    elif _header_fits(little[0], little[1], little[2], file_bytes):
        fields, big_endian = little, False
    else:
        frames, period, sample_bytes, _ = big
        raise DataError(f"bad HTK header ({where}): {frames} frames of {sample_bytes} bytes every {period} "
                        f"× 100 ns do not fit a file of {file_bytes} bytes (either byte order)",
                        DataPosition(path), hint="is this an HTK feature file? its header is nSamples, "
                                                 "sampPeriod (int32), sampSize, parmKind (int16)")
    header = HTKHeader(fields[0], fields[1], fields[2], fields[3] & 0xFFFF, big_endian)
    _check_kind(header, path, where)
    return header


def _check_kind(header: HTKHeader, path: str, where: str) -> None:
    name = kind_name(header.kind)
    base = BASE_KINDS[header.kind & 0o77] if (header.kind & 0o77) < len(BASE_KINDS) else None
    qualifiers = [q for bit, q in QUALIFIERS if header.kind & bit and q in _NOT_FLOAT_QUALIFIERS]
    if base is None or base in _NOT_FLOAT_KINDS or qualifiers:
        what = _NOT_FLOAT_KINDS.get(base) or (_NOT_FLOAT_QUALIFIERS[qualifiers[0]] if qualifiers else "unknown")
        raise DataError(f"unsupported HTK parameter kind {name} ({where}): its frames hold {what}",
                        DataPosition(path), hint="write float features (e.g. FBANK, MFCC, PLP, USER) without _C or _V, "
                                                 "e.g. with HCopy and a target kind without _C")
    if header.sample_bytes % 4:
        raise DataError(f"bad HTK header ({where}): {header.sample_bytes} bytes per frame is not a number of "
                        f"float32 values ({name})", DataPosition(path))


def read_frames(path: str, header: HTKHeader, start: int, count: int) -> np.ndarray:
    """Frames `start … start + count - 1` of a feature file, `(count, dim)` float32."""
    with open(path, "rb") as fh:
        fh.seek(HEADER_BYTES + start * header.sample_bytes)
        raw = fh.read(count * header.sample_bytes)
    if len(raw) != count * header.sample_bytes:
        raise DataError("the feature file is shorter than its header says (was it changed while reading?)",
                        DataPosition(path))
    return np.frombuffer(raw, dtype=header.dtype).reshape(count, header.dim).astype(np.float32)


# ---- SCP lists ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScpEntry:
    """One line of an SCP list: the utterance's key, its file, its frame range (`end` included; None:
    the whole file) and the line it is on."""

    key: str
    path: str
    start: int | None
    end: int | None
    scp: str
    line: int

    @property
    def where(self) -> str:
        return f"utterance '{self.key}', {self.scp}:{self.line}"


def parse_scp(scp_path: str, prefix: str | None = None) -> list[ScpEntry]:
    """The entries of an SCP file (blank lines skipped)."""
    text = _read_text(scp_path, "SCP file")
    directory = os.path.dirname(scp_path)
    entries = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line:
            entries.append(_scp_entry(line, scp_path, line_no, directory, prefix))
    if not entries:
        raise DataError("the SCP file lists no utterances", DataPosition(scp_path))
    return entries


def _scp_entry(line: str, scp_path: str, line_no: int, directory: str, prefix: str | None) -> ScpEntry:
    logical, eq, physical = line.partition("=")
    if not eq:
        logical, physical = "", line
    start = end = None
    if physical.endswith("]"):
        physical, bracket, frame_range = physical[:-1].rpartition("[")
        first, comma, last = frame_range.partition(",")
        if not bracket or not comma or not (first.strip().isdigit() and last.strip().isdigit()):
            raise DataError(f"bad frame range '[{frame_range}]'", DataPosition(scp_path, line_no),
                            hint="write name=path[start,end] with frame numbers, end included")
        start, end = int(first), int(last)
        if end < start:
            raise DataError(f"the frame range [{start},{end}] ends before it starts", DataPosition(scp_path, line_no))
    if not physical or (eq and not logical):
        raise DataError(f"expected 'path', 'path[start,end]' or 'name=path[start,end]', found '{line}'",
                        DataPosition(scp_path, line_no))
    return ScpEntry(utterance_key(logical or physical), _physical_path(physical, directory, prefix),
                    start, end, scp_path, line_no)


def _physical_path(path: str, directory: str, prefix: str | None) -> str:
    if path.startswith("..."):
        return os.path.normpath(os.path.join(directory, path[3:].lstrip("/\\")))
    if prefix is not None:
        return os.path.normpath(os.path.join(prefix, path))
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(directory, path))


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return fh.read()
    except OSError as err:
        raise DataError(f"cannot read the {what}: {err.strerror or err}", DataPosition(path),
                        hint="a relative path in the config is taken from the working directory") from None
    except UnicodeDecodeError:
        raise DataError(f"the {what} is not UTF-8 text", DataPosition(path)) from None


# ---- MLF files and label lists -----------------------------------------------------------------

@dataclass
class MlfUtterance:
    """The labels of one utterance: a class index per frame, and where the utterance is written."""

    key: str
    labels: np.ndarray      # int32, one per frame
    mlf: str
    line: int

    @property
    def where(self) -> str:
        return f"utterance '{self.key}', {self.mlf}:{self.line}"


def read_label_mapping(path: str) -> list[str]:
    """The labels of a label mapping file, one per line: line k is class k."""
    labels = [line.strip() for line in _read_text(path, "label mapping file").splitlines() if line.strip()]
    seen: dict[str, int] = {}
    for k, label in enumerate(labels):
        if label in seen:
            raise DataError(f"label '{label}' is listed twice (classes {seen[label]} and {k})", DataPosition(path))
        seen[label] = k
    if not labels:
        raise DataError("the label mapping file lists no labels", DataPosition(path))
    return labels


def parse_mlf(path: str, classes: dict[str, int]) -> list[MlfUtterance]:
    """The utterances of an MLF file with their frame labels (class indices from `classes`)."""
    lines = _read_text(path, "MLF file").splitlines()
    first = next((k for k, line in enumerate(lines) if line.strip()), None)
    if first is None or lines[first].strip() != MLF_HEADER:
        raise DataError(f"an MLF file starts with {MLF_HEADER}", DataPosition(path, (first or 0) + 1),
                        hint="the first line of a master label file is #!MLF!#")
    utterances, current, segments = [], None, []
    for line_no, raw in enumerate(lines[first + 1:], start=first + 2):
        line = raw.strip()
        if not line:
            continue
        if current is None:
            current, segments = _mlf_name(line, path, line_no), []
            continue
        if line == ".":
            utterances.append(_mlf_utterance(current, segments, path, classes))
            current = None
            continue
        if line.startswith('"'):
            raise DataError(f"utterance '{current[0]}' (line {current[1]}) has no '.' line before the next name",
                            DataPosition(path, line_no), hint="end every utterance's labels with a line '.'")
        segments.append((line, line_no))
    if current is not None:
        raise DataError(f"utterance '{current[0]}' (line {current[1]}) has no '.' line: the file ends inside it",
                        DataPosition(path, len(lines)), hint="end every utterance's labels with a line '.'")
    return utterances


def _mlf_name(line: str, path: str, line_no: int) -> tuple[str, int]:
    if not (len(line) >= 2 and line.startswith('"') and line.endswith('"')):
        found = "a label file reference (-> or =>)" if ("->" in line or "=>" in line) else f"'{line}'"
        raise DataError(f"expected a quoted utterance name, found {found}", DataPosition(path, line_no),
                        hint='write "*/name.lab", the utterance\'s labels, then a line "."')
    return utterance_key(line[1:-1]), line_no


def _mlf_utterance(name: tuple[str, int], segments: list, path: str, classes: dict[str, int]) -> MlfUtterance:
    key, name_line = name
    where = f"utterance '{key}'"
    labels, frames = [], 0
    for text, line_no in segments:
        columns = text.split()
        if len(columns) < 3 or not (columns[0].isdigit() and columns[1].isdigit()):
            raise DataError(f"{where}: expected 'begin end label' (times in 100 ns units), found '{text}'",
                            DataPosition(path, line_no), hint="frame labels need the times of each segment")
        begin, end = ((int(c) + MLF_FRAME_PERIOD // 2) // MLF_FRAME_PERIOD for c in columns[:2])
        if int(columns[1]) < int(columns[0]):
            raise DataError(f"{where}: the segment ends ({columns[1]}) before it begins ({columns[0]})",
                            DataPosition(path, line_no))
        if begin != frames:
            raise DataError(f"{where}: the segment begins at frame {begin}, but the labels before it end at "
                            f"frame {frames}", DataPosition(path, line_no),
                            hint="segments must follow each other without gaps or overlaps, from time 0")
        label = columns[2]
        if label not in classes:
            raise DataError(f"{where}: label '{label}' is not in the label mapping file", DataPosition(path, line_no),
                            hint=suggest(label, classes, case_insensitive=False) or
                            "add it to the labelMappingFile (one label per line)")
        labels.append(np.full(end - begin, classes[label], dtype=np.int32))
        frames = end
    if frames == 0:
        raise DataError(f"{where} has no labelled frames", DataPosition(path, name_line))
    return MlfUtterance(key, np.concatenate(labels), path, name_line)


def mlf_paths(stream: StreamSettings, base_dir: str) -> list[str]:
    """The MLF files of a label stream: `mlfFile`, then those `mlfFileList` names."""
    paths = [resolve_path(stream.mlf_file, base_dir)] if stream.mlf_file else []
    if stream.mlf_file_list:
        listing = resolve_path(stream.mlf_file_list, base_dir)
        directory = os.path.dirname(listing)
        paths += [resolve_path(line.strip(), directory)
                  for line in _read_text(listing, "MLF file list").splitlines() if line.strip()]
    return paths


# ---- context windows ---------------------------------------------------------------------------

def context_window(stream: StreamSettings) -> tuple[int, int]:
    """(frames left, frames right) of `contextWindow = n` (odd) or `left:right`; (0, 0) by default."""
    window = stream.context_window
    if window is None:
        return 0, 0
    if len(window) == 1:
        n = window[0]
        if n < 1 or n % 2 == 0:
            raise stream.error("contextWindow", f"contextWindow = {n} has no centre frame",
                               hint="give an odd number of frames (11: 5 either side) or left:right (e.g. 5:5)")
        return (n - 1) // 2, (n - 1) // 2
    if len(window) == 2:
        return int(window[0]), int(window[1])
    raise stream.error("contextWindow", f"contextWindow has {len(window)} values",
                       hint="give n (frames, odd) or left:right")


# ---- the frames of a chunk -----------------------------------------------------------------------

class ChunkFrames:
    """One stream's frames of a chunk, grouped into sequences (utterances, or single frames in frame
    mode). `take` makes the samples of the sequences a minibatch picks (context windows, one-hot
    labels), so the chunk holds each frame once."""

    def __init__(self, rows: np.ndarray, utterance_offsets: np.ndarray, frame_mode: bool):
        self.rows = rows
        self.utterance_offsets = utterance_offsets
        self.seq_offsets = np.arange(len(rows) + 1, dtype=np.int64) if frame_mode else utterance_offsets

    def lengths(self) -> np.ndarray:
        return np.diff(self.seq_offsets)

    def take(self, seqs: np.ndarray) -> DenseChunk:
        rows, lengths = select_blocks(self.seq_offsets, np.asarray(seqs, dtype=np.int64))
        return DenseChunk(self.samples(rows), offsets_of(lengths))

    def samples(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class FeatureFrames(ChunkFrames):
    """Feature frames; a sample is the frames `t - left … t + right` of its utterance, edges repeated."""

    def __init__(self, rows, utterance_offsets, frame_mode, left: int, right: int, dtype):
        super().__init__(rows, utterance_offsets, frame_mode)
        self.offsets = np.arange(-left, right + 1)
        self.dtype = dtype

    def samples(self, rows: np.ndarray) -> np.ndarray:
        if len(self.offsets) == 1:
            return self.rows[rows].astype(self.dtype, copy=False)
        utterance = np.searchsorted(self.utterance_offsets, rows, side="right") - 1
        first = self.utterance_offsets[utterance][:, None]
        last = self.utterance_offsets[utterance + 1][:, None] - 1
        window = np.clip(rows[:, None] + self.offsets[None, :], first, last)
        return self.rows[window].reshape(len(rows), -1).astype(self.dtype, copy=False)


class LabelFrames(ChunkFrames):
    """Frame labels (class indices); a sample is the one-hot vector of its frame's class."""

    def __init__(self, rows, utterance_offsets, frame_mode, dim: int, dtype):
        super().__init__(rows, utterance_offsets, frame_mode)
        self.dim = dim
        self.dtype = dtype

    def samples(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), self.dim), dtype=self.dtype)
        out[np.arange(len(rows)), self.rows[rows]] = 1
        return out


# ---- utterances, chunks and keys -----------------------------------------------------------------

class Utterances:
    """A deserializer's utterances in its order: keys, frame counts, chunks, and the sequence keys
    and sizes of a chunk in utterance or frame mode."""

    def __init__(self, keys: list[str], frames: np.ndarray):
        self.keys = np.array(keys, dtype=str) if keys else np.zeros(0, dtype="<U1")
        self.frames = np.asarray(frames, dtype=np.int64)
        self.frame_mode = False
        # An utterance opens a new chunk when the frames before it cross a multiple of FRAMES_PER_CHUNK.
        chunk_of = (np.cumsum(self.frames) - self.frames) // FRAMES_PER_CHUNK
        starts = np.flatnonzero(np.diff(chunk_of, prepend=-1) != 0)
        self.chunk_starts = np.concatenate([starts, [len(keys)]]).astype(np.int64)

    def num_chunks(self) -> int:
        return len(self.chunk_starts) - 1

    def of_chunk(self, chunk: int) -> range:
        return range(int(self.chunk_starts[chunk]), int(self.chunk_starts[chunk + 1]))

    def chunk_keys(self, chunk: int) -> np.ndarray:
        span = self.of_chunk(chunk)
        keys = self.keys[span.start:span.stop]
        if not self.frame_mode:
            return keys
        counts = self.frames[span.start:span.stop]
        steps = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.char.add(np.char.add(np.repeat(keys, counts), "#"), steps.astype(str))

    def chunk_sizes(self, chunk: int) -> np.ndarray:
        span = self.of_chunk(chunk)
        counts = self.frames[span.start:span.stop]
        return np.ones(int(counts.sum()), dtype=np.int64) if self.frame_mode else counts

    def keep(self, which: np.ndarray) -> "Utterances":
        """The utterances at positions `which`, in that order, chunked anew."""
        kept = Utterances(self.keys[which].tolist(), self.frames[which])
        kept.frame_mode = self.frame_mode
        return kept


# ---- the deserializers -------------------------------------------------------------------------------

class UtteranceChunks:
    """What both HTK deserializers answer from their `utterances`: chunks, sequence keys and sizes,
    and frame mode."""

    utterances: Utterances

    def set_frame_mode(self, on: bool) -> None:
        self.utterances.frame_mode = on

    def num_chunks(self) -> int:
        return self.utterances.num_chunks()

    def chunk_keys(self, chunk: int) -> np.ndarray:
        return self.utterances.chunk_keys(chunk)

    def chunk_sizes(self, chunk: int) -> np.ndarray:
        return self.utterances.chunk_sizes(chunk)


class HTKFeatureDeserializer(UtteranceChunks):
    """The feature stream of an SCP list (see the module docstring)."""

    def __init__(self, scp_path: str, name: str, dim: int | None, left: int = 0, right: int = 0, *,
                 prefix: str | None = None, dtype=np.float32):
        self.scp_path = scp_path
        self.description = scp_path
        self.name = name
        self.left, self.right = left, right
        self._dtype = np.dtype(dtype)
        self.entries = parse_scp(scp_path, prefix)
        self._check_unique_keys()
        self._headers: dict[str, HTKHeader] = {}
        frames = [self._frame_count(entry) for entry in self.entries]
        self.base_dim = self._common_dim()
        self.dim = dim if dim is not None else self.base_dim * (left + 1 + right)
        self.utterances = Utterances([e.key for e in self.entries], np.array(frames))

    # -- construction ---------------------------------------------------------------------------

    def _check_unique_keys(self) -> None:
        first: dict[str, ScpEntry] = {}
        for entry in self.entries:
            if entry.key in first:
                raise DataError(f"utterance '{entry.key}' is listed twice (first at line {first[entry.key].line})",
                                DataPosition(entry.scp, entry.line, stream=self.name),
                                hint="utterance names (without directory and extension) must be unique")
            first[entry.key] = entry

    def _frame_count(self, entry: ScpEntry) -> int:
        header = self._headers.get(entry.path)
        if header is None:
            header = self._headers[entry.path] = read_header(entry.path, entry.where)
        if entry.start is None:
            return header.frames
        if entry.end >= header.frames:
            raise DataError(f"{entry.where}: frames [{entry.start},{entry.end}] are beyond the {header.frames} "
                            f"frames of {entry.path}", DataPosition(entry.scp, entry.line, stream=self.name),
                            hint="frame ranges count from 0 and include their end")
        return entry.end - entry.start + 1

    def _common_dim(self) -> int:
        dims: dict[int, ScpEntry] = {}
        for entry in self.entries:
            dims.setdefault(self._headers[entry.path].dim, entry)
        if len(dims) > 1:
            (dim_a, a), (dim_b, b) = list(dims.items())[:2]
            raise DataError(f"{b.where}: its frames have {dim_b} values, but those of utterance '{a.key}' have "
                            f"{dim_a}", DataPosition(b.path, stream=self.name),
                            hint="all feature files of a stream need the same dimension")
        return next(iter(dims))

    # -- the deserializer interface ------------------------------------------------------------

    def stream_infos(self) -> list[StreamInfo]:
        return [StreamInfo(self.name, (self.dim,))]

    def read_chunk(self, chunk: int) -> ChunkData:
        span = self.utterances.of_chunk(chunk)
        parts = [self._read(self.entries[u]) for u in span]
        rows = np.concatenate(parts) if parts else np.zeros((0, self.base_dim), np.float32)
        offsets = offsets_of(self.utterances.frames[span.start:span.stop])
        frames = FeatureFrames(rows, offsets, self.utterances.frame_mode, self.left, self.right, self._dtype)
        return ChunkData({self.name: frames}, np.ones(len(frames.lengths()), dtype=bool))

    def _read(self, entry: ScpEntry) -> np.ndarray:
        header = self._headers[entry.path]
        start = entry.start or 0
        count = header.frames if entry.start is None else entry.end - entry.start + 1
        frames = read_frames(entry.path, header, start, count)
        bad = np.flatnonzero(~np.isfinite(frames).all(axis=1))
        if len(bad):
            raise DataError(f"{entry.where}: frame {int(bad[0])} holds a value that is not a finite number",
                            DataPosition(entry.path, record=start + int(bad[0]), stream=self.name),
                            hint="the features hold nan or inf; recompute them")
        return frames

    def utterance_frames(self) -> dict[str, tuple[int, ScpEntry]]:
        """Every utterance's frame count and SCP entry, by key."""
        return {e.key: (int(n), e) for e, n in zip(self.entries, self.utterances.frames)}


class HTKMLFDeserializer(UtteranceChunks):
    """The frame-label stream of one or more MLF files (see the module docstring)."""

    def __init__(self, mlf_paths: list[str], name: str, labels: list[str], *, dtype=np.float32):
        self.mlf_paths = list(mlf_paths)
        self.description = ", ".join(self.mlf_paths)
        self.name = name
        self.labels = labels
        self._dtype = np.dtype(dtype)
        classes = {label: k for k, label in enumerate(labels)}
        found: dict[str, MlfUtterance] = {}
        for path in self.mlf_paths:
            for utterance in parse_mlf(path, classes):
                if utterance.key in found:
                    raise DataError(f"utterance '{utterance.key}' has labels twice (first at {found[utterance.key].mlf}:"
                                    f"{found[utterance.key].line})", DataPosition(path, utterance.line, stream=name))
                found[utterance.key] = utterance
        if not found:
            raise DataError("the MLF files hold no utterances", DataPosition(self.description, stream=name))
        self.mlf = list(found.values())
        self.utterances = Utterances([u.key for u in self.mlf], np.array([len(u.labels) for u in self.mlf]))

    def stream_infos(self) -> list[StreamInfo]:
        return [StreamInfo(self.name, (len(self.labels),))]

    def align_with(self, deserializers) -> None:
        """Check every feature list's utterances against the labels (missing, different frame counts)
        and keep only the labelled utterances that have features."""
        lists = [d for d in deserializers if isinstance(d, HTKFeatureDeserializer)]
        if not lists:
            return
        by_key = {u.key: u for u in self.mlf}
        wanted: set[str] = set()
        for features in lists:
            for key, (frames, entry) in features.utterance_frames().items():
                labelled = by_key.get(key)
                if labelled is None:
                    raise DataError(f"{entry.where}: the utterance has no labels in {self.description}",
                                    DataPosition(entry.scp, entry.line, stream=self.name),
                                    hint=(suggest(key, by_key, case_insensitive=False) or
                                          "every utterance of the SCP list needs labels in the MLF") +
                                    "; the MLF name's base name without extension must equal the SCP's")
                if len(labelled.labels) != frames:
                    raise DataError(f"{labelled.where}: {len(labelled.labels)} label frames, but its features "
                                    f"({entry.path}, {entry.scp}:{entry.line}) have {frames} frames",
                                    DataPosition(labelled.mlf, labelled.line, stream=self.name),
                                    hint="the labels must cover the features frame by frame (MLF times in "
                                         "100 ns units, 10 ms frames)")
                wanted.add(key)
        which = np.array([k for k, u in enumerate(self.mlf) if u.key in wanted], dtype=np.int64)
        self.mlf = [self.mlf[k] for k in which]
        self.utterances = self.utterances.keep(which)

    def read_chunk(self, chunk: int) -> ChunkData:
        span = self.utterances.of_chunk(chunk)
        rows = np.concatenate([self.mlf[u].labels for u in span]) if len(span) else np.zeros(0, np.int32)
        offsets = offsets_of(self.utterances.frames[span.start:span.stop])
        frames = LabelFrames(rows, offsets, self.utterances.frame_mode, len(self.labels), self._dtype)
        return ChunkData({self.name: frames}, np.ones(len(frames.lengths()), dtype=bool))


# ---- from the reader settings ------------------------------------------------------------------------

def build_feature_deserializers(settings: DeserializerSettings, base_dir: str, dtype) -> list[HTKFeatureDeserializer]:
    """`type = "HTKFeatureDeserializer"`: one deserializer per stream of `input` (each has its own SCP)."""
    streams = list(settings.streams.values())
    if not streams:
        raise settings.block_error("the HTKFeatureDeserializer declares no streams",
                                   hint='input = [ features = [ scpFile = "train.scp" ; dim = 363 ; contextWindow = 11 ] ]')
    for stream in streams:
        if stream.scp_file is None:
            raise stream.block_error(f"stream '{stream.name}' of an HTKFeatureDeserializer needs scpFile",
                                     hint="labels from an MLF belong in an HTKMLFDeserializer" if stream.mlf_file
                                     else 'scpFile = "train.scp" lists the feature files')
    return [feature_deserializer(stream, base_dir, dtype) for stream in streams]


def build_label_deserializers(settings: DeserializerSettings, base_dir: str, dtype) -> list[HTKMLFDeserializer]:
    """`type = "HTKMLFDeserializer"`: one deserializer per stream of `input`."""
    streams = list(settings.streams.values())
    if not streams:
        raise settings.block_error("the HTKMLFDeserializer declares no streams",
                                   hint='input = [ labels = [ mlfFile = "train.mlf" ; labelMappingFile = '
                                        '"states.list" ; labelDim = 132 ] ]')
    for stream in streams:
        if stream.mlf_file is None and stream.mlf_file_list is None:
            raise stream.block_error(f"stream '{stream.name}' of an HTKMLFDeserializer needs mlfFile or mlfFileList",
                                     hint="features from an SCP list belong in an HTKFeatureDeserializer"
                                     if stream.scp_file else 'mlfFile = "train.mlf"')
    return [label_deserializer(stream, base_dir, dtype) for stream in streams]


def build_legacy_reader(settings: DeserializerSettings, base_dir: str, dtype) -> list:
    """`readerType = "HTKMLFReader"`: streams with scpFile are features, streams with mlfFile or
    mlfFileList are labels; the features come first, so the reader keeps the SCP order."""
    features, labels = [], []
    for stream in settings.streams.values():
        if stream.scp_file is not None:
            features.append(feature_deserializer(stream, base_dir, dtype))
        elif stream.mlf_file is not None or stream.mlf_file_list is not None:
            labels.append(label_deserializer(stream, base_dir, dtype))
        else:
            raise stream.block_error(f"stream '{stream.name}' has neither scpFile (features) nor mlfFile (labels)",
                                     hint='features = [ scpFile = "train.scp" ; dim = 363 ] ; labels = '
                                          '[ mlfFile = "train.mlf" ; labelMappingFile = "states.list" ; labelDim = 132 ]')
    if not features:
        raise settings.block_error("the HTKMLFReader has no feature stream (a block with scpFile)",
                                   hint='features = [ scpFile = "train.scp" ; dim = 363 ; contextWindow = 11 ]')
    return features + labels


def feature_deserializer(stream: StreamSettings, base_dir: str, dtype) -> HTKFeatureDeserializer:
    left, right = context_window(stream)
    prefix = resolve_path(stream.prefix_path_in_scp, base_dir) if stream.prefix_path_in_scp else None
    features = HTKFeatureDeserializer(resolve_path(stream.scp_file, base_dir), stream.name, stream.dim, left, right,
                                      prefix=prefix, dtype=dtype)
    window = left + 1 + right
    if stream.dim is not None and stream.dim != features.base_dim * window:
        raise stream.error("dim", f"dim = {stream.dim}, but the feature files have {features.base_dim} values per "
                                  f"frame and the context window is {window} frames: {features.base_dim * window}",
                           hint="dim counts the whole window: the files' dimension times contextWindow")
    return features


def label_deserializer(stream: StreamSettings, base_dir: str, dtype) -> HTKMLFDeserializer:
    if stream.phone_boundaries:
        raise stream.error("phoneBoundaries", "phoneBoundaries (sequence training) is not supported",
                           hint="remove phoneBoundaries; frame labels need no boundaries")
    if stream.label_type is not None and stream.label_type.lower() != "category":
        raise stream.error("labelType", f"labelType '{stream.label_type}' is not supported",
                           hint='MLF labels are classes: labelType = "category"')
    if stream.label_mapping_file is None:
        raise stream.block_error(f"stream '{stream.name}' needs labelMappingFile (the labels, one per line)",
                                 hint='labelMappingFile = "states.list"')
    labels = read_label_mapping(resolve_path(stream.label_mapping_file, base_dir))
    if stream.dim is not None and stream.dim != len(labels):
        raise stream.error("dim", f"labelDim = {stream.dim}, but the label mapping file lists {len(labels)} labels",
                           hint="labelDim is the number of classes, the lines of labelMappingFile")
    return HTKMLFDeserializer(mlf_paths(stream, base_dir), stream.name, labels, dtype=dtype)


register_deserializer("HTKFeatureDeserializer", build_feature_deserializers)
register_deserializer("HTKMLFDeserializer", build_label_deserializers)
register_deserializer("HTKMLFReader", build_legacy_reader)
