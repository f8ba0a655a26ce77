"""FSDD: WAV reading, log-mel features, HTK files, the MLF and split, `netlang data prepare fsdd`, the
utterance scorer (`netlang data score-utterances`), the speech configs, and the real data set."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import wave
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from netlang.cli import main
from netlang.datasets import fsdd
from netlang.datasets.utterance_scoring import frame_decisions, reference_word, score_frames
from netlang.errors import EXIT_DATA, DataError
from netlang.readers.htk import parse_mlf, parse_scp, read_frames, read_header

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "configs" / "speech"
RATE = fsdd.SAMPLE_RATE


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(np.clip(samples, -1, 0.999) * 32768, dtype="<i2").tobytes())
    return path


def tone(digit: int, before: int = 400, during: int = 1600, after: int = 400) -> np.ndarray:
    """Silence, a tone whose pitch says the digit, silence (sample counts at 8 kHz)."""
    t = np.arange(during) / RATE
    return np.concatenate([np.zeros(before), 0.5 * np.sin(2 * np.pi * (300 + 150 * digit) * t), np.zeros(after)])


def source_dir(tmp_path: Path, speakers=("ann", "bob"), digits=(0, 1, 2), indices=range(12)) -> Path:
    recordings = tmp_path / "src" / "recordings"
    recordings.mkdir(parents=True)
    for speaker in speakers:
        for digit in digits:
            for index in indices:
                write_wav(recordings / f"{digit}_{speaker}_{index}.wav", tone(digit, after=400 + 80 * index))
    (recordings / "README.md").write_text("not a recording")
    return tmp_path / "src"


@pytest.fixture
def prepared(tmp_path) -> Path:
    fsdd.prepare_fsdd(str(source_dir(tmp_path)), str(tmp_path / "out"))
    return tmp_path / "out"


# ---- audio and features -------------------------------------------------------------------------

def test_a_wav_file_reads_as_floats(tmp_path):
    samples = read = fsdd.read_wav(str(write_wav(tmp_path / "x.wav", np.array([0.0, 0.5, -0.5]))))
    assert read.tolist() == [0.0, 0.5, -0.5] and samples.dtype == np.float64


@pytest.mark.parametrize("rate, channels, found", [(16000, 1, "1 channel\\(s\\), 16-bit, 16000 Hz"),
                                                   (8000, 2, "2 channel\\(s\\), 16-bit, 8000 Hz")])
def test_other_audio_layouts_are_refused(tmp_path, rate, channels, found):
    path = write_wav(tmp_path / "x.wav", np.zeros(400), rate=rate, channels=channels)
    with pytest.raises(DataError, match=f"expected mono 16-bit audio at 8000 Hz, found {found}"):
        fsdd.read_wav(str(path))


def test_a_frame_every_10_ms_for_every_full_25_ms_window():
    assert [len(fsdd.frames_of(np.zeros(n))) for n in (199, 200, 279, 280, 2400)] == [0, 1, 1, 2, 28]


def test_the_mel_filters_are_triangles_that_cover_the_band():
    filters = fsdd.mel_filterbank()
    assert filters.shape == (fsdd.BANDS, fsdd.FFT_SIZE // 2 + 1)
    assert filters.max() <= 1.0 and (filters.max(axis=1) > 0.5).all()
    centres = filters.argmax(axis=1)
    assert (np.diff(centres) > 0).all()                       # ascending, none empty


def test_a_tone_is_loudest_in_the_band_of_its_pitch():
    features = fsdd.log_mel(tone(9, before=0, after=0), fsdd.mel_filterbank())
    hz = 300 + 150 * 9
    band = int(np.argmin(np.abs(700 * (10 ** (np.linspace(0, fsdd.mel(4000), fsdd.BANDS + 2)[1:-1] / 2595) - 1) - hz)))
    assert abs(int(np.median(features.argmax(axis=1))) - band) <= 1


def test_speech_is_from_the_first_to_the_last_frame_within_30_db_of_the_loudest():
    # Silence 0-399, tone 400-1999, silence 2000-2399: frames 3 … 24 overlap the tone.
    assert fsdd.speech_frames(tone(1)) == (3, 25)
    assert fsdd.speech_frames(tone(1, before=0, after=0)) == (0, 18)


# ---- written files ----------------------------------------------------------------------------------

def test_features_are_big_endian_htk_fbank_files(prepared):
    path = prepared / "features" / "1_ann_0.fbank"
    header = read_header(str(path), "utterance '1_ann_0'")
    assert (header.frames, header.period, header.dim, header.kind, header.big_endian) == (28, 100000, 24, 7, True)
    signal = fsdd.read_wav(str(prepared.parent / "src" / "recordings" / "1_ann_0.wav"))
    expected = fsdd.log_mel(signal, fsdd.mel_filterbank())
    assert np.array_equal(read_frames(str(path), header, 0, 28), expected)


def test_the_mlf_labels_speech_with_the_word_and_the_edges_with_silence(prepared):
    labels = fsdd.LABELS
    utterances = {u.key: u for u in parse_mlf(str(prepared / "fsdd.mlf"), {w: k for k, w in enumerate(labels)})}
    assert len(utterances) == 2 * 3 * 12
    frames = [labels[k] for k in utterances["2_bob_0"].labels]
    assert frames == ["sil"] * 3 + ["two"] * 22 + ["sil"] * 3
    assert len(utterances["2_bob_11"].labels) == 28 + 11


def test_the_label_mapping_lists_the_words_then_silence(prepared):
    assert (prepared / "labels.txt").read_text().split() == [*fsdd.DIGITS, "sil"]


def test_the_split_takes_indices_0_4_for_test_and_5_49_for_training(prepared):
    def indices(name):
        return sorted({int(e.key.rsplit("_", 1)[1]) for e in parse_scp(str(prepared / name))})
    assert indices("test.scp") == [0, 1, 2, 3, 4]
    assert indices("train.scp") == list(range(5, 12))
    assert indices("dev.scp") == [5, 6, 7, 8, 9]
    assert indices("train_nodev.scp") == [10, 11]
    assert len(parse_scp(str(prepared / "test.scp"))) == 2 * 3 * 5
    line = (prepared / "train.scp").read_text().splitlines()[0]
    assert line == "0_ann_5=features/0_ann_5.fbank"           # relative to the list: the folder can move


def test_preparation_is_deterministic(tmp_path):
    source = source_dir(tmp_path)
    fsdd.prepare_fsdd(str(source), str(tmp_path / "a"))
    fsdd.prepare_fsdd(str(source / "recordings"), str(tmp_path / "b"))      # the recordings folder itself
    for name in ("fsdd.mlf", "train.scp", "features/0_bob_3.fbank"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_data_prepare_fsdd_command(tmp_path):
    code, out, _ = run_cli("data", "prepare", "fsdd", "--source", str(source_dir(tmp_path)), "--out", str(tmp_path / "o"))
    assert code == 0
    assert "train.scp (42 utterances)" in out and "labels.txt (11 labels)" in out


def test_data_prepare_fsdd_without_recordings_exits_65(tmp_path):
    code, _, err = run_cli("data", "prepare", "fsdd", "--source", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == EXIT_DATA and "no recordings named" in err


# ---- the scorer ----------------------------------------------------------------------------------------

SIL = 2        # classes: 0 and 1 are words, 2 is silence


def test_the_reference_is_the_one_word_the_frames_carry():
    assert reference_word(np.array([2, 1, 1, 2]), SIL) == 1
    assert reference_word(np.array([2, 2]), SIL) is None
    assert reference_word(np.array([0, 1]), SIL) is None


def test_decisions_average_log_posteriors_over_speech_frames_only():
    # Utterance 0: its silence frame strongly says word 1, its speech frames narrowly word 0.
    log_posteriors = np.log(np.array([[0.01, 0.98, 0.01], [0.5, 0.4, 0.1], [0.5, 0.4, 0.1],
                                      [0.1, 0.2, 0.7], [0.3, 0.6, 0.1]]))
    speech = np.array([False, True, True, False, True])
    assert frame_decisions(log_posteriors, np.array([0, 3, 5]), speech, SIL).tolist() == [0, 1]


def test_silence_is_never_the_decision():
    log_posteriors = np.log(np.array([[0.2, 0.1, 0.7], [0.1, 0.25, 0.65]]))
    assert frame_decisions(log_posteriors, np.array([0, 2]), np.array([True, True]), SIL).tolist() == [1]


def test_frame_scores_count_utterances_and_frames():
    log_posteriors = np.log(np.array([[0.1, 0.1, 0.8], [0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]]))
    result = score_frames(log_posteriors, [np.array([2, 0, 0]), np.array([1])], SIL)
    # Utterance 0 is word 0 (0.7 · 0.3 > 0.2 · 0.6 over its speech frames), its frame 2 wrong;
    # utterance 1 (word 1) is decided word 0, and its frame is wrong.
    assert (result.utterances, result.frames, result.frame_errors) == (2, 4, 2)
    assert result.correct == 1 and result.accuracy == 50.0 and result.frame_error_rate == 50.0


def scorer_files(tmp_path: Path) -> Path:
    (tmp_path / "labels.txt").write_text("a\nb\nsil\n")
    (tmp_path / "x.mlf").write_text('#!MLF!#\n"*/u1.lab"\n0 100000 sil\n100000 300000 b\n.\n'
                                    '"*/u0.lab"\n0 200000 a\n.\n"*/other.lab"\n0 100000 b\n.\n')
    (tmp_path / "test.scp").write_text("u0=f/u0.htk\nu1=f/u1.htk\n")
    return tmp_path


def score_command(tmp_path: Path, output: str, *extra):
    return run_cli("data", "score-utterances", str(tmp_path / output), "--scp", str(tmp_path / "test.scp"),
                   "--mlf", str(tmp_path / "x.mlf"), "--labels", str(tmp_path / "labels.txt"), *extra)


def test_score_utterances_from_frame_log_posteriors(tmp_path):
    scorer_files(tmp_path)
    rows = np.log([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1],                     # u0: a a
                   [0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])  # u1: sil b b (sil frame ignored)
    np.savetxt(tmp_path / "out.logPosterior", rows)
    code, out, _ = score_command(tmp_path, "out.logPosterior", "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["utterances"], result["correct"], result["frames"], result["frame_errors"]) == (2, 2, 5, 1)
    code, out, _ = score_command(tmp_path, "out.logPosterior")
    assert "accuracy 100.00 % (2 correct)" in out and "frame error rate 20.00 %" in out


def test_score_utterances_from_one_line_per_utterance(tmp_path):
    scorer_files(tmp_path)
    np.savetxt(tmp_path / "out.z", np.array([[0.1, 0.9], [0.2, 0.8]]))      # b, b: one right
    code, out, _ = score_command(tmp_path, "out.z", "--json")
    assert code == 0 and json.loads(out)["correct"] == 1 and json.loads(out)["frames"] is None


def test_an_output_that_fits_neither_frames_nor_utterances_exits_65(tmp_path):
    scorer_files(tmp_path)
    np.savetxt(tmp_path / "out.z", np.zeros((4, 3)))
    code, _, err = score_command(tmp_path, "out.z")
    assert code == EXIT_DATA and "4 lines of 3 values fit neither the 5 frames" in err


def test_an_utterance_with_two_words_cannot_be_scored(tmp_path):
    scorer_files(tmp_path)
    (tmp_path / "x.mlf").write_text('#!MLF!#\n"u0.lab"\n0 100000 a\n100000 200000 b\n.\n"u1.lab"\n0 100000 a\n.\n')
    np.savetxt(tmp_path / "out.z", np.zeros((3, 3)))
    code, _, err = score_command(tmp_path, "out.z")
    assert code == EXIT_DATA and "utterance 'u0'" in err and "one word besides 'sil'" in err


# ---- the configs -----------------------------------------------------------------------------------

def check_json(config: Path, *overrides) -> dict:
    code, out, err = run_cli("check", str(config), "--json", *overrides)
    assert code == 0, err
    return json.loads(out)


def test_an4_feedforward_has_516740_parameters():
    document = check_json(SPEECH / "an4_feedforward.net", "--no-data")
    assert document["actions"]["train"]["parameters"] == 516740


def an4_like_data(directory: Path, utterances: int = 3) -> Path:
    """33 values per frame, 132 state labels: the shape of CNTK's AN4 data, made up (every state
    occurs, so that every state's prior is positive)."""
    directory.mkdir()
    states = [f"s{k}" for k in range(132)]
    (directory / "state.list").write_text("\n".join(states) + "\n")
    mlf, scp, state = ["#!MLF!#"], [], 0
    rng = np.random.default_rng(0)
    for u in range(utterances):
        frames = 44 + u
        fsdd.write_htk(str(directory / f"utt{u}.mfc"), rng.normal(size=(frames, 33)).astype(np.float32), kind=9)
        scp.append(f"an4/utt{u}.mfc=utt{u}.mfc")
        mlf.append(f'"an4/utt{u}.lab"')
        for t in range(frames):
            mlf.append(f"{t * 100000} {(t + 1) * 100000} s{state % 132}")
            state += 1
        mlf.append(".")
    (directory / "glob_0000.scp").write_text("\n".join(scp) + "\n")
    (directory / "glob_0000.test.scp").write_text("\n".join(scp[:1]) + "\n")
    (directory / "glob_0000.mlf").write_text("\n".join(mlf) + "\n")
    return directory


def test_an4_feedforward_reads_htk_features_and_mlf_labels(tmp_path):
    data = an4_like_data(tmp_path / "an4")
    document = check_json(SPEECH / "an4_feedforward.net", f"DataDir={data}")
    assert document["data"]["train.reader"]["samples"] == 16          # frames: frameMode = true


def test_an4_feedforward_trains_on_its_frames(tmp_path):
    data = an4_like_data(tmp_path / "an4")
    code, _, err = run_cli("run", str(SPEECH / "an4_feedforward.net"), f"DataDir={data}", f"OutputDir={tmp_path / 'out'}",
                           "deviceId=cpu", "train.SGD.epochSize=0", "train.SGD.maxEpochs=1", "--no-progress")
    assert code == 0, err
    written = np.loadtxt(tmp_path / "out" / "test.ScaledLogLikelihood")
    assert written.shape == (44, 132) and np.isfinite(written).all()


@pytest.mark.parametrize("config", ["fsdd_dnn.net", "fsdd_lstm.net", "fsdd_blstm_utterance.net"])
def test_fsdd_configs_check_on_prepared_data(prepared, config):
    document = check_json(SPEECH / config, f"DataDir={prepared}")
    assert document["data"]["train.reader"]["streams"] == ["features", "labels"]


def test_the_fsdd_dnn_trains_and_its_output_scores(prepared, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli("run", str(SPEECH / "fsdd_dnn.net"), f"DataDir={prepared}", f"OutputDir={out}",
                           "train.SGD.maxEpochs=2", "--no-progress")
    assert code == 0, err
    code, text, err = run_cli("data", "score-utterances", str(out / "test.logPosterior"), "--scp",
                              str(prepared / "test.scp"), "--mlf", str(prepared / "fsdd.mlf"), "--labels",
                              str(prepared / "labels.txt"), "--json")
    assert code == 0, err
    assert json.loads(text)["utterances"] == 30


# ---- the real data set (never copied into the repository) ----------------------------------------------

def shared_fsdd_dir() -> Path | None:
    for base in (os.environ.get("NETLANG_DATA"), ROOT.parent / "shared" / "data"):
        if base and (Path(base) / "fsdd" / "recordings").is_dir():
            return Path(base) / "fsdd"
    return None


@pytest.fixture(scope="module")
def real_fsdd(tmp_path_factory) -> Path:
    source = shared_fsdd_dir()
    if source is None:
        pytest.skip("the FSDD data is not available (set NETLANG_DATA to the directory holding fsdd/)")
    out = tmp_path_factory.mktemp("fsdd")
    counts = fsdd.prepare_fsdd(str(source), str(out))
    assert (counts["train.scp"], counts["test.scp"], counts["dev.scp"], counts["train_nodev.scp"]) == (2700, 300, 300, 2400)
    return out


def test_real_fsdd_has_3000_recordings_of_6_speakers(real_fsdd):
    keys = [e.key for name in ("train.scp", "test.scp") for e in parse_scp(str(real_fsdd / name))]
    assert len(set(keys)) == 3000
    assert len({key.split("_")[1] for key in keys}) == 6


def train_and_score(real_fsdd: Path, config: str, out: Path, *overrides) -> dict:
    """`netlang run CONFIG` in a fresh process, then the scorer on its test output."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-m", "netlang", "run", str(SPEECH / config), f"DataDir={real_fsdd}",
                    f"OutputDir={out}", "--no-progress", *overrides], check=True, env=env, cwd=out.parent)
    code, text, err = run_cli("data", "score-utterances", str(out / "test.logPosterior"), "--scp",
                              str(real_fsdd / "test.scp"), "--mlf", str(real_fsdd / "fsdd.mlf"), "--labels",
                              str(real_fsdd / "labels.txt"), "--json")
    assert code == 0, err
    return json.loads(text)


@pytest.mark.slow
def test_real_fsdd_dnn_reaches_93_percent_of_the_test_utterances(real_fsdd, tmp_path):
    assert train_and_score(real_fsdd, "fsdd_dnn.net", tmp_path / "dnn")["accuracy"] >= 93.0


@pytest.mark.slow
@pytest.mark.parametrize("config", ["fsdd_lstm.net", "fsdd_blstm_utterance.net"])
def test_real_fsdd_sequence_models_reach_97_percent_of_the_test_utterances(real_fsdd, tmp_path, config):
    assert train_and_score(real_fsdd, config, tmp_path / re.sub(r"\W", "_", config))["accuracy"] >= 97.0
