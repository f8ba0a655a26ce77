"""CNTKTextFormat (CTF): index a text file once, parse chunks of it on demand.

The format (reference/brainscript.md §5.5): one line per time step, an optional leading sequence id
(consecutive lines with the same id, or with no id after the first line of a sequence, form one
sequence; if the file's first line has no id, every line is its own sequence), then samples
`|name v1 v2 …` (dense: exactly `dim` numbers; sparse: `index:value` pairs) and comments `|# …`
running to the next `|` or the end of the line.

Reading happens in two stages, so files larger than memory work:

* `build_index` makes one pass over the raw bytes and records, per sequence, its key, its line count,
  its sample count and where it starts; sequences are grouped into chunks of about
  `chunk_size_bytes`.
* `CtfDeserializer.read_chunk` reads one chunk's bytes and parses them. The parse is bulk: a Python
  loop per line only splits the line into samples; the numbers of each stream are converted by one
  `numpy.loadtxt` call per chunk (as int32 first when no value has a '.', an exponent or nan/inf:
  integer text parses about twice as fast). When that fast path meets anything malformed, a slow,
  exact checker walks the chunk's lines to report each bad line with its column, and (under
  `maxErrors`) the bad lines are skipped and the fast path runs again without them.

Stricter than CNTK, on purpose: an unknown stream name is an error (CNTK skips it silently), a dense
sample with too few values is an error (CNTK pads it with zeros), a value that is not a finite number
in the reader's precision (`nan`, `inf`, `1e39` in float) is an error, and an invalid line is skipped
as a whole.

Streams that a network reads as a distribution (the labels of CrossEntropyWithSoftmax) may be soft
labels, but a row with a negative value or not summing to 1 cannot be one: the first such line is
reported once as a warning (`expect_distributions`).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from netlang.errors import RELATIVE_PATH_HINT, DataError, DataPosition, suggest
from netlang.readers.batch import ChunkData, DenseChunk, SparseChunk, StreamInfo

log = logging.getLogger("netlang.readers")

DEFAULT_CHUNK_SIZE = 32 * 1024 * 1024

_UTF8_BOM = b"\xef\xbb\xbf"
_BLANK = " \t\r\n\x0b\x0c"            # the characters bytes.isspace() knows, so index and parser agree
_ID_RE = re.compile(rb"[ \t]*(\d+)")
_TOKEN_RE = re.compile(r"[^ \t\r\n\x0b\x0c]+")
# What numpy.loadtxt accepts as a float, so the exact checker and the fast path agree.
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf|infinity)",
                        re.IGNORECASE | re.ASCII)
_SPARSE_RE = re.compile(r"(\d+):(.*)", re.ASCII)
_NOT_SPARSE_TOKEN_RE = re.compile(r"(?<!\S)(?!\d+:)\S", re.ASCII)


def _body_start(text: str) -> int:
    """Where the samples of a line begin: after `[ \\t]*` sequence id digits `[ \\t]*`."""
    return len(text) - len(text.lstrip(" \t").lstrip("0123456789").lstrip(" \t"))


@dataclass(frozen=True)
class CtfStream:
    """One stream as the reader config declares it (`input = [ name = [ dim ; format ; alias ] ]`)."""

    name: str
    dim: int
    is_sparse: bool = False
    alias: str | None = None
    defines_mb_size: bool = False

    def info(self) -> StreamInfo:
        return StreamInfo(self.name, (self.dim,), self.is_sparse, self.defines_mb_size)


# ---- the index ---------------------------------------------------------------------------------

@dataclass
class CtfIndex:
    """Where each sequence and chunk of a CTF file is.

    Chunk `c` covers bytes `chunk_offsets[c]:chunk_offsets[c+1]` and sequences
    `chunk_seqs[c]:chunk_seqs[c+1]`; `first_lines` are 1-based line numbers.
    """

    keys: np.ndarray
    sizes: np.ndarray
    line_counts: np.ndarray
    first_lines: np.ndarray
    chunk_offsets: np.ndarray
    chunk_seqs: np.ndarray
    positional: bool = False          # no sequence ids in the file: the keys are the sequences' positions

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_seqs) - 1


def _main_stream_pattern(streams: list[CtfStream]) -> re.Pattern | None:
    main = [s for s in streams if s.defines_mb_size]
    if not main:
        return None
    names = {main[0].name} | ({main[0].alias} if main[0].alias else set())
    alternatives = b"|".join(re.escape(n.encode()) for n in sorted(names))
    return re.compile(rb"\|(?:" + alternatives + rb")(?=[\s|]|$)")


def _open(path: str):
    try:
        return open(path, "rb")
    except OSError as err:
        raise DataError(f"cannot open data file: {err.strerror or err}", DataPosition(path),
                        hint=f"check the reader's 'file' path; {RELATIVE_PATH_HINT}") from None


def build_index(path: str, streams: list[CtfStream], *, chunk_size_bytes: int = DEFAULT_CHUNK_SIZE,
                skip_sequence_ids: bool = False) -> CtfIndex:
    """One pass over `path`: sequence boundaries, keys, sizes, and chunks of ~`chunk_size_bytes`."""
    main_re = _main_stream_pattern(streams)
    keys: list[int] = []
    sizes: list[int] = []
    line_counts: list[int] = []
    first_lines: list[int] = []
    chunk_offsets: list[int] = []
    chunk_seqs: list[int] = []
    use_ids = None            # decided by the first non-blank line
    current_key = None
    offset = 0
    with _open(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            start = offset
            offset += len(line)
            if line_no == 1:
                if line.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise DataError("the file is UTF-16 encoded", DataPosition(path, 1, 1),
                                    hint="save it as UTF-8 or ASCII")
                if line.startswith(_UTF8_BOM):
                    line, start = line[3:], start + 3
            if not line or line.isspace():
                continue
            if use_ids is None:
                use_ids = not skip_sequence_ids and _ID_RE.match(line) is not None
            key = None
            if use_ids:
                match = _ID_RE.match(line)
                key = int(match.group(1)) if match else None
                if key is not None and key >= 1 << 63:
                    raise DataError(f"sequence id {key} is too large", DataPosition(path, line_no, 1),
                                    hint="sequence ids must be below 2^63")
            samples = 1 if main_re is None else int(main_re.search(line) is not None)
            starts_sequence = not use_ids or not keys or (key is not None and key != current_key)
            if starts_sequence:
                if not chunk_offsets or start - chunk_offsets[-1] >= chunk_size_bytes:
                    chunk_offsets.append(start)
                    chunk_seqs.append(len(keys))
                keys.append(key if use_ids else len(keys))
                current_key = key
                sizes.append(samples)
                line_counts.append(1)
                first_lines.append(line_no)
            else:
                sizes[-1] += samples
                line_counts[-1] += 1
    if not keys:
        raise DataError("the data file holds no samples", DataPosition(path),
                        hint="the file is empty or has only blank lines")
    chunk_offsets.append(offset)
    chunk_seqs.append(len(keys))
    index = CtfIndex(np.array(keys, dtype=np.int64), np.array(sizes, dtype=np.int64),
                     np.array(line_counts, dtype=np.int64), np.array(first_lines, dtype=np.int64),
                     np.array(chunk_offsets, dtype=np.int64), np.array(chunk_seqs, dtype=np.int64),
                     positional=not use_ids)
    if use_ids:
        _check_unique_ids(path, index)
    return index


def _check_unique_ids(path: str, index: CtfIndex) -> None:
    order = np.argsort(index.keys, kind="stable")
    repeated = np.flatnonzero(index.keys[order][1:] == index.keys[order][:-1])
    if len(repeated) == 0:
        return
    first, again = order[repeated[0]], order[repeated[0] + 1]
    key = int(index.keys[again])
    raise DataError(
        f"sequence id {key} appears again (first used at line {index.first_lines[first]})",
        DataPosition(path, int(index.first_lines[again]), 1),
        hint="the lines of one sequence must be consecutive and ids must be unique")


# ---- the exact (slow) line checker -------------------------------------------------------------

class _Streams:
    """Stream lookup by name or alias, shared by the fast parser and the checker; `dtype` is the
    precision values are read in (a value too large for it is not finite)."""

    def __init__(self, streams: list[CtfStream], dtype=np.float32):
        self.list = list(streams)
        self.dtype = np.dtype(dtype)
        self.by_name: dict[str, int] = {}
        for i, s in enumerate(self.list):
            self.by_name[s.name] = i
            if s.alias:
                self.by_name[s.alias] = i


def check_line(text: str, path: str, line_no: int, streams: _Streams) -> DataError | None:
    """The first problem of one line, with its exact 1-based column, or None for a valid line."""
    def error(col: int, message: str, stream: str | None = None, hint: str | None = None):
        return DataError(message, DataPosition(path, line_no, col, stream=stream), hint=hint)

    start = _body_start(text)
    if start < len(text) and text[start] != "|":
        token = text[start:].split("|")[0].split()
        return error(start + 1, f"expected '|' before a stream name, found '{token[0] if token else text[start]}'",
                     hint="a line is an optional sequence id followed by samples '|name values…'")
    pipes = [i for i, ch in enumerate(text) if ch == "|"]
    seen: set[int] = set()
    for k, pipe in enumerate(pipes):
        segment = text[pipe + 1:pipes[k + 1] if k + 1 < len(pipes) else len(text)]
        if segment.startswith("#"):
            continue
        name_match = _TOKEN_RE.match(segment)
        if name_match is None:
            return error(pipe + 1, "expected a stream name right after '|'")
        name = name_match.group()
        sid = streams.by_name.get(name)
        if sid is None:
            return error(pipe + 2, f"unknown stream '{name}'",
                         hint=suggest(name, streams.by_name, case_insensitive=False) or
                         "the reader's 'input' block declares " + ", ".join(f"'{n}'" for n in streams.by_name))
        spec = streams.list[sid]
        if sid in seen:
            return error(pipe + 2, "the stream appears twice on this line", spec.name,
                         hint="a line holds at most one sample per stream")
        seen.add(sid)
        # finditer positions are relative to the segment, which starts at text[pipe + 1].
        tokens = [(pipe + 2 + m.start(), m.group()) for m in _TOKEN_RE.finditer(segment, len(name))]
        problem = (_check_sparse if spec.is_sparse else _check_dense)(tokens, spec, pipe + 1, streams.dtype)
        if problem is not None:
            return error(problem[0], problem[1], spec.name)
    if not seen:
        return error(1, "the line has no samples", hint="each line needs at least one '|name values…'")
    return None


def _check_dense(tokens, spec: CtfStream, sample_col: int, dtype):
    for col, token in tokens:
        if not _NUMBER_RE.fullmatch(token):
            return col, f"invalid number '{token}'"
        if not _finite(token, dtype):
            return col, f"'{token}' is not a finite number"
    if len(tokens) != spec.dim:
        return sample_col, f"expected {spec.dim} values, found {len(tokens)}"
    return None


def _check_sparse(tokens, spec: CtfStream, sample_col: int, dtype):
    for col, token in tokens:
        match = _SPARSE_RE.fullmatch(token)
        if match is None:
            return col, f"invalid sparse entry '{token}' (expected index:value)"
        if int(match.group(1)) >= spec.dim:
            return col, f"sparse index {int(match.group(1))} ≥ dim {spec.dim}"
        if not _NUMBER_RE.fullmatch(match.group(2)):
            return col + len(match.group(1)) + 1, f"invalid number '{match.group(2)}'"
        if not _finite(match.group(2), dtype):
            return col + len(match.group(1)) + 1, f"'{match.group(2)}' is not a finite number"
    return None


def _finite(token: str, dtype) -> bool:
    """Whether a number's text is finite once read in `dtype` (as the fast path reads it)."""
    with np.errstate(over="ignore"):
        return bool(np.isfinite(dtype.type(float(token))))


# ---- the fast chunk parser ---------------------------------------------------------------------

class _Malformed(Exception):
    """Raised by the fast path; the checker then finds out exactly what is wrong and where."""


def _split_samples(lines: list[str], keep: list[int], streams: _Streams):
    """Per stream: the value strings, and the ordinals (into `keep`) of the lines that carry them."""
    values: list[list[str]] = [[] for _ in streams.list]
    rows: list[list[int]] = [[] for _ in streams.list]
    last_line = [-1] * len(streams.list)
    by_name = streams.by_name
    dense = [not s.is_sparse for s in streams.list]
    for ordinal, li in enumerate(keep):
        segments = lines[li].lstrip(" \t").lstrip("0123456789").lstrip(" \t").split("|")
        if segments[0]:
            raise _Malformed
        found = False
        for segment in segments[1:]:
            if segment[:1] == "#":
                continue
            parts = segment.split(None, 1)
            if not parts or not segment.startswith(parts[0]):
                raise _Malformed
            sid = by_name.get(parts[0])
            if sid is None or last_line[sid] == ordinal:
                raise _Malformed
            last_line[sid] = ordinal
            found = True
            if len(parts) == 2:
                values[sid].append(parts[1])
            elif dense[sid]:
                raise _Malformed      # a dense sample without values (loadtxt would drop the row)
            else:
                values[sid].append("")
            rows[sid].append(ordinal)
        if not found:
            raise _Malformed
    return values, rows


def _looks_integral(values: list[str]) -> bool:
    return not any("." in v or "e" in v or "E" in v or "n" in v or "N" in v for v in values)


def _dense_rows(values: list[str], dim: int, dtype) -> np.ndarray:
    if not values:
        return np.zeros((0, dim), dtype=dtype)
    array = None
    if _looks_integral(values):
        # Integers (pixels, one-hot labels) parse about twice as fast as floats.
        try:
            array = np.loadtxt(values, dtype=np.int32, comments=None, ndmin=2).astype(dtype)
        except ValueError:
            array = None      # beyond int32, or malformed: the float parse decides
    if array is None:
        try:
            with np.errstate(over="ignore"):
                array = np.loadtxt(values, dtype=dtype, comments=None, ndmin=2)
        except ValueError:
            raise _Malformed from None
        if not np.isfinite(array).all():
            raise _Malformed          # nan, inf, or too large for the precision: the checker says where
    if array.shape != (len(values), dim):
        raise _Malformed
    return array


def _sparse_rows(values: list[str], dim: int, dtype):
    text = " ".join(values)
    if _NOT_SPARSE_TOKEN_RE.search(text):
        raise _Malformed          # a token that is not `digits:…`
    tokens = text.split()
    nnz = np.array([v.count(":") for v in values], dtype=np.int64)
    if len(tokens) != int(nnz.sum()):
        raise _Malformed
    pairs = np.zeros((0, 2))
    if tokens:
        try:
            pairs = np.loadtxt(tokens, dtype=np.float64, delimiter=":", comments=None, ndmin=2)
        except ValueError:
            raise _Malformed from None
        if pairs.shape != (len(tokens), 2) or np.any(pairs[:, 0] >= dim):
            raise _Malformed
    row_offsets = np.concatenate([[0], np.cumsum(nnz)]).astype(np.int64)
    with np.errstate(over="ignore"):
        values_read = pairs[:, 1].astype(dtype)
    if not np.isfinite(values_read).all():
        raise _Malformed
    return pairs[:, 0].astype(np.int32), values_read, row_offsets


def parse_lines(lines: list[str], keep: list[int], seq_of: np.ndarray, num_seqs: int,
                streams: _Streams, dtype) -> dict:
    """Fast path: parse lines `keep` (line `keep[i]` belongs to sequence `seq_of[i]`), or raise _Malformed."""
    values, rows = _split_samples(lines, keep, streams)
    out = {}
    for sid, spec in enumerate(streams.list):
        counts = np.bincount(seq_of[np.array(rows[sid], dtype=np.int64)], minlength=num_seqs)
        seq_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if spec.is_sparse:
            indices, vals, row_offsets = _sparse_rows(values[sid], spec.dim, dtype)
            out[spec.name] = SparseChunk(indices, vals, row_offsets, seq_offsets)
        else:
            out[spec.name] = DenseChunk(_dense_rows(values[sid], spec.dim, dtype), seq_offsets)
    return out


# ---- the deserializer --------------------------------------------------------------------------

class CtfDeserializer:
    """A CTF file as chunks of sequences (the deserializer interface of `readers/source.py`).

    `max_errors` invalid lines or sequences are skipped (with a warning) before the next one is an
    error; each chunk is charged once, however often it is read again.
    """

    def __init__(self, path: str, streams: list[CtfStream], *, chunk_size_bytes: int = DEFAULT_CHUNK_SIZE,
                 skip_sequence_ids: bool = False, max_errors: int = 0, dtype=np.float32):
        if not streams:
            raise ValueError("a CTF deserializer needs at least one stream")
        self.path = path
        self.description = path
        self._streams = _Streams(streams, dtype)
        self._max_errors = max_errors
        self._dtype = np.dtype(dtype)
        self._errors_by_chunk: dict[int, int] = {}
        self._distributions: dict[str, str] = {}     # stream -> the criterion that reads it as one
        self.index = build_index(path, streams, chunk_size_bytes=chunk_size_bytes,
                                 skip_sequence_ids=skip_sequence_ids)

    # -- the deserializer interface --------------------------------------------------------------

    def stream_infos(self) -> list[StreamInfo]:
        return [s.info() for s in self._streams.list]

    @property
    def positional_keys(self) -> bool:
        return self.index.positional

    def num_chunks(self) -> int:
        return self.index.num_chunks

    def chunk_keys(self, chunk: int) -> np.ndarray:
        s0, s1 = self._seq_range(chunk)
        return self.index.keys[s0:s1]

    def chunk_sizes(self, chunk: int) -> np.ndarray:
        s0, s1 = self._seq_range(chunk)
        return self.index.sizes[s0:s1]

    def expect_distributions(self, readers: dict[str, str]) -> None:
        """`readers` maps stream names (or aliases) to the node that reads them as a distribution
        (CrossEntropyWithSoftmax's labels): rows that cannot be one are reported once per stream."""
        self._distributions = {self._streams.list[self._streams.by_name[name]].name: node
                               for name, node in readers.items() if name in self._streams.by_name}

    def read_chunk(self, chunk: int) -> ChunkData:
        s0, s1 = self._seq_range(chunk)
        first_line = int(self.index.first_lines[s0])
        lines = self._read_lines(chunk)
        keep = [i for i, line in enumerate(lines) if line.strip(_BLANK)]
        seq_of = np.repeat(np.arange(s1 - s0), self.index.line_counts[s0:s1])
        if len(keep) != len(seq_of):
            raise DataError("the file changed while it was being read", DataPosition(self.path, first_line),
                            hint="do not modify a data file during training")
        line_errors: list[tuple[int, DataError]] = []
        try:
            streams = parse_lines(lines, keep, seq_of, s1 - s0, self._streams, self._dtype)
        except _Malformed:
            line_errors = self._check_lines(lines, keep, first_line)
            streams = self._parse_without(lines, keep, seq_of, s1 - s0, {o for o, _ in line_errors}, first_line)
        bad = {o for o, _ in line_errors}
        if self._distributions:
            self._check_distributions(streams, [li for o, li in enumerate(keep) if o not in bad], lines, first_line)
        kept_lines = np.bincount(seq_of[[o for o in range(len(keep)) if o not in bad]], minlength=s1 - s0)
        touched = {int(seq_of[o]) for o in bad}
        valid, seq_errors = self._check_sequences(streams, s0, kept_lines, touched)
        errors = [err for _, err in line_errors] + seq_errors
        self._charge(chunk, sorted(errors, key=lambda e: e.position.line))
        return ChunkData(streams, valid)

    # -- helpers --------------------------------------------------------------------------------

    def _seq_range(self, chunk: int) -> tuple[int, int]:
        return int(self.index.chunk_seqs[chunk]), int(self.index.chunk_seqs[chunk + 1])

    def _read_lines(self, chunk: int) -> list[str]:
        start, end = int(self.index.chunk_offsets[chunk]), int(self.index.chunk_offsets[chunk + 1])
        with _open(self.path) as fh:
            fh.seek(start)
            raw = fh.read(end - start)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = int(self.index.first_lines[self._seq_range(chunk)[0]]) + raw.count(b"\n", 0, err.start)
            raise DataError("the file is not valid UTF-8 text", DataPosition(self.path, line),
                            hint="CTF files are ASCII or UTF-8 text") from None
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        return text.split("\n")

    def _check_lines(self, lines: list[str], keep: list[int], first_line: int) -> list[tuple[int, DataError]]:
        errors = []
        for ordinal, li in enumerate(keep):
            err = check_line(lines[li], self.path, first_line + li, self._streams)
            if err is not None:
                errors.append((ordinal, err))
        return errors

    def _parse_without(self, lines, keep, seq_of, num_seqs, bad: set[int], first_line: int) -> dict:
        kept = [o for o in range(len(keep)) if o not in bad]
        try:
            return parse_lines(lines, [keep[o] for o in kept], seq_of[kept], num_seqs, self._streams, self._dtype)
        except _Malformed:
            raise DataError("could not parse this part of the file", DataPosition(self.path, first_line),
                            hint="the line checker found no error here; please report this") from None

    def _check_distributions(self, streams: dict, parsed: list[int], lines: list[str], first_line: int) -> None:
        for name in list(self._distributions):
            found = _first_non_distribution(streams[name])
            if found is None:
                continue
            row, reason = found
            node = self._distributions.pop(name)     # once per stream: the first line says enough
            line = first_line + _line_of_row(lines, parsed, name, row, self._streams)
            log.warning("%s:%d: warning: stream '%s': %s, so it is not a distribution, but %s reads it as one "
                        "(soft labels are fine: non-negative values that sum to 1)", self.path, line, name,
                        reason, node)

    def _check_sequences(self, streams: dict, s0: int, kept_lines: np.ndarray,
                         touched: set[int]) -> tuple[np.ndarray, list[DataError]]:
        """Every stream needs a sample in every sequence, and its lines may not outnumber its longest stream."""
        lengths = np.stack([streams[s.name].lengths() for s in self._streams.list])
        broken = (lengths == 0).any(axis=0) | (lengths.max(axis=0) < kept_lines)
        valid = ~broken
        errors = [self._sequence_error(s0 + int(i), lengths[:, i], int(kept_lines[i]))
                  for i in np.flatnonzero(broken) if int(i) not in touched]
        # A sequence that lost lines to maxErrors and is now incomplete is dropped without a new error.
        return valid, errors

    def _sequence_error(self, seq: int, lengths: np.ndarray, num_lines: int) -> DataError:
        line, key = int(self.index.first_lines[seq]), int(self.index.keys[seq])
        for s, n in zip(self._streams.list, lengths):
            if n == 0:
                return DataError(f"sequence {key} has no sample for stream '{s.name}'",
                                 DataPosition(self.path, line, stream=s.name),
                                 hint="every stream needs at least one sample in each sequence")
        return DataError(f"sequence {key} spans {num_lines} lines, but its longest stream has "
                         f"{int(lengths.max())} samples", DataPosition(self.path, line),
                         hint="each line of a sequence must continue its longest stream; "
                              "write a per-sequence value (a label) on one of its lines only")

    def _charge(self, chunk: int, errors: list[DataError]) -> None:
        """Charge this chunk's errors to the maxErrors budget; raise the first one over budget."""
        if not errors:
            return
        earlier = sum(n for c, n in self._errors_by_chunk.items() if c != chunk)
        budget = max(self._max_errors - earlier, 0)
        if len(errors) > budget:
            err = errors[budget]
            if self._max_errors == 0:
                err.hint = err.hint or "fix the line, or set maxErrors = N in the reader to skip N invalid lines"
            else:
                err.hint = (f"more than maxErrors = {self._max_errors} invalid lines or sequences"
                            + (f"; {err.hint}" if err.hint else ""))
            raise err
        if chunk not in self._errors_by_chunk:
            log.warning("%s: skipped %d invalid line(s) or sequence(s) (maxErrors = %d)",
                        self.path, len(errors), self._max_errors)
        self._errors_by_chunk[chunk] = len(errors)


# ---- label rows that cannot be a distribution -----------------------------------------------------

DISTRIBUTION_TOLERANCE = 1e-3


def _first_non_distribution(chunk) -> tuple[int, str] | None:
    """(the first row with a negative value or a sum other than 1 within the tolerance, what is wrong
    with it), or None."""
    if isinstance(chunk, SparseChunk):
        rows = len(chunk.row_offsets) - 1
        row_of = np.repeat(np.arange(rows), np.diff(chunk.row_offsets))
        sums = np.bincount(row_of, weights=chunk.values, minlength=rows)
        negative = np.bincount(row_of, weights=chunk.values < 0, minlength=rows) > 0
    else:
        rows = chunk.values.reshape(len(chunk.values), int(np.prod(chunk.values.shape[1:])))
        sums, negative = rows.sum(axis=1, dtype=np.float64), (rows < 0).any(axis=1)
    bad = np.flatnonzero(negative | (np.abs(sums - 1.0) > DISTRIBUTION_TOLERANCE))
    if not len(bad):
        return None
    row = int(bad[0])
    return row, "a value is negative" if negative[row] else f"its values sum to {sums[row]:.6g}"


def _line_of_row(lines: list[str], parsed: list[int], stream: str, row: int, streams: _Streams) -> int:
    """The index (in `lines`) of the line that holds `row` of `stream` among the `parsed` lines."""
    sid = streams.by_name[stream]
    seen = -1
    for li in parsed:
        names = {segment.split(None, 1)[0] for segment in lines[li].split("|")[1:] if segment.split(None, 1)}
        if any(streams.by_name.get(n) == sid for n in names):
            seen += 1
            if seen == row:
                return li
    return parsed[-1] if parsed else 0
