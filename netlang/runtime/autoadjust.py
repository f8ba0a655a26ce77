"""CNTK's `AutoAdjust` with `autoAdjustLR = adjustAfterEpoch`: learning-rate control between epochs.

After every `learnRateAdjustInterval` epochs the controlling criterion — the cross-validation
criterion when a cvReader exists (`UseCVSetControlLRIfCVExists`), else the training criterion (or
the first evaluation node with `UseEvalCriterionControlLR`), averaged over the interval — is
compared with the previous one:

* it got worse and `loadBestModel`: the parameters of the best epoch so far are restored and the
  rate is multiplied by `learnRateDecreaseFactor`;
* its relative improvement is below `reduceLearnRateIfImproveLessThan`: the rate is decreased;
* its relative improvement exceeds `increaseLearnRateIfImproveMoreThan`: the rate is multiplied by
  `learnRateIncreaseFactor`.

The adjustment is a factor on the scheduled learning rate (`Learner.learning_rate_factor`), so it is
part of the learner's checkpointed state; the best epoch and the criterion history live in the
trainer's checkpoint through `state()` / `load_state()`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netlang.compiler.lang.settings import AutoAdjustSettings


def adjuster_for(settings: AutoAdjustSettings | None) -> "LearningRateAdjuster | None":
    """The adjuster an AutoAdjust block asks for: None unless `autoAdjustLR = adjustAfterEpoch`."""
    if settings is None or settings.method == "none":
        return None
    if settings.method == "searchBeforeEpoch":
        raise settings.error("autoAdjustLR", "autoAdjustLR = searchBeforeEpoch (learning-rate search) is not "
                             "available in netlang yet", hint="use adjustAfterEpoch, or a schedule")
    return LearningRateAdjuster(settings)


@dataclass
class LearningRateAdjuster:
    settings: AutoAdjustSettings
    history: list = field(default_factory=list)      # controlling criterion per epoch
    previous: float | None = None                    # last interval's average
    best: float | None = None
    best_epoch: int | None = None
    reduced: bool = False                            # a decrease happened (for continueReduce)

    def criterion_of(self, result) -> float:
        if self.settings.use_cv and result.cv:
            return float(result.cv.get(result.criterion_name, next(iter(result.cv.values()))))
        if self.settings.use_eval and result.metrics:
            return float(next(iter(result.metrics.values())))
        return float(result.criterion)

    def after_epoch(self, result) -> tuple[str | None, int | None]:
        """(what to do, epoch to restore): "decrease", "increase" or None, and the best epoch when
        its parameters should be loaded back."""
        value = self.criterion_of(result)
        self.history.append(value)
        if self.best is None or value < self.best:
            self.best, self.best_epoch = value, result.epoch
        if len(self.history) % self.settings.interval:
            return None, None
        current = sum(self.history[-self.settings.interval:]) / self.settings.interval
        previous, self.previous = self.previous, current
        if previous is None:
            return None, None
        if current > previous and self.settings.load_best_model:
            self.reduced = True
            return "decrease", self.best_epoch
        improvement = (previous - current) / abs(previous) if previous else 0.0
        if improvement < self.settings.reduce_if_improve_less_than or (self.settings.continue_reduce and self.reduced):
            self.reduced = True
            return "decrease", None
        if improvement > self.settings.increase_if_improve_more_than:
            return "increase", None
        return None, None

    def factor(self, action: str | None) -> float:
        if action == "decrease":
            return self.settings.decrease_factor
        if action == "increase":
            return self.settings.increase_factor
        return 1.0

    def state(self) -> dict:
        return {"history": self.history, "previous": self.previous, "best": self.best,
                "best_epoch": self.best_epoch, "reduced": self.reduced}

    def load_state(self, state: dict) -> None:
        self.history = list(state.get("history", []))
        self.previous = state.get("previous")
        self.best = state.get("best")
        self.best_epoch = state.get("best_epoch")
        self.reduced = bool(state.get("reduced", False))
