"""The minibatch source, prefetch, batch layouts and the reader factory."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import settings_of

from netlang.errors import ConfigError, DataError
from netlang.readers.batch import ChunkData, SparseSequence, StreamBatch, StreamInfo
from netlang.readers.ctf import CtfDeserializer, CtfStream
from netlang.readers.factory import create_source
from netlang.readers.prefetch import PrefetchingSource
from netlang.readers.source import MinibatchSource, SourceWrapper
from netlang.readers.windows import TruncatedSource

X = CtfStream("x", 2)              # x = [key, step]: identifies the sequence and the time step
Y = CtfStream("y", 4, is_sparse=True)


def write_sequences(tmp_path, lengths, name="seqs.ctf") -> str:
    lines = []
    for key, length in enumerate(lengths):
        for t in range(length):
            label = f" |y {key % 4}:1" if t == 0 else ""
            lines.append(f"{key} |x {key} {t}{label}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def lengths_for(n, seed=0, longest=4):
    return [int(v) for v in np.random.default_rng(seed).integers(1, longest + 1, n)]


def source(tmp_path, lengths, *, chunk_size=None, **options) -> MinibatchSource:
    path = write_sequences(tmp_path, lengths)
    d = CtfDeserializer(path, [X, Y], chunk_size_bytes=chunk_size or 32 << 20)
    return MinibatchSource([d], **options)


def keys_of(mb) -> list[int]:
    return [int(seq[0, 0]) for seq in mb["x"].sequences]


def epoch_keys(src, num_samples=7) -> list[int]:
    keys = []
    while True:
        mb = src.next_minibatch(num_samples)
        keys += keys_of(mb)
        if mb.end_of_epoch:
            return keys


# ---- packing -----------------------------------------------------------------------------------

def test_file_order_without_randomization(tmp_path):
    src = source(tmp_path, lengths_for(40), randomize=False)
    assert epoch_keys(src) == list(range(40))


def test_a_minibatch_holds_whole_sequences_up_to_the_sample_count(tmp_path):
    lengths = lengths_for(50)
    src = source(tmp_path, lengths, randomize=False)
    mb = src.next_minibatch(10)
    taken = keys_of(mb)
    assert sum(lengths[k] for k in taken) <= 10 < sum(lengths[k] for k in range(len(taken) + 1))
    assert [len(s) for s in mb["x"].sequences] == [lengths[k] for k in taken]
    assert mb.num_samples == sum(lengths[k] for k in taken)


def test_a_minibatch_has_at_least_one_sequence(tmp_path):
    src = source(tmp_path, [5, 1], randomize=False)
    mb = src.next_minibatch(2)
    assert keys_of(mb) == [0] and mb.num_samples == 5


def test_num_samples_count_the_stream_that_defines_the_minibatch_size(tmp_path):
    path = write_sequences(tmp_path, [3, 2])
    d = CtfDeserializer(path, [X, CtfStream("y", 4, is_sparse=True, defines_mb_size=True)])
    mb = MinibatchSource([d], randomize=False).next_minibatch(100)
    assert mb.num_samples == 2 and mb.num_sequences == 2


def test_sparse_and_dense_streams_travel_together(tmp_path):
    mb = source(tmp_path, [2, 1, 3], randomize=False).next_minibatch(100)
    assert [int(s.indices[0]) for s in mb["y"].sequences] == [0, 1, 2]


# ---- randomization -----------------------------------------------------------------------------

def test_randomization_is_the_same_for_the_same_seed_and_epoch(tmp_path):
    lengths = lengths_for(60)
    first = epoch_keys(source(tmp_path, lengths, seed=3))
    second = epoch_keys(source(tmp_path, lengths, seed=3))
    assert first == second and first != list(range(60))


def test_randomization_differs_across_epochs(tmp_path):
    src = source(tmp_path, lengths_for(60), seed=3)
    assert epoch_keys(src) != epoch_keys(src)


def test_randomization_differs_across_seeds(tmp_path):
    lengths = lengths_for(60)
    assert epoch_keys(source(tmp_path, lengths, seed=1)) != epoch_keys(source(tmp_path, lengths, seed=2))


def test_sequences_gathered_from_many_chunks_keep_their_own_rows_and_labels(tmp_path):
    lengths = lengths_for(120)
    src = source(tmp_path, lengths, chunk_size=150, seed=8)
    for _ in range(10):
        mb = src.next_minibatch(40)
        assert mb.keys == keys_of(mb)
        for key, x, y in zip(mb.keys, mb["x"].sequences, mb["y"].sequences):
            assert x[:, 0].tolist() == [key] * lengths[key] and x[:, 1].tolist() == list(range(lengths[key]))
            assert y.indices.tolist() == [key % 4] and len(y) == 1


def test_a_randomized_sweep_visits_every_sequence_once(tmp_path):
    assert sorted(epoch_keys(source(tmp_path, lengths_for(80), seed=5))) == list(range(80))


def test_a_one_chunk_window_keeps_each_chunks_sequences_together(tmp_path):
    lengths = [1] * 200
    src = source(tmp_path, lengths, chunk_size=300, randomization_window=1, seed=4)
    d = src._deserializers[0]
    chunk_of = {int(k): c for c in range(d.num_chunks()) for k in d.chunk_keys(c)}
    visited = [chunk_of[k] for k in epoch_keys(src)]
    runs = [c for i, c in enumerate(visited) if i == 0 or c != visited[i - 1]]
    assert d.num_chunks() > 4 and sorted(runs) == list(range(d.num_chunks()))


def test_a_sample_based_window_groups_chunks_by_samples(tmp_path):
    src = source(tmp_path, [1] * 200, chunk_size=300, randomization_window=25, sample_based_window=True, seed=2)
    d = src._deserializers[0]
    chunk_of = {int(k): c for c in range(d.num_chunks()) for k in d.chunk_keys(c)}
    keys = epoch_keys(src)
    assert sorted(keys) == list(range(200)) and keys != list(range(200))
    # The first 20 sequences come from the first window: chunks worth about 25 samples, not all of them.
    assert d.num_chunks() > 8 and len({chunk_of[k] for k in keys[:20]}) <= 3


# ---- epochs ------------------------------------------------------------------------------------

def test_epoch_size_zero_is_one_sweep(tmp_path):
    src = source(tmp_path, lengths_for(30), randomize=False)
    assert epoch_keys(src) == list(range(30))
    assert epoch_keys(src) == list(range(30))


def test_the_last_minibatch_of_a_sweep_says_so(tmp_path):
    src = source(tmp_path, [1] * 10, randomize=False)
    flags = [src.next_minibatch(4).sweep_end for _ in range(3)]
    assert flags == [False, False, True]


def test_an_epoch_may_span_sweeps_and_the_next_one_continues_there(tmp_path):
    lengths = [1] * 20
    src = source(tmp_path, lengths, seed=9, epoch_size=30)
    epochs = [epoch_keys(src, num_samples=4) for _ in range(4)]
    assert [len(e) for e in epochs] == [30, 30, 30, 30]
    sweeps = source(tmp_path, lengths, seed=9)
    stream = [k for _ in range(6) for k in epoch_keys(sweeps, num_samples=4)]
    assert [k for e in epochs for k in e] == stream


def test_epochs_count_samples_of_variable_length_sequences(tmp_path):
    lengths = lengths_for(100)
    src = source(tmp_path, lengths, seed=1, epoch_size=50)
    totals = [sum(lengths[k] for k in epoch_keys(src, num_samples=8)) for _ in range(5)]
    assert all(abs(t - 50) < 4 for t in totals)


def test_start_epoch_moves_to_that_epochs_first_minibatch(tmp_path):
    lengths = [1] * 20
    src = source(tmp_path, lengths, seed=2, epoch_size=15)
    epoch_keys(src)
    second = epoch_keys(src)
    other = source(tmp_path, lengths, seed=2, epoch_size=15)
    other.start_epoch(1)
    assert epoch_keys(other) == second


# ---- distributed reading -----------------------------------------------------------------------

def test_ranks_get_disjoint_shares_whose_union_is_the_single_process_minibatch(tmp_path):
    lengths = lengths_for(90)
    single = source(tmp_path, lengths, seed=7)
    ranks = [source(tmp_path, lengths, seed=7) for _ in range(3)]
    for _ in range(6):
        whole = keys_of(single.next_minibatch(20))
        shares = [keys_of(src.next_minibatch(20, rank=r, num_ranks=3)) for r, src in enumerate(ranks)]
        assert sorted(k for share in shares for k in share) == sorted(whole)
        assert shares[0] == whole[0::3] and shares[2] == whole[2::3]


def test_distributed_minibatches_report_local_and_global_counts(tmp_path):
    lengths = lengths_for(30)
    single = source(tmp_path, lengths, randomize=False).next_minibatch(20)
    share = source(tmp_path, lengths, randomize=False).next_minibatch(20, rank=1, num_ranks=2)
    assert share.global_num_samples == single.num_samples
    assert share.global_num_sequences == single.num_sequences
    assert share.num_samples == sum(lengths[k] for k in keys_of(share))


# ---- checkpoints -------------------------------------------------------------------------------

def test_restore_resumes_at_exactly_the_next_minibatch(tmp_path):
    lengths = lengths_for(70)
    src = source(tmp_path, lengths, seed=11, epoch_size=60, chunk_size=200)
    for _ in range(13):
        src.next_minibatch(9)
    saved = json.loads(json.dumps(src.state()))
    expected = [keys_of(src.next_minibatch(9)) for _ in range(20)]
    fresh = source(tmp_path, lengths, seed=11, epoch_size=60, chunk_size=200)
    fresh.restore(saved)
    assert [keys_of(fresh.next_minibatch(9)) for _ in range(20)] == expected


def test_restore_refuses_a_state_from_different_data(tmp_path):
    saved = source(tmp_path, [1] * 10).state()
    other = source(tmp_path, [1] * 11)
    with pytest.raises(DataError, match="data changed"):
        other.restore(saved)


# ---- composition -------------------------------------------------------------------------------

def test_deserializers_are_joined_by_sequence_key(tmp_path):
    features = tmp_path / "f.ctf"
    features.write_text("".join(f"{k} |x {k} 0\n" for k in range(6)))
    labels = tmp_path / "l.ctf"
    labels.write_text("".join(f"{k} |y {k % 4}:1\n" for k in (5, 3, 1, 0, 2, 4)))
    src = MinibatchSource([CtfDeserializer(str(features), [X]), CtfDeserializer(str(labels), [Y])],
                          randomize=False)
    mb = src.next_minibatch(100)
    assert [int(s.indices[0]) for s in mb["y"].sequences] == [k % 4 for k in keys_of(mb)]


def test_a_key_missing_from_another_deserializer_is_left_out(tmp_path):
    features = tmp_path / "f.ctf"
    features.write_text("".join(f"{k} |x {k} 0\n" for k in range(5)))
    labels = tmp_path / "l.ctf"
    labels.write_text("".join(f"{k} |y 0:1\n" for k in (0, 1, 3, 4)))
    src = MinibatchSource([CtfDeserializer(str(features), [X]), CtfDeserializer(str(labels), [Y])],
                          randomize=False)
    assert epoch_keys(src, 100) == [0, 1, 3, 4]


def test_sequences_dropped_under_max_errors_are_left_out(tmp_path):
    path = tmp_path / "bad.ctf"
    path.write_text("|x 0 0\n|x 1\n|x 2 0\n")
    src = MinibatchSource([CtfDeserializer(str(path), [X], max_errors=1)], randomize=False)
    mb = src.next_minibatch(100)
    assert keys_of(mb) == [0, 2] and mb.num_samples == 2


def test_a_minibatch_whose_sequences_were_all_dropped_takes_more(tmp_path):
    path = tmp_path / "bad.ctf"
    path.write_text("|x 0\n|x 1 0\n|x 2 0\n")
    src = MinibatchSource([CtfDeserializer(str(path), [X], max_errors=1)], randomize=False)
    assert keys_of(src.next_minibatch(1)) == [1]


# ---- deserializers that read single sequences --------------------------------------------------

class PerSequence:
    """Wraps a deserializer and offers `read_sequences` (as the image deserializer does); whole chunks
    must then never be asked for. Records how many sequences each request asked for."""

    def __init__(self, inner):
        self.inner, self.description, self.requests = inner, inner.description, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read_chunk(self, chunk):
        raise AssertionError("a deserializer that reads single sequences was asked for a whole chunk")

    def read_sequences(self, chunks, positions, sweep):
        self.requests.append(len(chunks))
        read = [(self.inner.read_chunk(int(c)), np.array([p])) for c, p in zip(chunks, positions)]
        streams = {name: type(stream).concat([data.streams[name].take(p) for data, p in read])
                   for name, stream in read[0][0].streams.items()}
        return ChunkData(streams, np.concatenate([data.valid[p] for data, p in read]))


def test_a_deserializer_read_per_sequence_gives_the_minibatches_of_whole_chunks(tmp_path):
    path = write_sequences(tmp_path, lengths_for(90))

    def minibatches(wrap, rank):
        d = CtfDeserializer(path, [X, Y], chunk_size_bytes=200)
        src = MinibatchSource([wrap(d)], seed=3, epoch_size=70, randomization_window=3)
        return [src.next_minibatch(size, rank=rank, num_ranks=2) for size in [9, 4, 13] * 8]

    for rank in (0, 1):
        for a, b in zip(minibatches(PerSequence, rank), minibatches(lambda d: d, rank)):
            assert (a.keys, a.num_samples, a.global_num_samples, a.end_of_epoch) == \
                (b.keys, b.num_samples, b.global_num_samples, b.end_of_epoch)
            assert [s.tolist() for s in a["x"].sequences] == [s.tolist() for s in b["x"].sequences]
            assert [s.indices.tolist() for s in a["y"].sequences] == [s.indices.tolist() for s in b["y"].sequences]


def test_a_deserializer_read_per_sequence_is_asked_for_each_minibatchs_sequences_only(tmp_path):
    d = PerSequence(CtfDeserializer(write_sequences(tmp_path, lengths_for(60)), [X, Y], chunk_size_bytes=200))
    src = MinibatchSource([d], seed=1)
    counts = [src.next_minibatch(8).num_sequences for _ in range(10)]
    assert d.requests == counts


def test_a_deserializer_read_per_sequence_joins_one_read_by_chunks(tmp_path):
    (tmp_path / "f.ctf").write_text("".join(f"{k} |x {k} 0\n" for k in range(6)))
    (tmp_path / "l.ctf").write_text("".join(f"{k} |y {k % 4}:1\n" for k in (5, 3, 1, 0, 2, 4)))
    src = MinibatchSource([PerSequence(CtfDeserializer(str(tmp_path / "f.ctf"), [X])),
                           CtfDeserializer(str(tmp_path / "l.ctf"), [Y])], seed=2)
    mb = src.next_minibatch(100)
    assert sorted(keys_of(mb)) == list(range(6))
    assert [int(s.indices[0]) for s in mb["y"].sequences] == [k % 4 for k in keys_of(mb)]


def test_sequences_a_deserializer_read_per_sequence_drops_are_left_out(tmp_path):
    path = tmp_path / "bad.ctf"
    path.write_text("|x 0 0\n|x 1\n|x 2 0\n")
    src = MinibatchSource([PerSequence(CtfDeserializer(str(path), [X], max_errors=1))], randomize=False)
    mb = src.next_minibatch(100)
    assert keys_of(mb) == [0, 2] and mb.num_samples == 2
    src = MinibatchSource([PerSequence(CtfDeserializer(str(path), [X], max_errors=1))], randomize=False)
    assert keys_of(src.next_minibatch(1)) == [0] and keys_of(src.next_minibatch(1)) == [2]


# ---- wrappers ----------------------------------------------------------------------------------

def test_a_source_wrapper_hands_on_what_it_does_not_change(tmp_path):
    lengths = lengths_for(30)
    direct = source(tmp_path, lengths, seed=3, epoch_size=20)
    with SourceWrapper(source(tmp_path, lengths, seed=3, epoch_size=20)) as wrapped:
        assert wrapped.stream_infos() == direct.stream_infos() and wrapped.streams() == direct.streams()
        assert wrapped.samples_per_sweep == direct.samples_per_sweep
        wrapped.start_epoch(1)
        direct.start_epoch(1)
        saved = wrapped.state()
        first = keys_of(wrapped.next_minibatch(5))
        assert first == keys_of(direct.next_minibatch(5))
        wrapped.restore(saved)
        assert keys_of(wrapped.next_minibatch(5)) == first


def test_prefetch_and_truncation_are_source_wrappers():
    assert issubclass(PrefetchingSource, SourceWrapper) and issubclass(TruncatedSource, SourceWrapper)


# ---- prefetch ----------------------------------------------------------------------------------

def test_prefetch_gives_the_same_minibatches_as_reading_directly(tmp_path):
    lengths = lengths_for(50)
    direct = source(tmp_path, lengths, seed=1, epoch_size=40)
    with PrefetchingSource(source(tmp_path, lengths, seed=1, epoch_size=40)) as ahead:
        for _ in range(25):
            a, b = direct.next_minibatch(6), ahead.next_minibatch(6)
            assert keys_of(a) == keys_of(b) and a.end_of_epoch == b.end_of_epoch


def test_prefetch_follows_a_change_of_minibatch_size(tmp_path):
    lengths = lengths_for(50)
    direct = source(tmp_path, lengths, seed=1)
    with PrefetchingSource(source(tmp_path, lengths, seed=1)) as ahead:
        for size in (5, 5, 5, 12, 12, 3, 8, 8):
            assert keys_of(direct.next_minibatch(size)) == keys_of(ahead.next_minibatch(size))


def test_prefetch_state_describes_the_next_minibatch_the_caller_gets(tmp_path):
    lengths = lengths_for(50)
    direct = source(tmp_path, lengths, seed=4)
    reference = [keys_of(direct.next_minibatch(7)) for _ in range(9)][4:]
    with PrefetchingSource(source(tmp_path, lengths, seed=4)) as ahead:
        for _ in range(4):
            ahead.next_minibatch(7)
        saved = ahead.state()
        assert [keys_of(ahead.next_minibatch(7)) for _ in range(5)] == reference
    fresh = source(tmp_path, lengths, seed=4)
    fresh.restore(saved)
    assert [keys_of(fresh.next_minibatch(7)) for _ in range(5)] == reference


class FailingDeserializer:
    """Wraps a deserializer and fails when chunk `bad` is read."""

    def __init__(self, inner, bad):
        self.inner, self.bad, self.description = inner, bad, inner.description

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read_chunk(self, chunk):
        if chunk == self.bad:
            raise DataError("disk on fire")
        return self.inner.read_chunk(chunk)


def test_prefetch_hands_a_reading_error_to_the_caller(tmp_path):
    d = CtfDeserializer(write_sequences(tmp_path, [1] * 100), [X, Y], chunk_size_bytes=400)
    ahead = PrefetchingSource(MinibatchSource([FailingDeserializer(d, bad=2)], randomize=False))
    with pytest.raises(DataError, match="disk on fire"):
        for _ in range(100):
            ahead.next_minibatch(5)
    ahead.close()


def test_prefetch_close_stops_the_thread(tmp_path):
    ahead = PrefetchingSource(source(tmp_path, lengths_for(30)))
    ahead.next_minibatch(4)
    ahead.close()
    assert not any(t.name == "netlang-prefetch" and t.is_alive() for t in threading.enumerate())


# ---- batch layouts -----------------------------------------------------------------------------

def dense_batch(*lengths):
    info = StreamInfo("x", (2,))
    return StreamBatch.from_sequences(info, [np.full((n, 2), i + 1, dtype=np.float32) for i, n in enumerate(lengths)])


def sparse_batch():
    info = StreamInfo("w", (5,), is_sparse=True)
    first = SparseSequence(np.array([4, 1, 2], np.int32), np.array([1, 2, 3], np.float32), np.array([0, 1, 3]))
    second = SparseSequence(np.array([0], np.int32), np.array([7], np.float32), np.array([0, 1]))
    return StreamBatch.from_sequences(info, [first, second])


def test_to_dense_batch_stacks_one_sample_per_sequence():
    assert dense_batch(1, 1, 1).to_dense_batch(np.float64).shape == (3, 2)


def test_to_dense_batch_refuses_real_sequences():
    with pytest.raises(DataError, match="up to 2 samples"):
        dense_batch(1, 2).to_dense_batch()


def test_to_padded_pads_with_zeros_and_masks_the_padding():
    values, mask = dense_batch(2, 1).to_padded()
    assert values.shape == (2, 2, 2)
    assert mask.tolist() == [[True, True], [True, False]]
    assert values[1, 1].tolist() == [0, 0] and values[1, 0].tolist() == [1, 1]


def test_sparse_to_padded_scatters_each_row():
    values, mask = sparse_batch().to_padded()
    assert values[0, 0].tolist() == [0, 0, 0, 0, 1]
    assert values[1, 0].tolist() == [0, 2, 3, 0, 0]
    assert values[0, 1].tolist() == [7, 0, 0, 0, 0] and not values[1, 1].any()


def test_padded_csr_orders_rows_time_major_with_empty_padding_rows():
    indices, values, offsets = sparse_batch().padded_csr()
    assert offsets.tolist() == [0, 1, 2, 4, 4]
    assert indices.tolist() == [4, 0, 1, 2] and values.tolist() == [1, 7, 2, 3]


# ---- factory -----------------------------------------------------------------------------------

def ctf_reader(**extra):
    return {"readerType": "CNTKTextFormatReader", "file": "seqs.ctf", "randomize": False,
            "input": {"x": {"dim": 2}, "y": {"dim": 4, "format": "sparse"}}, **extra}


def test_legacy_reader_block_resolves_the_file_against_the_base_dir(tmp_path):
    write_sequences(tmp_path, [1, 2, 1])
    src = create_source(settings_of.reader(ctf_reader()), str(tmp_path))
    assert src.stream_infos() == {"x": (2, False), "y": (4, True)}
    assert keys_of(src.next_minibatch(100)) == [0, 1, 2]


def test_reader_keys_are_case_insensitive(tmp_path):
    write_sequences(tmp_path, [1, 1])
    cfg = {"READERTYPE": "cntkTextFormatReader", "File": "seqs.ctf", "Randomize": "false",
           "INPUT": {"x": {"DIM": 2}, "y": {"Dim": 4, "FORMAT": "Sparse"}}}
    assert create_source(settings_of.reader(cfg), str(tmp_path)).stream_infos()["y"] == (4, True)


def test_composite_reader_block_joins_its_deserializers(tmp_path):
    (tmp_path / "f.ctf").write_text("0 |x 0 0\n1 |x 1 0\n")
    (tmp_path / "l.ctf").write_text("1 |y 3:1\n0 |y 2:1\n")
    cfg = {"randomize": False, "deserializers": [
        {"type": "CNTKTextFormatDeserializer", "module": "CNTKTextFormatReader", "file": "f.ctf",
         "input": {"x": {"dim": 2}}},
        {"type": "CNTKTextFormatDeserializer", "module": "CNTKTextFormatReader", "file": "l.ctf",
         "input": {"y": {"dim": 4, "format": "sparse"}}}]}
    mb = create_source(settings_of.reader(cfg), str(tmp_path)).next_minibatch(10)
    assert [int(s.indices[0]) for s in mb["y"].sequences] == [2, 3]


def test_an_unknown_deserializer_type_is_a_config_error(tmp_path):
    # The schema knows the deserializer types: a misspelt one is refused when the block is read.
    cfg = {"deserializers": [{"type": "CNTKTextFormatDeserialiser", "file": "x", "input": {}}]}
    with pytest.raises(ConfigError, match="is not a valid type") as info:
        create_source(settings_of.reader(cfg), str(tmp_path))
    assert info.value.hint.startswith("did you mean 'CNTKTextFormatDeserializer'")


def test_a_deserializer_type_without_a_reader_is_a_config_error_at_its_line(tmp_path):
    cfg = {"deserializers": [{"type": "CNTKBinaryFormatDeserializer", "file": "x", "input": {}}]}
    with pytest.raises(ConfigError, match="not available") as info:
        create_source(settings_of.reader(cfg), str(tmp_path))
    assert info.value.span.line == 1 and info.value.key.endswith("deserializers.type")


def test_a_misspelt_stream_key_is_a_config_error(tmp_path):
    write_sequences(tmp_path, [1])
    cfg = ctf_reader(input={"x": {"dim": 2, "fromat": "dense"}, "y": {"dim": 4, "format": "sparse"}})
    with pytest.raises(ConfigError, match="unknown key 'fromat'"):
        create_source(settings_of.reader(cfg), str(tmp_path))


def test_a_network_input_without_a_reader_stream_is_a_config_error(tmp_path):
    write_sequences(tmp_path, [1])
    with pytest.raises(ConfigError, match="network input 'xx'"):
        create_source(settings_of.reader(ctf_reader()), str(tmp_path), streams_wanted={"xx": 2})


def test_a_dimension_mismatch_with_the_network_is_a_config_error(tmp_path):
    write_sequences(tmp_path, [1])
    with pytest.raises(ConfigError, match="dimension 3, but the reader stream has 2"):
        create_source(settings_of.reader(ctf_reader()), str(tmp_path), streams_wanted={"x": 3})


def test_streams_wanted_selects_the_streams_a_minibatch_carries(tmp_path):
    write_sequences(tmp_path, [1, 1])
    src = create_source(settings_of.reader(ctf_reader()), str(tmp_path), streams_wanted={"x": 2})
    assert list(src.next_minibatch(4).streams) == ["x"]


def test_epoch_size_argument_overrides_the_readers(tmp_path):
    write_sequences(tmp_path, [1] * 10)
    src = create_source(settings_of.reader(ctf_reader(epochSize=4)), str(tmp_path), epoch_size=6)
    assert len(epoch_keys(src, 100)) == 6


def test_factory_can_wrap_the_source_in_prefetch(tmp_path):
    write_sequences(tmp_path, [1] * 10)
    with create_source(settings_of.reader(ctf_reader()), str(tmp_path), prefetch=True) as src:
        assert isinstance(src, PrefetchingSource) and keys_of(src.next_minibatch(3)) == [0, 1, 2]
