"""HTK features and MLF labels: headers, SCP lists and ranges, MLF files, context windows, frame
mode, alignment of features and labels, truncated BPTT, the legacy HTKMLFReader, and every error."""
from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import settings_of

from netlang.errors import EXIT_DATA, ConfigError, DataError
from netlang.readers import htk
from netlang.readers.factory import create_source
from netlang.readers.htk import HTKFeatureDeserializer, kind_name, parse_mlf, parse_scp, read_header
from netlang.readers.source import MinibatchSource
from netlang.readers.windows import TruncatedSource

USER, FBANK, MFCC, WAVEFORM, DISCRETE = 9, 7, 6, 0, 10
E, D, A, C = 0o100, 0o400, 0o1000, 0o2000
LABELS = ("a", "b", "sil")


def write_htk(path: Path, frames: np.ndarray, kind: int = USER, big_endian: bool = True, period: int = 100000,
              header_frames: int | None = None) -> Path:
    order = ">" if big_endian else "<"
    count = len(frames) if header_frames is None else header_frames
    path.write_bytes(struct.pack(order + "iihh", count, period, 4 * frames.shape[1], kind) +
                     np.asarray(frames, dtype=order + "f4").tobytes())
    return path


def frames_of(utterance: int, count: int) -> np.ndarray:
    """Two values per frame that say which utterance and which frame it is: [100 * u, t]."""
    return np.stack([np.full(count, 100.0 * utterance), np.arange(count, dtype=np.float64)], axis=1)


def label_of(t: int, count: int) -> str:
    """Frame labels a a … b b … sil: the first half 'a', then 'b', the last frame 'sil'."""
    return "sil" if t == count - 1 else ("a" if t < count // 2 else "b")


def mlf_text(lengths: dict[str, int]) -> str:
    lines = ["#!MLF!#"]
    for name, count in lengths.items():
        lines.append(f'"*/{name}.lab"')
        segments = []
        for t in range(count):
            label = label_of(t, count)
            if segments and segments[-1][2] == label:
                segments[-1][1] = t + 1
            else:
                segments.append([t, t + 1, label])
        lines += [f"{b * 100000} {e * 100000} {label} extra columns" for b, e, label in segments]
        lines.append(".")
    return "\n".join(lines) + "\n"


def corpus(tmp_path: Path, lengths=(5, 3, 4), *, mlf_lengths: dict | None = None) -> Path:
    """Utterances u0, u1 … with `lengths` frames: feature files, list.scp, labels.mlf, labels.txt."""
    (tmp_path / "feat").mkdir(exist_ok=True)
    names = {f"u{i}": n for i, n in enumerate(lengths)}
    for i, (name, count) in enumerate(names.items()):
        write_htk(tmp_path / "feat" / f"{name}.htk", frames_of(i, count))
    (tmp_path / "list.scp").write_text("".join(f"{name}=feat/{name}.htk\n" for name in names))
    (tmp_path / "labels.mlf").write_text(mlf_text(mlf_lengths if mlf_lengths is not None else names))
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return tmp_path


def legacy_reader(directory: Path, **options) -> dict:
    features = {"scpFile": str(directory / "list.scp"), "dim": 2 * options.pop("window", 1)}
    if "contextWindow" in options:
        features["contextWindow"] = options.pop("contextWindow")
    return {"readerType": "HTKMLFReader", "randomize": False, **options, "features": features,
            "labels": {"mlfFile": str(directory / "labels.mlf"), "labelMappingFile": str(directory / "labels.txt"),
                       "labelDim": len(LABELS)}}


def composite_reader(directory: Path, *, frame_mode=False, **options) -> dict:
    return {"randomize": False, "frameMode": frame_mode, **options, "deserializers": [
        {"type": "HTKFeatureDeserializer", "module": "HTKDeserializers",
         "input": {"features": {"scpFile": str(directory / "list.scp"), "dim": 2}}},
        {"type": "HTKMLFDeserializer", "module": "HTKDeserializers",
         "input": {"labels": {"mlfFile": str(directory / "labels.mlf"),
                              "labelMappingFile": str(directory / "labels.txt"), "labelDim": 3}}}]}


def reader(block: dict, directory: Path, **options):
    return create_source(settings_of.reader(block), str(directory), **options)


def epoch(source, size=4) -> list:
    minibatches = []
    while True:
        minibatches.append(source.next_minibatch(size))
        if minibatches[-1].end_of_epoch:
            return minibatches


def frames_and_labels(minibatches) -> tuple[np.ndarray, np.ndarray]:
    features = np.concatenate([mb["features"].data.values for mb in minibatches])
    labels = np.concatenate([mb["labels"].data.values for mb in minibatches]).argmax(axis=1)
    return features, labels


# ---- feature files ------------------------------------------------------------------------------

def test_a_header_gives_frames_period_dimension_and_kind(tmp_path):
    path = write_htk(tmp_path / "x.htk", np.zeros((7, 13)), kind=MFCC | E | D | A, period=50000)
    header = read_header(str(path), "utterance 'x'")
    assert (header.frames, header.period, header.dim, header.big_endian) == (7, 50000, 13, True)
    assert kind_name(header.kind) == "MFCC_E_D_A"


def test_a_little_endian_file_is_recognised_by_its_header(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = write_htk(tmp_path / "x.htk", values, big_endian=False)
    header = read_header(str(path), "utterance 'x'")
    assert not header.big_endian
    assert np.array_equal(htk.read_frames(str(path), header, 1, 2), values[1:3])


@pytest.mark.parametrize("kind, named", [(WAVEFORM, "WAVEFORM"), (DISCRETE, "DISCRETE"), (FBANK | C, "FBANK_C")])
def test_a_kind_whose_frames_are_not_floats_is_refused_naming_file_and_utterance(tmp_path, kind, named):
    path = write_htk(tmp_path / "x.htk", np.zeros((4, 2)), kind=kind)
    with pytest.raises(DataError, match=f"unsupported HTK parameter kind {named} \\(utterance 'x'") as info:
        read_header(str(path), "utterance 'x'")
    assert info.value.position.file == str(path) and info.value.exit_code == EXIT_DATA


def test_a_header_that_does_not_fit_the_file_is_a_bad_header(tmp_path):
    path = write_htk(tmp_path / "x.htk", np.zeros((4, 2)), header_frames=9)
    with pytest.raises(DataError, match="bad HTK header \\(utterance 'x'\\): 9 frames of 8 bytes") as info:
        read_header(str(path), "utterance 'x'")
    assert info.value.position.file == str(path)


def test_a_file_shorter_than_a_header_is_a_bad_header(tmp_path):
    (tmp_path / "x.htk").write_bytes(b"\0\0\0\1")
    with pytest.raises(DataError, match="bad HTK header.*4 bytes"):
        read_header(str(tmp_path / "x.htk"), "utterance 'x'")


def test_a_bad_header_in_a_list_names_the_utterance_and_its_scp_line(tmp_path):
    corpus(tmp_path)
    (tmp_path / "feat" / "u1.htk").write_bytes(b"garbage-garbage")
    with pytest.raises(DataError, match="bad HTK header \\(utterance 'u1', .*list.scp:2\\)") as info:
        reader(legacy_reader(tmp_path), tmp_path)
    assert info.value.position.file.endswith("u1.htk")


def test_feature_files_of_different_dimensions_are_an_error(tmp_path):
    corpus(tmp_path)
    write_htk(tmp_path / "feat" / "u2.htk", np.zeros((4, 3)))
    with pytest.raises(DataError, match="utterance 'u2'.*3 values.*utterance 'u0' have 2"):
        reader(legacy_reader(tmp_path), tmp_path)


def test_a_missing_feature_file_names_the_utterance(tmp_path):
    corpus(tmp_path)
    (tmp_path / "feat" / "u2.htk").unlink()
    with pytest.raises(DataError, match="cannot open the feature file of utterance 'u2', .*list.scp:3"):
        reader(legacy_reader(tmp_path), tmp_path)


def test_a_frame_that_is_not_finite_is_an_error_naming_utterance_and_frame(tmp_path):
    corpus(tmp_path)
    values = frames_of(1, 3)
    values[2, 1] = np.inf
    write_htk(tmp_path / "feat" / "u1.htk", values)
    with pytest.raises(DataError, match="utterance 'u1', .*list.scp:2: frame 2 holds a value that is not a finite") as info:
        epoch(reader(legacy_reader(tmp_path), tmp_path))
    assert info.value.position.file.endswith("u1.htk") and info.value.position.record == 2


# ---- SCP lists -----------------------------------------------------------------------------------

def test_scp_lines_name_path_and_range(tmp_path):
    (tmp_path / "a.scp").write_text("dir/one.mfc\n\nlogical/two.lab=arc.htk[3,7]\nthree=/abs/x.htk\n"
                                    "four=.../sub/y.htk\n")
    entries = parse_scp(str(tmp_path / "a.scp"))
    assert [(e.key, e.start, e.end, e.line) for e in entries] == [
        ("one", None, None, 1), ("two", 3, 7, 3), ("three", None, None, 4), ("four", None, None, 5)]
    assert entries[0].path == str(tmp_path / "dir" / "one.mfc")      # relative to the list's directory
    assert entries[1].path == str(tmp_path / "arc.htk")
    assert entries[2].path == "/abs/x.htk"
    assert entries[3].path == str(tmp_path / "sub" / "y.htk")         # ... is the list's directory


def test_prefix_path_in_scp_goes_before_every_path(tmp_path):
    (tmp_path / "a.scp").write_text("one=x/one.htk\n")
    assert parse_scp(str(tmp_path / "a.scp"), prefix="/data")[0].path == "/data/x/one.htk"


@pytest.mark.parametrize("line, message", [("u=f.htk[3]", "bad frame range"), ("u=f.htk[a,b]", "bad frame range"),
                                           ("u=f.htk[5,2]", "ends before it starts"), ("=f.htk", "expected 'path'")])
def test_a_bad_scp_line_is_an_error_at_its_line(tmp_path, line, message):
    (tmp_path / "a.scp").write_text(f"ok=f.htk\n{line}\n")
    with pytest.raises(DataError, match=message) as info:
        parse_scp(str(tmp_path / "a.scp"))
    assert (info.value.position.file, info.value.position.line) == (str(tmp_path / "a.scp"), 2)


def test_ranges_read_utterances_out_of_one_archive(tmp_path):
    write_htk(tmp_path / "archive.htk", frames_of(0, 10))
    (tmp_path / "list.scp").write_text("first=archive.htk[0,3]\nsecond=archive.htk[4,9]\n")
    features = HTKFeatureDeserializer(str(tmp_path / "list.scp"), "features", 2)
    assert features.chunk_keys(0).tolist() == ["first", "second"]
    assert features.chunk_sizes(0).tolist() == [4, 6]
    chunk = features.read_chunk(0).streams["features"].take(np.array([1]))
    assert chunk.values[:, 1].tolist() == [4, 5, 6, 7, 8, 9]


def test_a_range_beyond_the_archive_is_an_error_naming_the_utterance(tmp_path):
    write_htk(tmp_path / "archive.htk", frames_of(0, 10))
    (tmp_path / "list.scp").write_text("first=archive.htk[0,3]\nsecond=archive.htk[4,10]\n")
    with pytest.raises(DataError, match="utterance 'second'.*\\[4,10\\] are beyond the 10 frames") as info:
        HTKFeatureDeserializer(str(tmp_path / "list.scp"), "features", 2)
    assert info.value.position.line == 2


def test_an_utterance_listed_twice_is_an_error(tmp_path):
    write_htk(tmp_path / "a.htk", frames_of(0, 3))
    (tmp_path / "list.scp").write_text("a.htk\nx/a.htk\n")
    with pytest.raises(DataError, match="utterance 'a' is listed twice \\(first at line 1\\)"):
        HTKFeatureDeserializer(str(tmp_path / "list.scp"), "features", 2)


# ---- MLF files -----------------------------------------------------------------------------------

def classes() -> dict[str, int]:
    return {label: k for k, label in enumerate(LABELS)}


def write_mlf(tmp_path: Path, text: str) -> str:
    (tmp_path / "x.mlf").write_text(text)
    return str(tmp_path / "x.mlf")


def test_mlf_segments_become_frame_labels(tmp_path):
    path = write_mlf(tmp_path, '#!MLF!#\n"*/dir/u0.lab"\n0 200000 sil\n200000 500000 a 12.5 word\n'
                               '500000 600000 b\n.\n"u1.rec"\n0 100000 b\n.\n')
    utterances = parse_mlf(path, classes())
    assert [(u.key, u.labels.tolist(), u.line) for u in utterances] == [
        ("u0", [2, 2, 0, 0, 0, 1], 2), ("u1", [1], 7)]


def test_mlf_times_round_to_the_nearest_frame(tmp_path):
    path = write_mlf(tmp_path, '#!MLF!#\n"u.lab"\n0 149999 a\n149999 300001 b\n.\n')
    assert parse_mlf(path, classes())[0].labels.tolist() == [0, 1, 1]


def test_a_zero_length_segment_gives_no_frames(tmp_path):
    path = write_mlf(tmp_path, '#!MLF!#\n"u.lab"\n0 100000 a\n100000 100000 sil\n100000 200000 b\n.\n')
    assert parse_mlf(path, classes())[0].labels.tolist() == [0, 1]


@pytest.mark.parametrize("text, line, message", [
    ('"u.lab"\n0 100000 a\n.\n', 1, "starts with #!MLF!#"),
    ('#!MLF!#\nu.lab\n0 100000 a\n.\n', 2, "expected a quoted utterance name"),
    ('#!MLF!#\n"*/u.lab" -> labels\n', 2, "a label file reference"),
    ('#!MLF!#\n"u.lab"\n0 100000 a\n"v.lab"\n0 100000 a\n.\n', 4, "utterance 'u' \\(line 2\\) has no '.' line"),
    ('#!MLF!#\n"u.lab"\n0 100000 a\n', 3, "the file ends inside it"),
    ('#!MLF!#\n"u.lab"\n0 100000 a\n100000 200000 zz\n.\n', 4, "utterance 'u': label 'zz' is not in the label"),
    ('#!MLF!#\n"u.lab"\na\n.\n', 3, "utterance 'u': expected 'begin end label'"),
    ('#!MLF!#\n"u.lab"\n0 100000 a\n200000 300000 b\n.\n', 4, "begins at frame 2, but the labels before it end at frame 1"),
    ('#!MLF!#\n"u.lab"\n100000 200000 a\n.\n', 3, "begins at frame 1, but the labels before it end at frame 0"),
    ('#!MLF!#\n"u.lab"\n0 300000 a\n300000 200000 b\n.\n', 4, "ends \\(200000\\) before it begins"),
    ('#!MLF!#\n"u.lab"\n.\n', 2, "utterance 'u' has no labelled frames"),
])
def test_bad_mlf_syntax_is_an_error_at_its_line_naming_the_utterance(tmp_path, text, line, message):
    path = write_mlf(tmp_path, text)
    with pytest.raises(DataError, match=message) as info:
        parse_mlf(path, classes())
    assert (info.value.position.file, info.value.position.line) == (path, line)
    assert info.value.exit_code == EXIT_DATA


def test_the_label_mapping_numbers_labels_by_line(tmp_path):
    (tmp_path / "l.txt").write_text("x\n\ny\nz\n")
    assert htk.read_label_mapping(str(tmp_path / "l.txt")) == ["x", "y", "z"]
    (tmp_path / "l.txt").write_text("x\ny\nx\n")
    with pytest.raises(DataError, match="label 'x' is listed twice"):
        htk.read_label_mapping(str(tmp_path / "l.txt"))


def test_an_mlf_file_list_joins_several_files(tmp_path):
    corpus(tmp_path, (3, 4))
    text = (tmp_path / "labels.mlf").read_text()
    first, second = text.split('"*/u1.lab"')
    (tmp_path / "a.mlf").write_text(first)
    (tmp_path / "b.mlf").write_text('#!MLF!#\n"*/u1.lab"' + second)
    (tmp_path / "mlfs.txt").write_text("a.mlf\nb.mlf\n")
    block = legacy_reader(tmp_path)
    del block["labels"]["mlfFile"]
    block["labels"]["mlfFileList"] = str(tmp_path / "mlfs.txt")
    features, labels = frames_and_labels(epoch(reader(block, tmp_path)))
    assert len(labels) == 7


def test_an_utterance_labelled_in_two_mlf_files_is_an_error(tmp_path):
    corpus(tmp_path, (3,))
    (tmp_path / "mlfs.txt").write_text("labels.mlf\nlabels.mlf\n")
    block = legacy_reader(tmp_path)
    block["labels"]["mlfFileList"] = str(tmp_path / "mlfs.txt")
    with pytest.raises(DataError, match="utterance 'u0' has labels twice"):
        reader(block, tmp_path)


# ---- features and labels together --------------------------------------------------------------

def test_utterance_mode_gives_whole_utterances_with_their_frame_labels(tmp_path):
    corpus(tmp_path)
    minibatches = epoch(reader(composite_reader(tmp_path), tmp_path), size=1)
    assert [mb.keys for mb in minibatches] == [["u0"], ["u1"], ["u2"]]
    for i, (mb, count) in enumerate(zip(minibatches, (5, 3, 4))):
        assert mb["features"].data.values.tolist() == frames_of(i, count).tolist()
        assert [LABELS[k] for k in mb["labels"].data.values.argmax(1)] == [label_of(t, count) for t in range(count)]


def test_frame_mode_shuffles_frames_and_keeps_each_with_its_label(tmp_path):
    lengths = (5, 3, 4, 6, 2)
    corpus(tmp_path, lengths)
    block = composite_reader(tmp_path, frame_mode=True, randomize=True)
    minibatches = epoch(reader(block, tmp_path), size=4)
    assert all(mb["features"].max_length == 1 for mb in minibatches)
    features, labels = frames_and_labels(minibatches)
    seen = sorted((int(u) // 100, int(t)) for u, t in features)
    assert seen == [(u, t) for u, n in enumerate(lengths) for t in range(n)]       # each frame once
    counts = dict(enumerate(lengths))
    assert [LABELS[k] for k in labels] == [label_of(int(t), counts[int(u) // 100]) for u, t in features]
    order = [(int(u) // 100, int(t)) for u, t in features]
    assert order != sorted(order)                                                  # shuffled
    assert minibatches[0].keys[0].count("#") == 1                                  # utterance#frame


def test_a_context_window_repeats_the_edge_frames(tmp_path):
    corpus(tmp_path, (4,))
    source = reader(legacy_reader(tmp_path, contextWindow=3, window=3, frameMode=False), tmp_path)
    values = source.next_minibatch(10)["features"].data.values
    steps = values[:, 1::2]                        # the frame numbers of the window's three frames
    assert steps.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]


def test_a_left_right_context_window_takes_frames_from_one_side(tmp_path):
    corpus(tmp_path, (4,))
    source = reader(legacy_reader(tmp_path, contextWindow=[2, 0], window=3, frameMode=False), tmp_path)
    steps = source.next_minibatch(10)["features"].data.values[:, 1::2]
    assert steps.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]


def test_context_windows_stay_inside_their_utterance_in_frame_mode(tmp_path):
    corpus(tmp_path, (2, 3))
    block = legacy_reader(tmp_path, contextWindow=3, window=3, randomize=True)
    features, _ = frames_and_labels(epoch(reader(block, tmp_path), size=2))
    for window in features:
        assert len(set(window[0::2].tolist())) == 1          # one utterance per window
    assert sorted(map(tuple, features[:, 1::2].tolist())) == [(0, 0, 1), (0, 0, 1), (0, 1, 1), (0, 1, 2), (1, 2, 2)]


def test_an_even_context_window_is_a_config_error_at_its_key(tmp_path):
    corpus(tmp_path)
    with pytest.raises(ConfigError, match="contextWindow = 4 has no centre frame") as info:
        reader(legacy_reader(tmp_path, contextWindow=4, window=4), tmp_path)
    assert info.value.key.endswith("features.contextWindow")


def test_dim_must_count_the_whole_context_window(tmp_path):
    corpus(tmp_path)
    with pytest.raises(ConfigError, match="dim = 2, but the feature files have 2 values per frame and the "
                                          "context window is 11 frames: 22") as info:
        reader(legacy_reader(tmp_path, contextWindow=11, window=1), tmp_path)
    assert info.value.key.endswith("features.dim")


def test_label_dim_must_equal_the_labels_of_the_mapping_file(tmp_path):
    corpus(tmp_path)
    block = legacy_reader(tmp_path)
    block["labels"]["labelDim"] = 4
    with pytest.raises(ConfigError, match="labelDim = 4, but the label mapping file lists 3 labels"):
        reader(block, tmp_path)


def test_different_frame_counts_of_features_and_labels_name_the_utterance(tmp_path):
    corpus(tmp_path, (5, 3, 4), mlf_lengths={"u0": 5, "u1": 4, "u2": 4})
    with pytest.raises(DataError, match="utterance 'u1', .*labels.mlf:\\d+: 4 label frames, but its features "
                                        "\\(.*u1.htk, .*list.scp:2\\) have 3 frames") as info:
        reader(composite_reader(tmp_path), tmp_path)
    assert info.value.exit_code == EXIT_DATA and info.value.position.file.endswith("labels.mlf")


def test_an_utterance_without_labels_is_an_error_at_its_scp_line(tmp_path):
    corpus(tmp_path, (5, 3, 4), mlf_lengths={"u0": 5, "u2": 4})
    with pytest.raises(DataError, match="utterance 'u1', .*list.scp:2: the utterance has no labels in") as info:
        reader(legacy_reader(tmp_path), tmp_path)
    assert (info.value.position.line, info.value.exit_code) == (2, EXIT_DATA)


def test_labels_of_utterances_without_features_are_left_out(tmp_path, caplog):
    corpus(tmp_path, (5, 3), mlf_lengths={"extra": 7, "u1": 3, "u0": 5})
    for block in (legacy_reader(tmp_path, frameMode=False), composite_reader(tmp_path)):
        minibatches = epoch(reader(block, tmp_path), size=1)
        assert [mb.keys for mb in minibatches] == [["u0"], ["u1"]]      # the SCP's order, the features first
    assert "missing" not in caplog.text


def test_labels_first_keep_the_mlf_order(tmp_path):
    corpus(tmp_path, (5, 3), mlf_lengths={"u1": 3, "u0": 5})
    block = composite_reader(tmp_path)
    block["deserializers"].reverse()
    assert [mb.keys for mb in epoch(reader(block, tmp_path), size=1)] == [["u1"], ["u0"]]


# ---- randomization, truncation, the reader block -------------------------------------------------

def test_a_randomization_window_in_frames_keeps_frames_of_nearby_chunks_together(tmp_path, monkeypatch):
    monkeypatch.setattr(htk, "FRAMES_PER_CHUNK", 4)         # utterances of 4 frames: one chunk each
    corpus(tmp_path, (4,) * 6)
    block = composite_reader(tmp_path, frame_mode=True, randomize=8)
    source = reader(block, tmp_path)
    first_window = [int(u) // 100 for mb in (source.next_minibatch(4), source.next_minibatch(4))
                    for u in mb["features"].data.values[:, 0]]
    assert sorted(Counter(first_window).values()) == [4, 4]  # 8 frames: all of two chunks


def test_truncated_bptt_cuts_utterances_into_windows(tmp_path):
    corpus(tmp_path, (5, 3))
    block = composite_reader(tmp_path, truncated=True, truncationLength=2)
    source = reader(block, tmp_path, truncation=(2, 2))
    assert isinstance(source, TruncatedSource)
    mb = source.next_minibatch(4)
    assert mb["features"].data.values[:, 1].tolist() == [0, 1, 0, 1]
    assert mb.steps_before.tolist() == [0, 0]
    mb = source.next_minibatch(4)
    assert mb["features"].data.values[:, 1].tolist() == [2, 3, 2] and mb.steps_before.tolist() == [2, 2]
    assert mb["labels"].lengths().tolist() == [2, 1]


def test_the_legacy_reader_reads_frames_unless_told_otherwise(tmp_path):
    corpus(tmp_path)
    assert settings_of.reader(legacy_reader(tmp_path)).frame_mode
    assert reader(legacy_reader(tmp_path), tmp_path).next_minibatch(4).num_sequences == 4
    assert not settings_of.reader(legacy_reader(tmp_path, frameMode=False)).frame_mode
    assert not settings_of.reader(legacy_reader(tmp_path, truncated=True, truncationLength=2)).frame_mode


def test_frame_mode_and_truncation_together_are_a_config_error(tmp_path):
    corpus(tmp_path)
    with pytest.raises(ConfigError, match="frameMode = true reads single frames"):
        reader(composite_reader(tmp_path, frame_mode=True), tmp_path, truncation=(2, None))


def test_a_feature_deserializer_stream_needs_an_scp_file(tmp_path):
    corpus(tmp_path)
    block = composite_reader(tmp_path)
    block["deserializers"][0]["input"]["features"] = {"mlfFile": "x.mlf", "dim": 2}
    with pytest.raises(ConfigError, match="needs scpFile") as info:
        reader(block, tmp_path)
    assert "HTKMLFDeserializer" in info.value.hint


def test_a_label_stream_needs_a_label_mapping_file(tmp_path):
    corpus(tmp_path)
    block = composite_reader(tmp_path)
    del block["deserializers"][1]["input"]["labels"]["labelMappingFile"]
    with pytest.raises(ConfigError, match="needs labelMappingFile"):
        reader(block, tmp_path)


def test_a_legacy_stream_without_scp_or_mlf_file_is_a_config_error(tmp_path):
    corpus(tmp_path)
    block = legacy_reader(tmp_path)
    block["other"] = {"dim": 3}
    with pytest.raises(ConfigError, match="stream 'other' has neither scpFile"):
        reader(block, tmp_path)


@pytest.mark.parametrize("key, value, message", [("phoneBoundaries", True, "phoneBoundaries"),
                                                 ("labelType", "regression", "labelType 'regression'")])
def test_label_options_netlang_cannot_read_are_config_errors(tmp_path, key, value, message):
    corpus(tmp_path)
    block = legacy_reader(tmp_path)
    block["labels"][key] = value
    with pytest.raises(ConfigError, match=message):
        reader(block, tmp_path)


def test_the_network_inputs_are_checked_against_the_stream_dimensions(tmp_path):
    corpus(tmp_path)
    with pytest.raises(ConfigError, match="network input 'features' has dimension 6, but the reader stream has 2"):
        reader(legacy_reader(tmp_path), tmp_path, streams_wanted={"features": 6, "labels": 3})


def test_double_precision_reading(tmp_path):
    corpus(tmp_path)
    mb = reader(legacy_reader(tmp_path), tmp_path, dtype=np.float64).next_minibatch(3)
    assert mb["features"].data.values.dtype == np.float64 and mb["labels"].data.values.dtype == np.float64


def test_a_source_state_resumes_at_the_same_frame(tmp_path):
    corpus(tmp_path, (5, 3, 4, 6))
    block = composite_reader(tmp_path, frame_mode=True, randomize=True)
    source = reader(block, tmp_path)
    source.next_minibatch(3)
    state = source.state()
    expected = source.next_minibatch(3)["features"].data.values
    again = reader(block, tmp_path)
    again.restore(state)
    assert np.array_equal(again.next_minibatch(3)["features"].data.values, expected)
    assert isinstance(again, MinibatchSource)
