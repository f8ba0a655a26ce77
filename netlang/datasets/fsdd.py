"""The Free Spoken Digit Dataset (FSDD) as HTK features, SCP lists and an MLF of frame labels.

The source is the data set's `recordings/` folder: 3,000 mono 16-bit WAV files at 8 kHz named
`{digit}_{speaker}_{index}.wav` (6 speakers × 10 digits × 50 repetitions). Written to `--out`:

* `features/{name}.fbank`: HTK feature files (big-endian, kind FBANK, 10 ms frames) of `BANDS`
  log-mel filterbank energies: pre-emphasis 0.97, 25 ms Hamming windows every 10 ms (a frame per
  full window), a 256-point FFT, triangular filters equally spaced on the mel scale from 0 Hz to
  4 kHz, natural log of the filter energies (floored at `LOG_FLOOR`).
* `fsdd.mlf`: every utterance's frame labels: the digit's word (`zero` … `nine`) over its speech and
  `sil` over the leading and trailing frames whose energy is more than `SILENCE_DB` below the
  utterance's loudest frame. The silence decision looks at the audio only, never at the digit, so a
  scorer may use it to pick an utterance's speech frames.
* `labels.txt`: the label mapping, `zero` … `nine` then `sil` (class k = line k, silence last).
* the split, as SCP lists `name=features/{name}.fbank` (paths relative to the list): the official
  one, `test.scp` (indices 0–4 of every speaker and digit: 300 utterances) and `train.scp`
  (indices 5–49: 2,700); and for choosing settings without looking at the test set, the training
  files split once more: `dev.scp` (indices 5–9: 300) and `train_nodev.scp` (indices 10–49: 2,400).

Everything is deterministic: the same recordings give the same bytes.
"""
from __future__ import annotations

import os
import re
import struct
import wave

import numpy as np

from netlang.errors import DataError, DataPosition

SAMPLE_RATE = 8000
WINDOW = 200                 # 25 ms at 8 kHz
SHIFT = 80                   # 10 ms
FFT_SIZE = 256
BANDS = 24                   # mel bands up to 4 kHz; about 80 mel apart
PRE_EMPHASIS = 0.97
LOG_FLOOR = 1e-8             # the energy floor: digital silence (exact zeros) gives log(1e-8), not -inf
SILENCE_DB = 30.0            # leading/trailing frames this far below the loudest frame are silence
HTK_PERIOD = 100000          # 10 ms in HTK's 100 ns units
HTK_FBANK = 7                # HTK parameter kind FBANK

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SILENCE = "sil"
LABELS = DIGITS + (SILENCE,)
FEATURES_DIR = "features"
MLF_FILE = "fsdd.mlf"
LABELS_FILE = "labels.txt"
# (file, first index, last index): which repetitions of every speaker and digit each list holds.
SPLITS = (("train.scp", 5, 49), ("test.scp", 0, 4), ("dev.scp", 5, 9), ("train_nodev.scp", 10, 49))

_NAME_RE = re.compile(r"([0-9])_([A-Za-z]+)_([0-9]+)\.wav")


# ---- audio and features ------------------------------------------------------------------------

def read_wav(path: str) -> np.ndarray:
    """The samples of a mono 16-bit 8 kHz WAV file as floats in [-1, 1)."""
    try:
        with wave.open(path, "rb") as wav:
            layout = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
            raw = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as err:
        raise DataError(f"cannot read the WAV file: {err}", DataPosition(path)) from None
    if layout != (1, 2, SAMPLE_RATE):
        raise DataError(f"expected mono 16-bit audio at {SAMPLE_RATE} Hz, found {layout[0]} channel(s), "
                        f"{8 * layout[1]}-bit, {layout[2]} Hz", DataPosition(path))
    return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0


def frames_of(signal: np.ndarray) -> np.ndarray:
    """`(frames, WINDOW)`: the full 25 ms windows every 10 ms."""
    count = 1 + (len(signal) - WINDOW) // SHIFT if len(signal) >= WINDOW else 0
    index = np.arange(WINDOW)[None, :] + SHIFT * np.arange(count)[:, None]
    return signal[index]


def mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_filterbank(bands: int = BANDS) -> np.ndarray:
    """`(bands, FFT_SIZE // 2 + 1)` triangular filters, equally spaced on the mel scale over 0–4 kHz."""
    edges_mel = np.linspace(0.0, float(mel(SAMPLE_RATE / 2)), bands + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    bins = np.arange(FFT_SIZE // 2 + 1) * SAMPLE_RATE / FFT_SIZE
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(signal: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """`(frames, bands)` log-mel filterbank energies (float32)."""
    emphasised = np.concatenate([signal[:1], signal[1:] - PRE_EMPHASIS * signal[:-1]])
    windows = frames_of(emphasised) * np.hamming(WINDOW)[None, :]
    power = np.abs(np.fft.rfft(windows, n=FFT_SIZE, axis=1)) ** 2
    return np.log(np.maximum(power @ filters.T, LOG_FLOOR)).astype(np.float32)


def speech_frames(signal: np.ndarray) -> tuple[int, int]:
    """(first, last + 1): the frames from the first to the last one within SILENCE_DB of the loudest."""
    energy_db = 10.0 * np.log10(np.sum(frames_of(signal) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(energy_db >= energy_db.max() - SILENCE_DB)
    return int(loud[0]), int(loud[-1]) + 1


# ---- HTK files ---------------------------------------------------------------------------------------

def write_htk(path: str, features: np.ndarray, kind: int = HTK_FBANK, period: int = HTK_PERIOD) -> None:
    """An HTK feature file: the 12-byte header and float32 frames, big-endian as HTK writes them."""
    frames, dim = features.shape
    with open(path, "wb") as fh:
        fh.write(struct.pack(">iihh", frames, period, 4 * dim, kind))
        fh.write(np.ascontiguousarray(features, dtype=">f4").tobytes())


def mlf_entry(name: str, label: str, frames: int, speech: tuple[int, int]) -> str:
    """One utterance of the MLF: silence, the digit over its speech, silence (empty segments left out)."""
    first, stop = speech
    segments = [(0, first, SILENCE), (first, stop, label), (stop, frames, SILENCE)]
    lines = [f'"*/{name}.lab"']
    lines += [f"{begin * HTK_PERIOD} {end * HTK_PERIOD} {what}" for begin, end, what in segments if end > begin]
    return "\n".join(lines + ["."]) + "\n"


# ---- the data set --------------------------------------------------------------------------------------

def recordings_dir(source_dir: str) -> str:
    """The folder of the WAV files: `recordings/` of the data set's directory, or the directory itself."""
    inner = os.path.join(source_dir, "recordings")
    return inner if os.path.isdir(inner) else source_dir


def recordings(directory: str) -> list[tuple[str, int, str, int]]:
    """(name, digit, speaker, index) of every recording in `directory`, ordered by speaker, digit, index."""
    try:
        names = os.listdir(directory)
    except OSError as err:
        raise DataError(f"cannot list the recordings: {err.strerror or err}", DataPosition(directory),
                        hint="--source is the FSDD directory (with recordings/) or the recordings folder") from None
    found = []
    for file_name in names:
        match = _NAME_RE.fullmatch(file_name)
        if match:
            found.append((file_name[:-4], int(match.group(1)), match.group(2), int(match.group(3))))
    if not found:
        raise DataError("no recordings named {digit}_{speaker}_{index}.wav", DataPosition(directory),
                        hint="--source is the FSDD directory (with recordings/) or the recordings folder")
    return sorted(found, key=lambda r: (r[2], r[1], r[3]))


def prepare_fsdd(source_dir: str, out_dir: str) -> dict[str, int]:
    """Write the features, the MLF, the label list and the SCP lists; returns what each holds."""
    directory = recordings_dir(source_dir)
    found = recordings(directory)
    os.makedirs(os.path.join(out_dir, FEATURES_DIR), exist_ok=True)
    filters = mel_filterbank()
    entries = []
    for name, digit, _, _ in found:
        wav_path = os.path.join(directory, name + ".wav")
        signal = read_wav(wav_path)
        features = log_mel(signal, filters)
        if len(features) == 0:
            raise DataError(f"the recording is shorter than one {1000 * WINDOW // SAMPLE_RATE} ms window",
                            DataPosition(wav_path))
        write_htk(os.path.join(out_dir, FEATURES_DIR, name + ".fbank"), features)
        entries.append(mlf_entry(name, DIGITS[digit], len(features), speech_frames(signal)))
    _write_text(os.path.join(out_dir, MLF_FILE), "#!MLF!#\n" + "".join(entries))
    _write_text(os.path.join(out_dir, LABELS_FILE), "\n".join(LABELS) + "\n")
    counts = {FEATURES_DIR + "/": len(found), MLF_FILE: len(found), LABELS_FILE: len(LABELS)}
    for file_name, first, last in SPLITS:
        lines = [f"{name}={FEATURES_DIR}/{name}.fbank" for name, _, _, index in found if first <= index <= last]
        _write_text(os.path.join(out_dir, file_name), "\n".join(lines) + "\n")
        counts[file_name] = len(lines)
    return counts


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
