"""CNTK schedule semantics: value*epochs lists, per-MB vs per-sample rates, momentum units.

Schedules are read by the schema (compiler/lang/schedule.py and the Scheduled field type); the
ranges and rules between keys are the schema's, so those tests read an SGD block."""
import math

import pytest
import settings_of

from netlang.compiler.lang.blocks import SGD_SCHEMA
from netlang.compiler.lang.schedule import Schedule, parse_schedule_text
from netlang.errors import SchemaError
from netlang.runtime.schedules import (
    LearningRateSchedule,
    MinibatchSizeSchedule,
    MomentumSchedule,
    describe,
    effective_values,
)


def parse(text: str) -> Schedule:
    """A schedule from CNTK's text form, read as the schema reads `key = "0.01*2:0.005"`."""
    return Schedule(tuple(parse_schedule_text(text)))

# ---- Schedule ----------------------------------------------------------------------------------


def test_text_schedule_holds_each_value_for_its_epochs_then_repeats_the_last():
    s = parse("0.01*2:0.005")
    assert [s.value(e) for e in (1, 2, 3, 4, 100)] == [0.01, 0.01, 0.005, 0.005, 0.005]


def test_schedule_from_pairs_matches_text_form():
    s = Schedule(((1.0, 80), (0.1, 40), (0.01, None)))
    assert (s.value(80), s.value(81), s.value(120), s.value(121)) == (1.0, 0.1, 0.1, 0.01)


def test_count_on_last_entry_does_not_end_the_schedule():
    assert parse("0.5*3").value(10) == 0.5


def test_entry_without_count_holds_for_one_epoch():
    s = parse("0.3:0.2:0.1")
    assert [s.value(e) for e in (1, 2, 3, 4)] == [0.3, 0.2, 0.1, 0.1]


def test_plain_number_is_a_constant_schedule():
    assert Schedule.of(0.25).value(7) == 0.25


def test_every_value_of_a_schedule_is_checked_when_read():
    with pytest.raises(SchemaError):
        settings_of.sgd("momentumPerMB = 0.9*2:1.5")


def test_epochs_are_one_based():
    with pytest.raises(ValueError):
        parse("0.1").value(0)


def test_unreadable_schedule_text_is_a_schema_error_at_its_position():
    with pytest.raises(SchemaError) as info:
        settings_of.sgd('maxEpochs = 1\n\n\nlearningRatesPerMB = "0.1*x:0.2"', name="cfg.net")
    span = info.value.span
    assert (span.file, span.line) == ("cfg.net", 4) and info.value.key == "SGD.learningRatesPerMB"


def test_zero_epoch_count_is_rejected():
    with pytest.raises(SchemaError):
        settings_of.sgd("learningRatesPerMB = 0.1*0:0.2")


# ---- learning rate -----------------------------------------------------------------------------


def test_per_minibatch_rate_is_divided_by_that_epochs_minibatch_size():
    # 0.1 per minibatch of 50 samples = 0.002 per sample; 0.1 per minibatch of 200 = 0.0005.
    mb = MinibatchSizeSchedule(Schedule(((50, 1), (200, None))))
    lr = LearningRateSchedule(per_minibatch=0.1, minibatch_size=mb)
    assert lr.per_sample(1) == pytest.approx(0.002)
    assert lr.per_sample(2) == pytest.approx(0.0005)


def test_per_sample_rate_is_used_as_given():
    lr = LearningRateSchedule(per_sample=parse("0.01*2:0.005"), minibatch_size=64)
    assert [lr.per_sample(e) for e in (1, 2, 3)] == [0.01, 0.01, 0.005]


def test_per_minibatch_view_of_a_per_sample_rate_multiplies_by_minibatch_size():
    lr = LearningRateSchedule(per_sample=0.001, minibatch_size=128)
    assert lr.per_minibatch(1) == pytest.approx(0.128)


def test_default_minibatch_size_is_256():
    lr = LearningRateSchedule.of(settings_of.sgd("learningRatesPerMB = 2.56"))
    assert lr.per_sample(1) == pytest.approx(0.01)


def test_both_learning_rate_kinds_is_an_error():
    with pytest.raises(SchemaError, match="both"):
        settings_of.sgd("learningRatesPerSample = 0.1 ; learningRatesPerMB = 0.1")


def test_missing_learning_rate_is_an_error_that_names_the_keys():
    with pytest.raises(SchemaError) as info:
        settings_of.view(SGD_SCHEMA, "maxEpochs = 1", "SGD")
    assert "learningRatesPerSample" in info.value.message


def test_negative_learning_rate_is_rejected():
    with pytest.raises(SchemaError):
        settings_of.sgd("learningRatesPerSample = 0.1:-0.1")


def test_non_integer_minibatch_size_is_rejected():
    with pytest.raises(SchemaError, match="minibatchSize"):
        settings_of.sgd("minibatchSize = 12.5")


# ---- momentum ----------------------------------------------------------------------------------


def test_time_constant_gives_per_sample_momentum_exp_minus_one_over_tau():
    m = MomentumSchedule(time_constant=1000)
    assert m.per_sample(1) == pytest.approx(0.9990004998, rel=1e-10)   # exp(-1/1000)


def test_time_constant_gives_per_minibatch_momentum_exp_minus_mb_over_tau():
    m = MomentumSchedule(time_constant=1000)
    assert m.per_minibatch(1, 100) == pytest.approx(0.904837418, rel=1e-9)   # exp(-0.1)


def test_time_constant_2429_8_is_momentum_0_9_at_minibatch_256():
    # CNTK's documented equivalence: tau = -256 / ln(0.9) = 2429.75.
    m = MomentumSchedule(time_constant=-256 / math.log(0.9))
    assert m.per_minibatch(1, 256) == pytest.approx(0.9, rel=1e-12)


def test_time_constant_zero_means_no_momentum():
    assert MomentumSchedule(time_constant=0).per_minibatch(1, 64) == 0.0


def test_per_minibatch_momentum_is_exact_for_the_nominal_size():
    m = MomentumSchedule(per_minibatch=0.9, minibatch_size=256)
    assert m.per_minibatch(1, 256) == 0.9


def test_per_minibatch_momentum_scales_with_actual_minibatch_size():
    # Half a minibatch gets sqrt of the momentum: 0.9 ** 0.5 = 0.948683298.
    m = MomentumSchedule(per_minibatch=0.9, minibatch_size=256)
    assert m.per_minibatch(1, 128) == pytest.approx(0.9486832981, rel=1e-9)


def test_per_sample_momentum_is_raised_to_the_minibatch_size():
    m = MomentumSchedule(per_sample=0.99)
    assert m.per_minibatch(1, 10) == pytest.approx(0.99 ** 10)


def test_default_momentum_is_0_9_per_minibatch():
    m = MomentumSchedule.of(settings_of.sgd("minibatchSize = 64"))
    assert m.per_minibatch(1, 64) == 0.9


def test_momentum_of_one_is_rejected():
    with pytest.raises(SchemaError, match="must be less than 1"):
        settings_of.sgd("momentumPerMB = 0.9:1.0")


def test_negative_time_constant_is_rejected():
    with pytest.raises(SchemaError):
        settings_of.sgd("momentumAsTimeConstant = -5")


def test_two_momentum_kinds_is_an_error():
    with pytest.raises(SchemaError, match="momentumPerMB"):
        settings_of.sgd("momentumPerMB = 0.9 ; momentumAsTimeConstant = 100")


def test_momentum_time_constant_is_reported_in_samples():
    m = MomentumSchedule(per_sample=math.exp(-1 / 500))
    assert m.time_constant(1) == pytest.approx(500)


# ---- explain -----------------------------------------------------------------------------------


def test_effective_values_list_every_epoch_in_all_units():
    lr = LearningRateSchedule(per_minibatch=parse("0.01*2:0.005"), minibatch_size=100)
    rows = effective_values(3, lr, MomentumSchedule(time_constant=1000, minibatch_size=100))
    assert [r.lr_per_sample for r in rows] == pytest.approx([1e-4, 1e-4, 5e-5])
    assert rows[2].momentum_per_minibatch == pytest.approx(math.exp(-0.1))


def test_describe_merges_epochs_with_equal_values():
    lr = LearningRateSchedule(per_minibatch=parse("0.01*2:0.005"), minibatch_size=256)
    lines = describe(5, lr, MomentumSchedule.of(settings_of.sgd("minibatchSize = 256")))
    assert len(lines) == 2
    assert lines[0].startswith("epochs 1-2:") and "0.01 per minibatch" in lines[0]
    assert lines[1].startswith("epochs 3-5:") and "0.005 per minibatch" in lines[1]
