"""ATIS (air travel queries) from IOB text into CTF sequences, vocabularies and label lists.

The source (`atis.train.w-intent.iob`, `atis.test.w-intent.iob`) holds one utterance per line:

    BOS i want to fly from boston EOS<TAB>O O O O O O B-fromloc.city_name atis_flight

left of the TAB the words, starting with BOS and ending with EOS; right of it one IOB slot tag per
word for all words but EOS, whose place holds the intent (so EOS's slot is `O`). An intent may join
several with '#' (`atis_flight#atis_airfare`); such a combination is one class of its own.

Written to `--out`:

* `atis.train.ctf`, `atis.test.ctf`: one line per word, the utterance's index (0, 1, …) as sequence
  id, sparse one-hot samples `index:1`:

      0 |query 154:1 |prevWord 154:1 |nextWord 442:1 |slotLabels 120:1 |intent 12:1 |# BOS O
      0 |query 442:1 |prevWord 154:1 |nextWord 858:1 |slotLabels 120:1 |# i O

  `query` is the word, `prevWord`/`nextWord` its neighbours (at BOS the previous word is BOS itself,
  at EOS the next word is EOS itself), `slotLabels` the word's slot tag, and `intent` the utterance's
  intent on its first line only (a per-sequence label: CTF streams may have different lengths). The
  comment shows the word and its tag.
* `query.wl`, `slots.wl`, `intent.wl`: the entries of each one-hot stream, one per line; an index is
  a line number counted from 0.

CNTK's ATIS data name the same streams differently: its SLU hands-on lab (`atis.train.ctf`) writes
`S0` = query, `S1` = intent, `S2` = slotLabels; its ATIS example (`ATIS.train.cntk.sparse`) writes
`CW` = query, `PW` = prevWord, `NW` = nextWord, `L` = slotLabels. A reader can map those names with
`alias`.

Vocabulary decisions:

* Words come from the training set only: test words never seen in training map to `<unk>`, index 0.
  With `min_count` > 1, training words seen fewer times map to `<unk>` too, so that its embedding
  is trained (with the default 1, `<unk>` never occurs in the training data).
* Labels are the task's output space, not features: slots.wl and intent.wl list the training set's
  labels (sorted), then labels that only the test set uses (sorted), so every test label has an
  output and an entry. (Six slot labels and four intents occur only in the test set.)

Everything is deterministic: the same sources give the same bytes.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from netlang.errors import DataError, DataPosition, UsageError

TRAIN_SOURCE = "atis.train.w-intent.iob"
TEST_SOURCE = "atis.test.w-intent.iob"
TRAIN_FILE = "atis.train.ctf"
TEST_FILE = "atis.test.ctf"
QUERY_VOCABULARY = "query.wl"
SLOT_LABELS = "slots.wl"
INTENT_LABELS = "intent.wl"
UNKNOWN_WORD = "<unk>"
END_WORD = "EOS"
STREAMS = ("query", "prevWord", "nextWord", "slotLabels", "intent")

_TOKEN_RE = re.compile(r"\S+")
_TAG_RE = re.compile(r"O|[BI]-\S+")


@dataclass(frozen=True)
class Utterance:
    """One query: its words (BOS … EOS), one slot tag per word, and its intent."""

    words: tuple[str, ...]
    slots: tuple[str, ...]
    intent: str


# ---- reading the IOB source --------------------------------------------------------------------

def parse_iob_line(text: str, path: str, line_no: int) -> Utterance:
    """`BOS w1 … wn EOS<TAB>O s1 … sn intent` as an Utterance (EOS gets the slot `O`)."""
    def error(col: int, message: str, hint: str | None = None) -> DataError:
        return DataError(message, DataPosition(path, line_no, col), hint=hint)

    layout = "expected 'BOS w1 … wn EOS<TAB>O s1 … sn intent'"
    left, tab, right = text.partition("\t")
    if not tab or "\t" in right:
        raise error(1, f"expected one TAB between the words and the tags, found {text.count(chr(9))}", hint=layout)
    words, tags = left.split(), right.split()
    if len(words) < 2 or words[-1] != END_WORD:
        raise error(_column(text, 0, len(words) - 1), f"the words must end with {END_WORD}",
                    hint=layout + ": the tag in EOS's place is the intent")
    if len(tags) != len(words):
        raise error(len(left) + 2, f"{len(words)} words but {len(tags) - 1} tags and an intent "
                                   f"(expected {len(words) - 1} tags and an intent)", hint=layout)
    for k, tag in enumerate(tags[:-1]):
        if not _TAG_RE.fullmatch(tag):
            raise error(_column(text, len(left) + 1, k), f"'{tag}' is not an IOB slot tag",
                        hint="tags are O, B-type or I-type")
    return Utterance(tuple(words), (*tags[:-1], "O"), tags[-1])


def _column(text: str, start: int, k: int) -> int:
    """The 1-based column of the k-th word of `text` after position `start` (for error messages)."""
    matches = list(_TOKEN_RE.finditer(text, start))
    return matches[k].start() + 1 if 0 <= k < len(matches) else start + 1


def read_iob(path: str) -> list[Utterance]:
    """The utterances of an ATIS IOB file, in file order (blank lines are skipped)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as err:
        raise DataError(f"cannot read the ATIS file: {err.strerror or err}", DataPosition(path),
                        hint="--source must be the directory with atis.train.w-intent.iob and "
                             "atis.test.w-intent.iob") from None
    except UnicodeDecodeError:
        raise DataError("the file is not UTF-8 text", DataPosition(path)) from None
    utterances = [parse_iob_line(line, path, no) for no, line in enumerate(lines, start=1) if line.strip()]
    if not utterances:
        raise DataError("the file holds no utterances", DataPosition(path))
    return utterances


# ---- vocabularies ------------------------------------------------------------------------------

class Vocabulary:
    """Entries by index and indices by entry; the index is the line number in the `.wl` file."""

    def __init__(self, entries: Iterable[str], unknown: str | None = None):
        self.entries = list(entries)
        self.index = {entry: i for i, entry in enumerate(self.entries)}
        if len(self.index) != len(self.entries):
            raise ValueError("vocabulary entries must be unique")
        self.unknown_id = self.index[unknown] if unknown is not None else None

    def __len__(self) -> int:
        return len(self.entries)

    def id(self, entry: str) -> int:
        """The index of `entry`; an entry not in the vocabulary maps to the unknown entry."""
        found = self.index.get(entry, self.unknown_id)
        if found is None:
            raise KeyError(entry)
        return found

    def write(self, path: str) -> None:
        _write_text(path, "".join(entry + "\n" for entry in self.entries))

    @classmethod
    def read(cls, path: str) -> "Vocabulary":
        """A `.wl` file: one entry per line (blank lines are entries too, so indices stay line numbers)."""
        try:
            with open(path, encoding="utf-8") as fh:
                return cls(fh.read().splitlines())
        except OSError as err:
            raise DataError(f"cannot read the label file: {err.strerror or err}", DataPosition(path),
                            hint="netlang data prepare atis writes query.wl, slots.wl and intent.wl") from None
        except UnicodeDecodeError:
            raise DataError("the label file is not UTF-8 text", DataPosition(path)) from None
        except ValueError:
            raise DataError("the label file lists an entry twice", DataPosition(path)) from None


@dataclass
class AtisVocabularies:
    query: Vocabulary
    slots: Vocabulary
    intent: Vocabulary

    def files(self) -> dict[str, Vocabulary]:
        return {QUERY_VOCABULARY: self.query, SLOT_LABELS: self.slots, INTENT_LABELS: self.intent}


def build_vocabularies(train: list[Utterance], test: list[Utterance], min_count: int = 1) -> AtisVocabularies:
    """Words from the training set (`<unk>` first); labels from the training set, then test-only labels."""
    counts = Counter(word for u in train for word in u.words)
    words = sorted(word for word, n in counts.items() if n >= min_count and word != UNKNOWN_WORD)
    return AtisVocabularies(
        query=Vocabulary([UNKNOWN_WORD, *words], unknown=UNKNOWN_WORD),
        slots=Vocabulary(_labels(train, test, lambda u: u.slots)),
        intent=Vocabulary(_labels(train, test, lambda u: (u.intent,))))


def _labels(train: list[Utterance], test: list[Utterance], labels_of) -> list[str]:
    seen = {label for u in train for label in labels_of(u)}
    test_only = {label for u in test for label in labels_of(u)} - seen
    return sorted(seen) + sorted(test_only)


# ---- CTF ---------------------------------------------------------------------------------------

def ctf_lines(key: int, utterance: Utterance, vocabularies: AtisVocabularies) -> Iterator[str]:
    """The CTF lines of one utterance (sequence id `key`), one per word, each ending in a newline."""
    ids = [vocabularies.query.id(w) for w in utterance.words]
    last = len(ids) - 1
    for t, (word, slot) in enumerate(zip(utterance.words, utterance.slots)):
        # The neighbours of the first and last word are the words themselves (BOS, EOS).
        prev_id, next_id = ids[max(t - 1, 0)], ids[min(t + 1, last)]
        intent = f" |intent {vocabularies.intent.id(utterance.intent)}:1" if t == 0 else ""
        yield (f"{key} |query {ids[t]}:1 |prevWord {prev_id}:1 |nextWord {next_id}:1 "
               f"|slotLabels {vocabularies.slots.id(slot)}:1{intent}{_comment(word, slot)}\n")


def _comment(word: str, slot: str) -> str:
    # A '|' would end the comment early; ATIS has none, other data may.
    return "" if "|" in word + slot else f" |# {word} {slot}"


def write_ctf(path: str, utterances: list[Utterance], vocabularies: AtisVocabularies) -> None:
    _write_text(path, "".join(line for key, u in enumerate(utterances)
                              for line in ctf_lines(key, u, vocabularies)))


def _write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    os.replace(tmp, path)


def prepare_atis(source_dir: str, out_dir: str, *, min_count: int = 1) -> dict[str, int]:
    """Write the two CTF files and three vocabularies; returns utterances per CTF file and entries
    per vocabulary."""
    if min_count < 1:
        raise UsageError(f"--min-count must be ≥ 1, not {min_count}")
    paths = [os.path.join(source_dir, name) for name in (TRAIN_SOURCE, TEST_SOURCE)]
    for path in paths:      # both files must be there before anything is written
        if not os.path.isfile(path):
            raise DataError(f"{os.path.basename(path)} not found", DataPosition(source_dir),
                            hint="--source must be the directory with atis.train.w-intent.iob and "
                                 "atis.test.w-intent.iob")
    train, test = (read_iob(path) for path in paths)
    vocabularies = build_vocabularies(train, test, min_count)
    os.makedirs(out_dir, exist_ok=True)
    write_ctf(os.path.join(out_dir, TRAIN_FILE), train, vocabularies)
    write_ctf(os.path.join(out_dir, TEST_FILE), test, vocabularies)
    for name, vocabulary in vocabularies.files().items():
        vocabulary.write(os.path.join(out_dir, name))
    return {TRAIN_FILE: len(train), TEST_FILE: len(test),
            **{name: len(v) for name, v in vocabularies.files().items()}}


# ---- reference slot labels back from a CTF file ------------------------------------------------

_LEADING_ID_RE = re.compile(r"[ \t]*(\d+)")


def read_slot_references(path: str, labels: Vocabulary, stream: str = "slotLabels") -> list[list[str]]:
    """The slot label sequences of a CTF file: the one-hot `stream` of every line, grouped into
    sequences by their ids (CTF's rule: a line without an id continues the sequence; without an id
    on the first line, every line is a sequence of its own)."""
    sample_re = re.compile(r"\|" + re.escape(stream) + r"[ \t]+(\d+):")
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as err:
        raise DataError(f"cannot read the reference: {err.strerror or err}", DataPosition(path)) from None
    except UnicodeDecodeError:
        raise DataError("the reference is not UTF-8 text", DataPosition(path)) from None
    sequences: list[list[str]] = []
    use_ids, current = None, None
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = _LEADING_ID_RE.match(line)
        if use_ids is None:
            use_ids = match is not None
        key = match.group(1) if use_ids and match else None
        if not use_ids or not sequences or (key is not None and key != current):
            sequences.append([])
            current = key
        sample = sample_re.search(line)
        if sample is None:
            raise DataError(f"the line has no '{stream}' sample", DataPosition(path, line_no, stream=stream),
                            hint="name the reference's slot stream with --stream (e.g. S2 for CNTK's SLU data)")
        index = int(sample.group(1))
        if index >= len(labels):
            raise DataError(f"label index {index} is beyond the {len(labels)} entries of the label file",
                            DataPosition(path, line_no, sample.start(1) + 1, stream=stream),
                            hint="use the slots.wl written together with this CTF file")
        sequences[-1].append(labels.entries[index])
    if not sequences:
        raise DataError("the reference holds no sequences", DataPosition(path))
    return sequences
