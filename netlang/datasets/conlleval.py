"""Slot-filling scores with the chunk rules of conlleval (the CoNLL-2000 evaluation script).

A label is `TAG-TYPE` (split at the first '-': `B-fromloc.city_name` is tag `B`, type
`fromloc.city_name`) or a bare tag (`O`, type ''). A chunk is a maximal run of words that conlleval
groups together; with IOB tags:

* a chunk starts at `B-X`, at `I-X` after `O`, and at any tag whose type differs from the previous
  word's (so `I-X` after `B-Y` starts a new chunk of type X);
* it ends before `B-…`, before `O`, before a change of type, and at the end of the sentence.

conlleval also knows IOE tags (`E-X`); their rules are in the tables below too (its `[`/`]` tags
for bracketed chunks are left out). `O` words belong to no chunk. A guessed chunk is correct when a
reference chunk has exactly its first word, last word and type. Precision = correct / guessed
chunks, recall = correct / reference chunks, F1 their harmonic mean, all in percent (0 when
undefined, as conlleval prints them); token accuracy counts words whose whole label is right.

Counting exact (start, end, type) matches is what conlleval's one-pass `inCorrect` bookkeeping
computes, because under these rules a chunk always ends before the next one starts.

The second half reads what `netlang data score-slots` compares: predicted labels as written by the
`write` action (`format.type = "category"`: one label per line) and the reference label sequences.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from netlang.errors import DataError, DataPosition

OUTSIDE = "O"

# (previous tag, tag) pairs where conlleval sees a chunk start / end between two words; the
# type-change rules come on top (see starts_chunk, ends_chunk).
_START_PAIRS = {("B", "B"), ("I", "B"), ("O", "B"), ("O", "I"), ("E", "E"), ("E", "I"), ("O", "E")}
_END_PAIRS = {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O"), ("E", "E"), ("E", "I"), ("E", "O")}
_NO_CHUNK_TAGS = (OUTSIDE, ".")    # tags that never open a chunk by a change of type


def split_label(label: str) -> tuple[str, str]:
    """`B-depart_time.time` → ('B', 'depart_time.time'); `O` → ('O', ''). Types may hold '-'."""
    tag, dash, kind = label.partition("-")
    return (tag, kind) if dash else (label, "")


def starts_chunk(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    """Does a chunk start at this word, given the previous word's tag and type?"""
    return (prev_tag, tag) in _START_PAIRS or (tag not in _NO_CHUNK_TAGS and prev_type != kind)


def ends_chunk(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    """Does the previous word's chunk end before this word?"""
    return (prev_tag, tag) in _END_PAIRS or (prev_tag not in _NO_CHUNK_TAGS and prev_type != kind)


@dataclass(frozen=True)
class Chunk:
    """Words `start` … `end - 1` of a sentence form one chunk of type `kind`."""

    start: int
    end: int
    kind: str


def chunks(labels: Sequence[str]) -> list[Chunk]:
    """The chunks of one sentence's labels, in order."""
    found: list[Chunk] = []
    start = None
    prev_tag, prev_type = OUTSIDE, ""          # the sentence boundary counts as O on both sides
    for i, label in enumerate([*labels, OUTSIDE]):
        tag, kind = split_label(label)
        if start is not None and ends_chunk(prev_tag, tag, prev_type, kind):
            found.append(Chunk(start, i, prev_type))
            start = None
        if i < len(labels) and starts_chunk(prev_tag, tag, prev_type, kind):
            start = i
        prev_tag, prev_type = tag, kind
    return found


# ---- scores ------------------------------------------------------------------------------------

@dataclass
class ChunkCounts:
    """Reference chunks, guessed chunks and correct guesses (of one type, or of all)."""

    reference: int = 0
    guessed: int = 0
    correct: int = 0

    @property
    def precision(self) -> float:
        return 100.0 * self.correct / self.guessed if self.guessed else 0.0

    @property
    def recall(self) -> float:
        return 100.0 * self.correct / self.reference if self.reference else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        return {"reference": self.reference, "guessed": self.guessed, "correct": self.correct,
                "precision": self.precision, "recall": self.recall, "f1": self.f1}


@dataclass
class SlotScore:
    """conlleval's figures over a set of sentences; `add` one sentence at a time."""

    tokens: int = 0
    correct_tags: int = 0
    sentences: int = 0
    total: ChunkCounts = field(default_factory=ChunkCounts)
    by_type: dict[str, ChunkCounts] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct_tags / self.tokens if self.tokens else 0.0

    @property
    def precision(self) -> float:
        return self.total.precision

    @property
    def recall(self) -> float:
        return self.total.recall

    @property
    def f1(self) -> float:
        return self.total.f1

    def add(self, reference: Sequence[str], guessed: Sequence[str]) -> None:
        """Score one sentence: its reference labels and the guessed labels, word by word."""
        if len(reference) != len(guessed):
            raise ValueError(f"{len(reference)} reference labels but {len(guessed)} guessed ones")
        self.sentences += 1
        self.tokens += len(reference)
        self.correct_tags += sum(r == g for r, g in zip(reference, guessed))
        ref_chunks, guess_chunks = set(chunks(reference)), set(chunks(guessed))
        for chunk in ref_chunks:
            self._counts(chunk.kind).reference += 1
        for chunk in guess_chunks:
            self._counts(chunk.kind).guessed += 1
        for chunk in ref_chunks & guess_chunks:
            self._counts(chunk.kind).correct += 1
        self.total.reference += len(ref_chunks)
        self.total.guessed += len(guess_chunks)
        self.total.correct += len(ref_chunks & guess_chunks)

    def _counts(self, kind: str) -> ChunkCounts:
        return self.by_type.setdefault(kind, ChunkCounts())

    def as_dict(self) -> dict:
        return {"sentences": self.sentences, "tokens": self.tokens, "accuracy": self.accuracy,
                **self.total.as_dict(),
                "by_type": {kind: self.by_type[kind].as_dict() for kind in sorted(self.by_type)}}

    def summary(self) -> str:
        """conlleval's two summary lines."""
        return (f"processed {self.tokens} tokens with {self.total.reference} phrases; "
                f"found: {self.total.guessed} phrases; correct: {self.total.correct}.\n"
                f"accuracy: {self.accuracy:6.2f}%; precision: {self.precision:6.2f}%; "
                f"recall: {self.recall:6.2f}%; FB1: {self.f1:6.2f}")

    def type_lines(self) -> list[str]:
        """conlleval's per-type lines: precision, recall, F1 and the number of guessed chunks."""
        return [f"{kind:>17}: precision: {c.precision:6.2f}%; recall: {c.recall:6.2f}%; "
                f"FB1: {c.f1:6.2f}  {c.guessed}" for kind, c in sorted(self.by_type.items())]


def score(pairs: Iterable[tuple[Sequence[str], Sequence[str]]]) -> SlotScore:
    """conlleval's scores over (reference labels, guessed labels) sentence pairs."""
    result = SlotScore()
    for reference, guessed in pairs:
        result.add(reference, guessed)
    return result


# ---- predicted labels from a file --------------------------------------------------------------

@dataclass
class Predictions:
    """Guessed labels as read from a file: all of them in order, the line each came from, and, when
    the file separates sentences with blank lines, each sentence's length."""

    path: str
    labels: list[str]
    lines: list[int]
    sentence_lengths: list[int] | None


def read_predictions(path: str) -> Predictions:
    """One label per line: the last word of each non-blank line (so `word gold guess` lines work too).
    Blank lines, if any, separate sentences; without them, sentences are cut by the reference."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        raise DataError(f"cannot read the predictions: {err.strerror or err}", DataPosition(path),
                        hint="give the file the write action wrote (<outputPath>.<node>)") from None
    except UnicodeDecodeError:
        raise DataError("the predictions are not UTF-8 text", DataPosition(path)) from None
    labels, lines, lengths = [], [], []
    current = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words:
            if current:
                lengths.append(current)
            current = 0
            continue
        labels.append(words[-1])
        lines.append(line_no)
        current += 1
    if current:
        lengths.append(current)
    if not labels:
        raise DataError("the predictions file holds no labels", DataPosition(path))
    # One block is the same as no breaks at all: the reference cuts it.
    return Predictions(path, labels, lines, lengths if len(lengths) > 1 else None)


def check_labels_known(predictions: Predictions, known: Sequence[str]) -> None:
    """Every guessed label must be one of the label file's entries (catches real-valued output)."""
    entries = set(known)
    for label, line in zip(predictions.labels, predictions.lines):
        if label not in entries:
            raise DataError(f"'{label}' is not a label of the label file", DataPosition(predictions.path, line),
                            hint="write the output node with format = { type = \"category\" ; "
                                 "labelMappingFile = \"…/slots.wl\" }, one label per word")


def split_like(predictions: Predictions, reference: Sequence[Sequence[str]]) -> list[list[str]]:
    """The guessed labels cut into sentences of the reference's lengths (checked against the file's
    own sentence breaks when it has them)."""
    lengths = [len(sentence) for sentence in reference]
    if predictions.sentence_lengths is not None:
        _check_sentence_lengths(predictions, lengths)
    elif len(predictions.labels) != sum(lengths):
        raise DataError(f"{len(predictions.labels)} predicted labels for {sum(lengths)} reference words "
                        f"({len(lengths)} sentences)", DataPosition(predictions.path),
                        hint="predictions and reference must cover the same sentences in the same order "
                             "(write with the test reader, randomize = false)")
    out, start = [], 0
    for n in lengths:
        out.append(predictions.labels[start:start + n])
        start += n
    return out


def _check_sentence_lengths(predictions: Predictions, lengths: list[int]) -> None:
    got = predictions.sentence_lengths
    first_line = 0
    for k, (have, want) in enumerate(zip(got, lengths)):
        if have != want:
            raise DataError(f"sentence {k + 1} has {have} predicted labels, the reference has {want} words",
                            DataPosition(predictions.path, predictions.lines[first_line]),
                            hint="predictions and reference must cover the same sentences in the same order")
        first_line += have
    if len(got) != len(lengths):
        raise DataError(f"{len(got)} predicted sentences for {len(lengths)} reference sentences",
                        DataPosition(predictions.path),
                        hint="predictions and reference must cover the same sentences in the same order")
