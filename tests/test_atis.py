"""ATIS: preparation into CTF + vocabularies, the conlleval slot scorer, `netlang data`, the configs."""
from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlang.cli import main
from netlang.datasets import atis, conlleval
from netlang.datasets.conlleval import Chunk, chunks, score, split_label
from netlang.errors import EXIT_DATA, DataError
from netlang.readers.ctf import CtfDeserializer, CtfStream

ROOT = Path(__file__).resolve().parents[1]

# Two training and two test utterances, written by hand. "denver" is seen twice in training,
# "boston" once; "dallas" and "tomorrow" never (unknown test words); B-depart_date.day_name and
# atis_airfare occur only in the test set.
TRAIN_IOB = (
    "BOS flights from boston to denver EOS\tO O O B-fromloc.city_name O B-toloc.city_name atis_flight\n"
    "BOS fly to denver EOS\t O O O B-toloc.city_name atis_flight\n"          # a space after the TAB
)
TEST_IOB = (
    "BOS fares to dallas tomorrow EOS\tO O O B-toloc.city_name B-depart_date.day_name atis_airfare\n"
    "\n"                                                                       # blank lines are skipped
    "BOS flights to denver EOS\tO O O B-toloc.city_name atis_flight\n"
)


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def write_source(directory: Path, train: str = TRAIN_IOB, test: str = TEST_IOB) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / atis.TRAIN_SOURCE).write_text(train)
    (directory / atis.TEST_SOURCE).write_text(test)
    return directory


@pytest.fixture
def prepared(tmp_path) -> Path:
    atis.prepare_atis(str(write_source(tmp_path / "src")), str(tmp_path / "out"))
    return tmp_path / "out"


def wordlist(path: Path) -> list[str]:
    return path.read_text().splitlines()


def samples(line: str) -> dict[str, str]:
    """`0 |query 3:1 |# x` → {'query': '3:1', '#': 'x'} (the sequence id is left out)."""
    return {seg.split()[0]: " ".join(seg.split()[1:]) for seg in line.split("|")[1:]}


def read_back(path: Path, vocab_dirs: Path):
    dims = {name: len(wordlist(vocab_dirs / wl)) for name, wl in
            (("query", "query.wl"), ("slotLabels", "slots.wl"), ("intent", "intent.wl"))}
    streams = [CtfStream(name, dims.get(name, dims["query"]), is_sparse=True) for name in atis.STREAMS]
    return CtfDeserializer(str(path), streams)


# ---- preparation -------------------------------------------------------------------------------

def test_every_word_is_one_line_with_its_utterance_index_as_sequence_id(prepared):
    lines = (prepared / atis.TEST_FILE).read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0"] * 6 + ["1"] * 5


def test_query_stream_holds_the_word_ids_of_query_wl(prepared):
    words = wordlist(prepared / "query.wl")
    lines = (prepared / atis.TRAIN_FILE).read_text().splitlines()
    ids = [int(samples(line)["query"].split(":")[0]) for line in lines[:7]]
    assert [words[i] for i in ids] == "BOS flights from boston to denver EOS".split()


def test_prev_and_next_word_streams_hold_the_neighbours_and_the_word_itself_at_the_ends(prepared):
    lines = (prepared / atis.TRAIN_FILE).read_text().splitlines()[:7]
    ids = [samples(line)["query"] for line in lines]
    assert [samples(line)["prevWord"] for line in lines] == [ids[0]] + ids[:-1]
    assert [samples(line)["nextWord"] for line in lines] == ids[1:] + [ids[-1]]


def test_slot_stream_holds_each_words_tag_and_eos_gets_o(prepared):
    labels = wordlist(prepared / "slots.wl")
    lines = (prepared / atis.TRAIN_FILE).read_text().splitlines()[:7]
    tags = [labels[int(samples(line)["slotLabels"].split(":")[0])] for line in lines]
    assert tags == ["O", "O", "O", "B-fromloc.city_name", "O", "B-toloc.city_name", "O"]


def test_intent_is_on_the_first_line_of_each_utterance_only(prepared):
    intents = wordlist(prepared / "intent.wl")
    lines = (prepared / atis.TEST_FILE).read_text().splitlines()
    carrying = [k for k, line in enumerate(lines) if "intent" in samples(line)]
    assert carrying == [0, 6]
    assert [intents[int(samples(lines[k])["intent"].split(":")[0])] for k in carrying] == \
        ["atis_airfare", "atis_flight"]


def test_each_line_ends_with_a_comment_showing_the_word_and_its_tag(prepared):
    first = (prepared / atis.TRAIN_FILE).read_text().splitlines()[3]
    assert samples(first)["#"] == "boston B-fromloc.city_name"


def test_vocabulary_is_unk_then_the_sorted_training_words(prepared):
    assert wordlist(prepared / "query.wl") == ["<unk>", "BOS", "EOS", "boston", "denver", "flights", "fly",
                                               "from", "to"]


def test_test_words_never_seen_in_training_map_to_unk(prepared):
    lines = (prepared / atis.TEST_FILE).read_text().splitlines()
    assert [samples(line)["query"] for line in lines[3:5]] == ["0:1", "0:1"]     # dallas, tomorrow


def test_training_words_rarer_than_min_count_map_to_unk(tmp_path):
    atis.prepare_atis(str(write_source(tmp_path / "src")), str(tmp_path / "out"), min_count=2)
    words = wordlist(tmp_path / "out" / "query.wl")
    assert words == ["<unk>", "BOS", "EOS", "denver", "to"]
    boston = (tmp_path / "out" / atis.TRAIN_FILE).read_text().splitlines()[3]
    assert samples(boston)["query"] == "0:1"


def test_label_lists_are_sorted_training_labels_then_test_only_labels(prepared):
    assert wordlist(prepared / "slots.wl") == ["B-fromloc.city_name", "B-toloc.city_name", "O",
                                               "B-depart_date.day_name"]
    assert wordlist(prepared / "intent.wl") == ["atis_flight", "atis_airfare"]


def test_prepared_files_read_back_with_the_ctf_reader(prepared):
    reader = read_back(prepared / atis.TRAIN_FILE, prepared)
    chunk = reader.read_chunk(0)
    assert chunk.valid.tolist() == [True, True]
    assert chunk.streams["query"].lengths().tolist() == [7, 5]
    assert chunk.streams["intent"].lengths().tolist() == [1, 1]


def test_preparation_is_deterministic(tmp_path):
    source = write_source(tmp_path / "src")
    atis.prepare_atis(str(source), str(tmp_path / "a"))
    atis.prepare_atis(str(source), str(tmp_path / "b"))
    for name in (atis.TRAIN_FILE, atis.TEST_FILE, "query.wl", "slots.wl", "intent.wl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_multi_intent_labels_are_one_class(tmp_path):
    train = "BOS fares EOS\tO O atis_airfare#atis_flight\n"
    atis.prepare_atis(str(write_source(tmp_path / "src", train=train)), str(tmp_path / "out"))
    assert wordlist(tmp_path / "out" / "intent.wl")[0] == "atis_airfare#atis_flight"


@pytest.mark.parametrize("line, message, column", [
    ("BOS fly EOS O O atis_flight", "one TAB", 1),
    ("BOS fly\tO O atis_flight", "must end with EOS", 5),
    ("BOS fly EOS\tO atis_flight", "3 words but 1 tags", 13),
    ("BOS fly EOS\tO X-city atis_flight", "'X-city' is not an IOB slot tag", 15),
])
def test_a_malformed_line_is_a_data_error_with_line_and_column(tmp_path, line, message, column):
    source = write_source(tmp_path / "src", train=TRAIN_IOB + line + "\n")
    with pytest.raises(DataError, match=message) as err:
        atis.prepare_atis(str(source), str(tmp_path / "out"))
    assert (err.value.position.line, err.value.position.col) == (3, column)


def test_a_missing_source_file_is_a_data_error_and_nothing_is_written(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / atis.TRAIN_SOURCE).write_text(TRAIN_IOB)
    with pytest.raises(DataError, match="atis.test.w-intent.iob not found"):
        atis.prepare_atis(str(source), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_data_prepare_atis_command_writes_and_reports_the_files(tmp_path):
    code, out, _ = run_cli("data", "prepare", "atis", "--source", str(write_source(tmp_path / "src")),
                           "--out", str(tmp_path / "out"))
    assert code == 0
    assert "atis.train.ctf (2 sequences)" in out and "query.wl (9 entries)" in out


def test_data_prepare_atis_command_exits_65_on_missing_data(tmp_path):
    code, _, err = run_cli("data", "prepare", "atis", "--source", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == EXIT_DATA and "not found" in err


# ---- the real data (never copied into the repository) ------------------------------------------

def shared_atis_dir() -> Path | None:
    for base in (os.environ.get("NETLANG_DATA"), ROOT.parent / "shared" / "data"):
        if base and (Path(base) / "atis" / atis.TRAIN_SOURCE).is_file():
            return Path(base) / "atis"
    return None


@pytest.fixture(scope="module")
def real_atis(tmp_path_factory) -> Path:
    source = shared_atis_dir()
    if source is None:
        pytest.skip("the ATIS data is not available (set NETLANG_DATA to the directory holding atis/)")
    out = tmp_path_factory.mktemp("atis")
    counts = atis.prepare_atis(str(source), str(out))
    assert counts[atis.TRAIN_FILE] == 4978 and counts[atis.TEST_FILE] == 893
    return out


def test_real_atis_has_4978_training_and_893_test_utterances(real_atis):
    for name, queries, words in ((atis.TRAIN_FILE, 4978, 66156), (atis.TEST_FILE, 893, 10950)):
        index = read_back(real_atis / name, real_atis).index
        assert (len(index.keys), int(index.sizes.sum())) == (queries, words)


def test_real_atis_vocabularies_have_901_words_127_slots_26_intents(real_atis):
    sizes = [len(wordlist(real_atis / name)) for name in ("query.wl", "slots.wl", "intent.wl")]
    assert sizes == [901, 127, 26]


def test_real_atis_reference_labels_read_back_from_ctf_equal_the_iob_tags(real_atis):
    labels = atis.Vocabulary.read(str(real_atis / "slots.wl"))
    from_ctf = atis.read_slot_references(str(real_atis / atis.TEST_FILE), labels)
    from_iob = [list(u.slots) for u in atis.read_iob(str(shared_atis_dir() / atis.TEST_SOURCE))]
    assert from_ctf == from_iob


# ---- conlleval chunk rules ---------------------------------------------------------------------

def test_a_label_splits_at_its_first_hyphen_only():
    assert split_label("B-arrive_time.start-time") == ("B", "arrive_time.start-time")
    assert split_label("O") == ("O", "")


def test_b_then_i_of_the_same_type_is_one_chunk():
    assert chunks(["O", "B-city", "I-city", "O"]) == [Chunk(1, 3, "city")]


def test_i_after_o_starts_a_chunk():
    assert chunks(["O", "I-city", "I-city"]) == [Chunk(1, 3, "city")]


def test_i_of_another_type_starts_a_new_chunk():
    assert chunks(["B-city", "I-city", "I-state"]) == [Chunk(0, 2, "city"), Chunk(2, 3, "state")]


def test_b_after_b_of_the_same_type_starts_a_new_chunk():
    assert chunks(["B-city", "B-city"]) == [Chunk(0, 1, "city"), Chunk(1, 2, "city")]


def test_o_words_form_no_chunk():
    assert chunks(["O", "O"]) == []


def test_a_chunk_ends_at_the_end_of_the_sentence():
    assert chunks(["O", "B-time", "I-time"]) == [Chunk(1, 3, "time")]


# ---- scores ------------------------------------------------------------------------------------

def test_identical_labels_score_100():
    result = score([(["B-a", "I-a", "O", "B-b"], ["B-a", "I-a", "O", "B-b"])])
    assert (result.precision, result.recall, result.f1, result.accuracy) == (100.0, 100.0, 100.0, 100.0)


def test_precision_recall_and_f1_count_exact_chunk_matches():
    # Reference chunks: a[0,2), b[3,4), c[5,6). Guessed: a[0,1) (wrong end), b[3,4), c[5,6), d[6,7).
    reference = ["B-a", "I-a", "O", "B-b", "O", "B-c", "O"]
    guessed = ["B-a", "O", "O", "B-b", "O", "B-c", "B-d"]
    result = score([(reference, guessed)])
    assert (result.total.reference, result.total.guessed, result.total.correct) == (3, 4, 2)
    assert result.precision == pytest.approx(50.0)
    assert result.recall == pytest.approx(200 / 3)
    assert result.f1 == pytest.approx(2 * 50 * (200 / 3) / (50 + 200 / 3))


def test_a_guessed_chunk_starting_with_i_matches_a_reference_chunk_starting_with_b():
    result = score([(["O", "B-city", "I-city"], ["O", "I-city", "I-city"])])
    assert result.total.correct == 1
    assert result.accuracy == pytest.approx(200 / 3)      # the labels differ at one word


def test_a_chunk_of_the_wrong_type_is_no_match():
    result = score([(["B-fromloc", "I-fromloc"], ["B-toloc", "I-toloc"])])
    assert (result.total.guessed, result.total.correct) == (1, 0)


def test_a_type_change_inside_a_guessed_chunk_splits_it_and_loses_the_match():
    result = score([(["B-city", "I-city"], ["B-city", "I-state"])])
    assert (result.total.guessed, result.total.correct) == (2, 0)


def test_chunks_do_not_run_across_sentences():
    # As one sentence, I-x at the start of the second would continue the first sentence's chunk.
    result = score([(["O", "B-x"], ["O", "B-x"]), (["I-x", "O"], ["I-x", "O"])])
    assert (result.total.reference, result.total.correct) == (2, 2)


def test_no_guessed_chunks_give_zero_precision_and_f1():
    result = score([(["B-a"], ["O"])])
    assert (result.precision, result.recall, result.f1) == (0.0, 0.0, 0.0)


def test_scores_are_kept_per_slot_type():
    result = score([(["B-a", "B-b", "B-b"], ["B-a", "B-b", "O"])])
    assert (result.by_type["b"].reference, result.by_type["b"].correct) == (2, 1)
    assert result.by_type["a"].f1 == 100.0


def _one_pass_conlleval(pairs):
    """conlleval's own counting: one pass over the words, following whether the chunk that started
    at the same word in both sequences is still the same in both (an oracle for the chunk sets)."""
    found_ref = found_guess = correct = 0
    in_correct = False
    last_ref, last_guess = ("O", ""), ("O", "")
    for reference, guessed in pairs:
        for ref_label, guess_label in [*zip(reference, guessed), ("O", "O")]:     # sentence break
            ref, guess = split_label(ref_label), split_label(guess_label)
            ref_ends = conlleval.ends_chunk(last_ref[0], ref[0], last_ref[1], ref[1])
            guess_ends = conlleval.ends_chunk(last_guess[0], guess[0], last_guess[1], guess[1])
            if in_correct:
                if ref_ends and guess_ends and last_ref[1] == last_guess[1]:
                    in_correct, correct = False, correct + 1
                elif ref_ends != guess_ends or ref[1] != guess[1]:
                    in_correct = False
            ref_starts = conlleval.starts_chunk(last_ref[0], ref[0], last_ref[1], ref[1])
            guess_starts = conlleval.starts_chunk(last_guess[0], guess[0], last_guess[1], guess[1])
            if ref_starts and guess_starts and ref[1] == guess[1]:
                in_correct = True
            found_ref += ref_starts
            found_guess += guess_starts
            last_ref, last_guess = ref, guess
    return found_ref, found_guess, correct + in_correct


LABELS = st.sampled_from(["O", "B-a", "I-a", "B-b", "I-b", "E-a", "I-a-b", "."])
SENTENCE_PAIRS = st.lists(st.integers(1, 8).flatmap(
    lambda n: st.tuples(st.lists(LABELS, min_size=n, max_size=n), st.lists(LABELS, min_size=n, max_size=n))),
    min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(SENTENCE_PAIRS)
def test_exact_chunk_matching_counts_what_conlleval_counts_in_one_pass(pairs):
    result = score(pairs)
    assert (result.total.reference, result.total.guessed, result.total.correct) == _one_pass_conlleval(pairs)


# ---- score-slots: reading predictions and references -------------------------------------------

def test_predictions_without_sentence_breaks_are_cut_by_the_reference(tmp_path):
    (tmp_path / "pred").write_text("O\nB-a\nI-a\nO\n")
    cut = conlleval.split_like(conlleval.read_predictions(str(tmp_path / "pred")), [["O", "B-a"], ["I-a", "O"]])
    assert cut == [["O", "B-a"], ["I-a", "O"]]


def test_predictions_with_blank_lines_between_sentences_are_checked_against_the_reference(tmp_path):
    (tmp_path / "pred").write_text("O\nB-a\n\nO\n")
    predictions = conlleval.read_predictions(str(tmp_path / "pred"))
    with pytest.raises(DataError, match="sentence 1 has 2 predicted labels, the reference has 3") as err:
        conlleval.split_like(predictions, [["O", "B-a", "O"], ["O"]])
    assert err.value.position.line == 1


def test_the_last_word_of_a_line_is_the_predicted_label(tmp_path):
    (tmp_path / "pred").write_text("boston B-city I-city\n")
    assert conlleval.read_predictions(str(tmp_path / "pred")).labels == ["I-city"]


def test_a_different_number_of_predictions_is_a_data_error(tmp_path):
    (tmp_path / "pred").write_text("O\nO\nO\n")
    with pytest.raises(DataError, match="3 predicted labels for 2 reference words"):
        conlleval.split_like(conlleval.read_predictions(str(tmp_path / "pred")), [["O", "O"]])


def test_reference_labels_read_back_from_the_prepared_ctf(prepared):
    labels = atis.Vocabulary.read(str(prepared / "slots.wl"))
    references = atis.read_slot_references(str(prepared / atis.TEST_FILE), labels)
    assert references == [["O", "O", "O", "B-toloc.city_name", "B-depart_date.day_name", "O"],
                          ["O", "O", "O", "B-toloc.city_name", "O"]]


def test_score_slots_command_prints_conlleval_figures_as_json(prepared, tmp_path):
    # The second query's city is missed: 3 reference chunks, 2 guessed, both right.
    (tmp_path / "pred").write_text("O\nO\nO\nB-toloc.city_name\nB-depart_date.day_name\nO\n" + "O\n" * 5)
    code, out, err = run_cli("data", "score-slots", str(tmp_path / "pred"), str(prepared / atis.TEST_FILE), "--json")
    assert code == 0, err
    figures = json.loads(out)
    assert (figures["reference"], figures["guessed"], figures["correct"]) == (3, 2, 2)
    assert figures["precision"] == 100.0 and figures["f1"] == pytest.approx(80.0)
    assert figures["accuracy"] == pytest.approx(100 * 10 / 11)


def test_score_slots_command_prints_the_conlleval_summary(prepared, tmp_path):
    (tmp_path / "pred").write_text("O\n" * 11)
    code, out, _ = run_cli("data", "score-slots", str(tmp_path / "pred"), str(prepared / atis.TEST_FILE))
    assert code == 0
    assert "processed 11 tokens with 3 phrases; found: 0 phrases; correct: 0." in out


def test_score_slots_command_takes_an_iob_reference(tmp_path):
    source = write_source(tmp_path / "src")
    (tmp_path / "pred").write_text("O\nO\nO\nB-toloc.city_name\nO\nO\n\nO\nO\nO\nB-toloc.city_name\nO\n")
    code, out, _ = run_cli("data", "score-slots", str(tmp_path / "pred"), str(source / atis.TEST_SOURCE), "--json")
    assert code == 0 and json.loads(out)["correct"] == 2


def test_score_slots_command_rejects_a_prediction_that_is_no_label(prepared, tmp_path):
    (tmp_path / "pred").write_text("O\n0.25\n" + "O\n" * 9)
    code, _, err = run_cli("data", "score-slots", str(tmp_path / "pred"), str(prepared / atis.TEST_FILE))
    assert code == EXIT_DATA
    assert ":2: data error: '0.25' is not a label of the label file" in err


# ---- configs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    # embedding 901x150; LSTM on the 450-wide window: W 1200x450, H 1200x300, b 1200; dense 300→127
    ("atis_slots_lstm.net", 901 * 150 + 1200 * 450 + 1200 * 300 + 1200 + 300 * 127 + 127),
    # embedding; two LSTMs of 150 on the window: W 600x450, H 600x150, b 600 each; dense 300→127
    ("atis_slots_bilstm.net", 901 * 150 + 2 * (600 * 450 + 600 * 150 + 600) + 300 * 127 + 127),
    # embedding; two LSTMs of 150 on 150: W 600x150, H 600x150, b 600 each; dense 300→26
    ("atis_intent.net", 901 * 150 + 2 * (600 * 150 + 600 * 150 + 600) + 300 * 26 + 26),
])
def test_atis_config_builds_without_data_with_its_parameter_count(name, expected):
    code, out, err = run_cli("check", str(ROOT / "configs" / "text" / name), "--json", "--no-data")
    assert code == 0, err
    assert json.loads(out)["actions"]["train"]["parameters"] == expected
