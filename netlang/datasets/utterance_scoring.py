"""Utterance decisions from a frame classifier's outputs, for isolated-word data such as FSDD.

An acoustic model classifies frames; an utterance of one word is decided by the class with the
highest average log-posterior over the utterance's speech frames (the frames whose reference label is
not silence: in data prepared by `netlang data prepare fsdd` those come from the audio's energy,
not from the word). Silence is never a decision. A model that classifies whole utterances (one
output row per utterance) is decided by its arg-max.

The reference of an utterance is the one non-silence label its frames carry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UtteranceScore:
    utterances: int
    correct: int
    frames: int | None = None          # frame-level outputs only
    frame_errors: int | None = None

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.utterances

    @property
    def frame_error_rate(self) -> float | None:
        return None if self.frames is None else 100.0 * self.frame_errors / self.frames

    def as_dict(self) -> dict:
        return {"utterances": self.utterances, "correct": self.correct, "accuracy": self.accuracy,
                "frames": self.frames, "frame_errors": self.frame_errors, "frame_error_rate": self.frame_error_rate}

    def summary(self) -> str:
        text = f"utterances: {self.utterances}; accuracy {self.accuracy:.2f} % ({self.correct} correct)"
        if self.frames is not None:
            text += f"; frames: {self.frames}; frame error rate {self.frame_error_rate:.2f} %"
        return text


def reference_word(frame_labels: np.ndarray, silence: int) -> int | None:
    """The one non-silence class of an utterance's frames, or None if there is none or several."""
    words = np.unique(frame_labels[frame_labels != silence])
    return int(words[0]) if len(words) == 1 else None


def frame_decisions(log_posteriors: np.ndarray, offsets: np.ndarray, speech: np.ndarray, silence: int) -> np.ndarray:
    """For utterance `u` (rows `offsets[u]:offsets[u+1]`), the non-silence class with the highest
    average log-posterior over its `speech` rows."""
    candidates = np.delete(np.arange(log_posteriors.shape[1]), silence)
    speech_rows = np.where(speech[:, None], log_posteriors[:, candidates], 0.0)
    sums = np.add.reduceat(speech_rows, offsets[:-1], axis=0)
    averages = sums / np.maximum(np.add.reduceat(speech.astype(np.int64), offsets[:-1]), 1)[:, None]
    return candidates[np.argmax(averages, axis=1)]


def score_frames(log_posteriors: np.ndarray, frame_labels: list[np.ndarray], silence: int) -> UtteranceScore:
    """Utterance accuracy and frame error rate of frame outputs (rows: the utterances' frames in order)."""
    references = np.concatenate(frame_labels)
    offsets = np.concatenate([[0], np.cumsum([len(labels) for labels in frame_labels])]).astype(np.int64)
    words = np.array([reference_word(labels, silence) for labels in frame_labels])
    decided = frame_decisions(log_posteriors, offsets, references != silence, silence)
    frame_errors = int(np.sum(np.argmax(log_posteriors, axis=1) != references))
    return UtteranceScore(len(frame_labels), int(np.sum(decided == words)), len(references), frame_errors)


def score_utterances(scores: np.ndarray, words: np.ndarray) -> UtteranceScore:
    """Utterance accuracy of one output row per utterance (arg-max = the decision)."""
    return UtteranceScore(len(words), int(np.sum(np.argmax(scores, axis=1) == words)))
