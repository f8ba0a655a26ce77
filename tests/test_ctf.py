"""The CNTKTextFormat deserializer: the format case by case, errors with exact positions, chunking."""
from __future__ import annotations

import numpy as np
import pytest

from netlang.errors import EXIT_DATA, DataError
from netlang.readers.ctf import CtfDeserializer, CtfStream

A2 = CtfStream("a", 2)
B3_SPARSE = CtfStream("b", 3, is_sparse=True)


def write(tmp_path, text: str, name: str = "data.ctf", newline: str = "\n") -> str:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return str(path)


def sequences(d: CtfDeserializer) -> list[tuple[int, dict]]:
    """(key, {stream: data}) of every valid sequence, in file order."""
    out = []
    for c in range(d.num_chunks()):
        data = d.read_chunk(c)
        for i, key in enumerate(d.chunk_keys(c)):
            if data.valid[i]:
                out.append((int(key), {name: s.sequence(i) for name, s in data.streams.items()}))
    return out


def read(tmp_path, text: str, streams=(A2,), **options) -> list[tuple[int, dict]]:
    return sequences(CtfDeserializer(write(tmp_path, text), list(streams), **options))


def error_of(tmp_path, text: str, streams=(A2,), **options) -> DataError:
    with pytest.raises(DataError) as info:
        read(tmp_path, text, streams, **options)
    return info.value


# ---- sequence ids ------------------------------------------------------------------------------

def test_lines_with_the_same_id_form_one_sequence(tmp_path):
    seqs = read(tmp_path, "7 |a 1 2\n7 |a 3 4\n9 |a 5 6\n")
    assert [k for k, _ in seqs] == [7, 9]
    np.testing.assert_array_equal(seqs[0][1]["a"], [[1, 2], [3, 4]])


def test_line_without_id_continues_the_current_sequence(tmp_path):
    seqs = read(tmp_path, "0 |a 1 2\n|a 3 4\n1 |a 5 6\n")
    assert [len(s["a"]) for _, s in seqs] == [2, 1]


def test_file_whose_first_line_has_no_id_makes_each_line_a_sequence(tmp_path):
    seqs = read(tmp_path, "|a 1 2\n5 |a 3 4\n5 |a 5 6\n")
    assert [k for k, _ in seqs] == [0, 1, 2]
    assert all(len(s["a"]) == 1 for _, s in seqs)


def test_skip_sequence_ids_makes_each_line_a_sequence(tmp_path):
    seqs = read(tmp_path, "3 |a 1 2\n3 |a 3 4\n", skip_sequence_ids=True)
    assert [k for k, _ in seqs] == [0, 1]
    np.testing.assert_array_equal(seqs[1][1]["a"], [[3, 4]])


def test_a_repeated_sequence_id_is_an_error(tmp_path):
    err = error_of(tmp_path, "1 |a 1 2\n2 |a 3 4\n1 |a 5 6\n")
    assert (err.position.line, err.position.col) == (3, 1)
    assert "sequence id 1" in err.message and "line 1" in err.message


# ---- samples -----------------------------------------------------------------------------------

def test_alias_names_a_stream(tmp_path):
    seqs = read(tmp_path, "|F 1 2\n", streams=[CtfStream("features", 2, alias="F")])
    np.testing.assert_array_equal(seqs[0][1]["features"], [[1, 2]])


def test_sparse_entries_are_zero_based_index_value_pairs(tmp_path):
    seqs = read(tmp_path, "0 |a 0 0 |b 2:1.5 0:-2\n0 |a 0 0 |b 1:3\n", streams=[A2, B3_SPARSE])
    b = seqs[0][1]["b"]
    assert list(b.indices) == [2, 0, 1]
    np.testing.assert_array_equal(b.values, [1.5, -2, 3])
    assert list(b.offsets) == [0, 2, 3]


def test_a_sparse_sample_may_be_empty(tmp_path):
    seqs = read(tmp_path, "|b |a 1 2\n", streams=[A2, B3_SPARSE])
    assert len(seqs[0][1]["b"]) == 1 and len(seqs[0][1]["b"].indices) == 0


def test_samples_of_a_line_may_come_in_any_order(tmp_path):
    seqs = read(tmp_path, "|b 1:1 |a 1 2\n", streams=[A2, B3_SPARSE])
    np.testing.assert_array_equal(seqs[0][1]["a"], [[1, 2]])


def test_numbers_may_have_signs_fractions_and_exponents(tmp_path):
    seqs = read(tmp_path, "|a -1.5e2 +.25\n")
    np.testing.assert_allclose(seqs[0][1]["a"], [[-150.0, 0.25]])


def test_integers_beyond_int32_still_read_exactly_as_floats(tmp_path):
    seqs = read(tmp_path, "|a 3000000000 -7\n")
    np.testing.assert_array_equal(seqs[0][1]["a"], np.array([[3e9, -7]], dtype=np.float32))


def test_a_utf8_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "bom.ctf"
    path.write_bytes(b"\xef\xbb\xbf5 |a 1 2\n")
    assert sequences(CtfDeserializer(str(path), [A2]))[0][0] == 5


def test_a_utf16_file_is_a_data_error(tmp_path):
    path = tmp_path / "wide.ctf"
    path.write_bytes("|a 1 2\n".encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16"):
        CtfDeserializer(str(path), [A2])


def test_tabs_and_spaces_are_interchangeable(tmp_path):
    seqs = read(tmp_path, "0\t|a\t1  \t2\t|b\t0:1\n", streams=[A2, B3_SPARSE])
    np.testing.assert_array_equal(seqs[0][1]["a"], [[1, 2]])


def test_crlf_line_endings_read_like_lf(tmp_path):
    text = "0 |a 1 2\n0 |a 3 4 |b 2:1\n"
    lf = read(tmp_path, text, streams=[A2, B3_SPARSE])
    path = write(tmp_path, text, name="crlf.ctf", newline="\r\n")
    crlf = sequences(CtfDeserializer(path, [A2, B3_SPARSE]))
    np.testing.assert_array_equal(lf[0][1]["a"], crlf[0][1]["a"])
    assert list(crlf[0][1]["b"].indices) == [2]


def test_blank_lines_are_ignored(tmp_path):
    seqs = read(tmp_path, "\n|a 1 2\n   \n\n|a 3 4\n\n")
    assert len(seqs) == 2


def test_a_file_without_a_final_newline_reads_its_last_line(tmp_path):
    seqs = read(tmp_path, "|a 1 2\n|a 3 4")
    np.testing.assert_array_equal(seqs[1][1]["a"], [[3, 4]])


# ---- comments ----------------------------------------------------------------------------------

def test_a_comment_runs_to_the_end_of_the_line(tmp_path):
    seqs = read(tmp_path, "|a 1 2 |# anything: 3 4 here\n")
    np.testing.assert_array_equal(seqs[0][1]["a"], [[1, 2]])


def test_a_comment_ends_at_the_next_pipe(tmp_path):
    seqs = read(tmp_path, "|# note |a 1 2 |#another |# and more\n")
    np.testing.assert_array_equal(seqs[0][1]["a"], [[1, 2]])


# ---- sequences with streams of different lengths -----------------------------------------------

def test_a_per_sequence_label_appears_on_one_line_only(tmp_path):
    label = CtfStream("label", 2)
    seqs = read(tmp_path, "0 |a 1 1 |label 0 1\n0 |a 2 2\n0 |a 3 3\n", streams=[A2, label])
    assert len(seqs[0][1]["a"]) == 3 and len(seqs[0][1]["label"]) == 1


def test_sizes_count_lines_unless_a_stream_defines_the_minibatch_size(tmp_path):
    text = "0 |a 1 1 |label 0 1\n0 |a 2 2\n1 |a 3 3 |label 1 0\n"
    plain = CtfDeserializer(write(tmp_path, text), [A2, CtfStream("label", 2)])
    defining = CtfDeserializer(write(tmp_path, text, "b.ctf"), [A2, CtfStream("label", 2, defines_mb_size=True)])
    assert list(plain.chunk_sizes(0)) == [2, 1]
    assert list(defining.chunk_sizes(0)) == [1, 1]


def test_a_sequence_without_a_sample_of_some_stream_is_an_error(tmp_path):
    err = error_of(tmp_path, "0 |a 1 1 |label 0 1\n1 |a 2 2\n", streams=[A2, CtfStream("label", 2)])
    assert err.position.line == 2 and err.position.stream == "label"


def test_lines_may_not_outnumber_the_longest_stream(tmp_path):
    err = error_of(tmp_path, "0 |a 1 1\n0 |b 1:1\n", streams=[A2, B3_SPARSE])
    assert err.position.line == 1 and "spans 2 lines" in err.message


# ---- malformed lines: file, line, column, stream -----------------------------------------------

def test_too_few_dense_values_names_line_column_and_stream(tmp_path):
    err = error_of(tmp_path, "|a 1 2 |b\n|a 1 2 |b\n|b 1:1 |a 1\n", streams=[A2, B3_SPARSE])
    assert (err.position.line, err.position.col, err.position.stream) == (3, 8, "a")
    assert err.message == "expected 2 values, found 1"
    assert str(err).startswith(f"{err.position.file}:3:8: stream 'a': expected 2 values, found 1")


def test_too_many_dense_values_is_an_error(tmp_path):
    err = error_of(tmp_path, "|a 1 2 3\n")
    assert err.message == "expected 2 values, found 3" and err.position.col == 1


def test_sparse_index_at_or_beyond_dim_points_at_the_entry(tmp_path):
    err = error_of(tmp_path, "|b 0:1 3:1\n", streams=[B3_SPARSE])
    assert (err.position.line, err.position.col, err.position.stream) == (1, 8, "b")
    assert err.message == "sparse index 3 ≥ dim 3"


def test_sparse_entry_without_a_colon_is_an_error(tmp_path):
    err = error_of(tmp_path, "|b 1:1 2\n", streams=[B3_SPARSE])
    assert err.position.col == 8 and "index:value" in err.message


def test_unknown_stream_suggests_the_close_name(tmp_path):
    err = error_of(tmp_path, "|features 1 2\n|feature 1 2\n", streams=[CtfStream("features", 2)])
    assert (err.position.line, err.position.col) == (2, 2)
    assert err.message == "unknown stream 'feature'"
    assert "did you mean 'features'?" in err.hint


def test_invalid_number_points_at_the_token(tmp_path):
    err = error_of(tmp_path, "|a 1 2\n|a 1 x2\n")
    assert (err.position.line, err.position.col, err.position.stream) == (2, 6, "a")
    assert err.message == "invalid number 'x2'"


def test_a_stream_twice_on_one_line_is_an_error(tmp_path):
    err = error_of(tmp_path, "|a 1 2 |a 3 4\n")
    assert (err.position.col, err.position.stream) == (9, "a")


def test_text_before_the_first_pipe_is_an_error(tmp_path):
    err = error_of(tmp_path, "12 a 1 2\n")
    assert err.position.col == 4 and "expected '|'" in err.message


def test_a_line_with_only_a_comment_has_no_samples(tmp_path):
    err = error_of(tmp_path, "|a 1 2\n|# just a comment\n")
    assert err.position.line == 2 and "no samples" in err.message


def test_malformed_data_exits_with_the_data_exit_code(tmp_path):
    assert error_of(tmp_path, "|a 1\n").exit_code == EXIT_DATA


def test_a_missing_file_is_a_data_error_naming_the_file(tmp_path):
    with pytest.raises(DataError) as info:
        CtfDeserializer(str(tmp_path / "nope.ctf"), [A2])
    assert info.value.position.file.endswith("nope.ctf") and info.value.hint


def test_an_empty_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no samples"):
        CtfDeserializer(write(tmp_path, "\n\n"), [A2])


# ---- maxErrors ---------------------------------------------------------------------------------

def test_max_errors_skips_that_many_invalid_lines(tmp_path):
    seqs = read(tmp_path, "|a 1 2\n|a 1\n|a 3 4\n|zz 1 2\n|a 5 6\n", max_errors=2)
    assert [s["a"][0, 0] for _, s in seqs] == [1, 3, 5]


def test_one_invalid_line_more_than_max_errors_is_raised(tmp_path):
    err = error_of(tmp_path, "|a 1\n|a 3 4\n|a 1 2 3\n|a 9\n", max_errors=2)
    assert err.position.line == 4 and "maxErrors = 2" in err.hint


def test_an_invalid_line_drops_only_that_line_of_its_sequence(tmp_path):
    seqs = read(tmp_path, "0 |a 1 1\n0 |a 2\n0 |a 3 3\n", max_errors=1)
    np.testing.assert_array_equal(seqs[0][1]["a"], [[1, 1], [3, 3]])


def test_rereading_a_chunk_does_not_charge_its_errors_twice(tmp_path):
    d = CtfDeserializer(write(tmp_path, "|a 1\n|a 3 4\n"), [A2], max_errors=1)
    d.read_chunk(0)
    assert d.read_chunk(0).valid.tolist() == [False, True]


# ---- chunks ------------------------------------------------------------------------------------

def _varied_file(tmp_path, n: int = 300) -> str:
    rng = np.random.default_rng(1)
    lines = []
    for key in range(n):
        for t in range(int(rng.integers(1, 4))):
            label = f" |b {key % 3}:1" if t == 0 else ""
            lines.append(f"{key} |a {key} {t}.5{label}")
    return write(tmp_path, "\n".join(lines) + "\n")


def test_small_chunks_hold_the_same_data_as_one_chunk(tmp_path):
    path = _varied_file(tmp_path)
    one = CtfDeserializer(path, [A2, B3_SPARSE])
    many = CtfDeserializer(path, [A2, B3_SPARSE], chunk_size_bytes=500)
    assert one.num_chunks() == 1 and many.num_chunks() > 5
    for (k1, s1), (k2, s2) in zip(sequences(one), sequences(many), strict=True):
        assert k1 == k2
        np.testing.assert_array_equal(s1["a"], s2["a"])
        assert list(s1["b"].indices) == list(s2["b"].indices)


def test_chunks_never_split_a_sequence(tmp_path):
    d = CtfDeserializer(_varied_file(tmp_path), [A2, B3_SPARSE], chunk_size_bytes=200)
    keys = np.concatenate([d.chunk_keys(c) for c in range(d.num_chunks())])
    assert list(keys) == list(range(300))


def test_errors_in_a_later_chunk_report_the_true_line(tmp_path):
    text = "".join(f"|a {i} {i}\n" for i in range(200)) + "|a 7\n"
    d = CtfDeserializer(write(tmp_path, text), [A2], chunk_size_bytes=256)
    with pytest.raises(DataError) as info:
        sequences(d)
    assert info.value.position.line == 201
