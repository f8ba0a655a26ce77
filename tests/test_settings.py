"""Typed settings (compiler/lang/settings.py): one object per block with the schema's values and where
each came from, so a problem found at run time is reported at the line that set the value."""
from __future__ import annotations

import math

import numpy as np
import pytest
import settings_of

from netlang.compiler.lang.config import Config
from netlang.compiler.lang.evaluator import evaluate_text
from netlang.compiler.lang.settings import training_settings
from netlang.errors import SchemaError
from netlang.runtime.autoadjust import adjuster_for
from netlang.runtime.flatbuffer import FlatParameters
from netlang.runtime.learners import create_learner
from netlang.runtime.parallel import check_supported

TRAIN = """command = train
modelPath = "out/model.dnn"
{top}
train = {{
    action = "train"
    network = {{ z = 1 }}
    SGD = {{
        maxEpochs = 4
        minibatchSize = 32
        learningRatesPerMB = 0.1*2:0.05
        {sgd}
    }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "d.ctf" ; input = {{ f = {{ dim = 2 }} }} }}
}}
"""


def train_settings(sgd: str = "", top: str = ""):
    config = Config(evaluate_text(TRAIN.format(sgd=sgd, top=top), "cfg.net"), "cfg.net")
    name, view = config.actions()[0]
    return training_settings(config, name, view)


def line_of(text: str, sgd: str = "", top: str = "") -> int:
    lines = TRAIN.format(sgd=sgd, top=top).splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


# ---- one path from the config to the learner ------------------------------------------------------

def test_the_learning_rate_reaches_the_learner_as_the_schemas_schedule_with_its_span():
    settings = train_settings()
    learner = create_learner(settings.sgd, FlatParameters({"w": (1,)}))
    assert learner.learning_rate.schedule is settings.sgd.learning_rates_per_mb
    assert str(settings.sgd.learning_rates_per_mb) == "0.1*2:0.05"
    assert settings.sgd.span_of("learningRatesPerMB").line == line_of("learningRatesPerMB")
    assert learner.learning_rate_per_sample(3) == pytest.approx(0.05 / 32)


def test_minibatch_size_is_read_once_for_the_loop_and_the_learner():
    settings = train_settings()
    assert settings.minibatch_size is settings.sgd.minibatch_size
    assert settings.minibatch_size.value(1) == 32


def test_a_value_knows_where_it_was_set_and_a_default_points_at_its_block():
    settings = train_settings()
    assert settings.source("maxEpochs").path == "train.SGD.maxEpochs"
    assert settings.source("maxEpochs").given and settings.span_of("maxEpochs").line == line_of("maxEpochs")
    assert not settings.given("epochSize") and settings.span_of("epochSize").line == line_of("SGD = {")
    assert settings.source("modelPath").span.line == line_of("modelPath")


def test_an_error_about_a_setting_names_its_key_and_points_at_its_line():
    sgd = 'gradUpdateType = "adam"'
    err = train_settings(sgd=sgd).sgd.error("gradUpdateType", "cannot do that", hint="do this")
    assert isinstance(err, SchemaError) and err.key == "train.SGD.gradUpdateType"
    assert (err.span.file, err.span.line) == ("cfg.net", line_of("gradUpdateType", sgd=sgd))
    assert err.hint == "do this"


def test_settings_are_frozen():
    settings = train_settings()
    with pytest.raises(AttributeError):
        settings.max_epochs = 7


def test_training_settings_hold_the_process_keys_and_their_defaults():
    settings = train_settings(sgd="dropoutRate = 0.5*1:0 ; evalCriterionNodeName = \"errs\"", top="randomSeed = 4")
    assert (settings.max_epochs, settings.epoch_size, settings.num_mbs_to_show_result) == (4, 0, 10)
    assert [settings.dropout_rate.value(e) for e in (1, 2)] == [0.5, 0]
    assert settings.evaluation == ("errs",) and settings.criterion is None
    assert settings.seed == 5 and settings.make_mode is True
    assert settings.auto_adjust is None and settings.parallel is None
    assert settings.meta == {"config": "cfg.net", "action": "train"}


def test_a_train_action_without_model_path_is_an_error_at_its_block():
    text = TRAIN.format(sgd="", top="").replace('modelPath = "out/model.dnn"', "")
    config = Config(evaluate_text(text, "cfg.net"), "cfg.net")
    name, view = config.actions()[0]
    with pytest.raises(SchemaError, match="needs modelPath"):
        training_settings(config, name, view)


# ---- adamBeta1 ---------------------------------------------------------------------------------

def adam_reference(grads, lr, beta1, beta2=0.999, eps=1e-8):
    """Adam on one weight, CNTK V2's rule (see runtime/learners.py)."""
    w = m = v = 0.0
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w -= lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t) * m / (math.sqrt(v) + eps)
    return w


def adam_steps(sgd_text: str, grads) -> float:
    settings = settings_of.sgd('gradUpdateType = "adam" ; learningRatesPerSample = 0.1 ; minibatchSize = 4\n'
                               + sgd_text)
    params = FlatParameters({"w": (1,)}, dtype=np.float64)
    learner = create_learner(settings, params)
    for g in grads:
        params.grad[...] = g
        learner.step(1, 4)          # full minibatches: the momentum is exactly momentumPerMB
    return float(params.data[0])


GRADS = [1.0, -2.0, 0.5, 3.0]


def test_adam_beta1_follows_the_momentum_schedule_when_not_given():
    assert settings_of.sgd("momentumPerMB = 0.5").adam_beta1 is None
    w = adam_steps("momentumPerMB = 0.5", GRADS)
    assert w == pytest.approx(adam_reference(GRADS, 0.1, beta1=0.5), rel=1e-12)
    assert w != pytest.approx(adam_reference(GRADS, 0.1, beta1=0.9), rel=1e-6)   # not a fixed 0.9


def test_adam_beta1_is_the_default_momentum_without_momentum_keys():
    assert adam_steps("", GRADS) == pytest.approx(adam_reference(GRADS, 0.1, beta1=0.9), rel=1e-12)


def test_a_given_adam_beta1_wins_over_the_momentum():
    w = adam_steps("momentumPerMB = 0.5 ; adamBeta1 = 0.8", GRADS)
    assert w == pytest.approx(adam_reference(GRADS, 0.1, beta1=0.8), rel=1e-12)


# ---- run-time problems at the line that set the value ---------------------------------------------

def test_a_learner_checkpoint_of_another_update_rule_is_reported_at_grad_update_type():
    adam = create_learner(settings_of.sgd('gradUpdateType = "adam"'), FlatParameters({"w": (2,)}))
    text = 'maxEpochs = 1\nlearningRatesPerSample = 1\ngradUpdateType = "adagrad"'
    adagrad = create_learner(settings_of.sgd(text, name="cfg.net"), FlatParameters({"w": (2,)}))
    with pytest.raises(SchemaError, match="gradUpdateType 'adam'") as err:
        adagrad.load_state_dict(adam.state_dict())
    assert (err.value.span.file, err.value.span.line) == ("cfg.net", 3)
    assert err.value.key == "SGD.gradUpdateType"


PARALLEL = "parallelTrain = true"


def test_gradient_bits_the_parallel_code_cannot_run_are_refused_at_their_line():
    sgd = 'ParallelTrain = { parallelizationMethod = "DataParallelSGD"\n' \
          '    DataParallelSGD = { gradientBits = 1*2:16 } }'
    settings = train_settings(sgd=sgd, top=PARALLEL)
    assert [settings.parallel.bits(e) for e in (1, 2, 3)] == [1, 1, 16]
    with pytest.raises(SchemaError, match="gradientBits = 16 is not supported") as err:
        check_supported(settings.parallel)
    assert err.value.span.line == line_of("gradientBits", sgd=sgd, top=PARALLEL)
    assert err.value.key == "train.SGD.ParallelTrain.DataParallelSGD.gradientBits"


def test_learning_rate_search_is_refused_at_auto_adjust_lr():
    settings = train_settings(sgd='AutoAdjust = { autoAdjustLR = "searchBeforeEpoch" }')
    with pytest.raises(SchemaError, match="searchBeforeEpoch") as err:
        adjuster_for(settings.auto_adjust)
    assert err.value.span.line == line_of("AutoAdjust", sgd='AutoAdjust = { autoAdjustLR = "searchBeforeEpoch" }')


def test_adjust_after_epoch_makes_an_adjuster_and_none_makes_none():
    assert adjuster_for(settings_of.auto_adjust()) is not None
    assert adjuster_for(None) is None
    assert adjuster_for(train_settings(sgd='AutoAdjust = { autoAdjustLR = "none" }').auto_adjust) is None


# ---- parallel training ------------------------------------------------------------------------------

def test_parallel_settings_without_a_method_block_take_the_schema_defaults():
    settings = train_settings(sgd='ParallelTrain = { parallelizationMethod = "BlockMomentumSGD" }', top=PARALLEL)
    parallel = settings.parallel
    assert parallel.method == "BlockMomentumSGD" and parallel.block_size is None
    assert parallel.block_learning_rate == 1.0 and parallel.use_nesterov and parallel.reset_sgd_momentum
    assert parallel.gradient_bits is None and parallel.bits(1) == 32


def test_parallel_train_true_without_a_block_is_method_none():
    parallel = train_settings(top=PARALLEL).parallel
    assert parallel.method == "none" and parallel.start_epoch == 1


def test_legacy_sync_frequency_counts_per_worker_and_keeps_its_line():
    sgd = 'ParallelTrain = { parallelizationMethod = "ModelAveragingSGD"\n' \
          '    ModelAveragingSGD = { syncFrequencyInFrames = 500 } }'
    parallel = train_settings(sgd=sgd, top=PARALLEL).parallel
    assert parallel.block_size is None and parallel.block_size_per_worker == 500
    assert parallel.span_of("blockSizePerWorker").line == line_of("syncFrequencyInFrames", sgd=sgd, top=PARALLEL)


# ---- readers --------------------------------------------------------------------------------------

def test_reader_settings_carry_the_deserializers_and_their_streams():
    reader = settings_of.reader({"randomize": False, "deserializers": [
        {"type": "CNTKTextFormatDeserializer", "file": "f.ctf", "input": {"x": {"dim": 2, "format": "sparse"}}},
        {"type": "CNTKTextFormatDeserializer", "file": "l.ctf", "input": {"y": {"labelDim": 4}}}]})
    assert [d.type for d in reader.deserializers] == ["CNTKTextFormatDeserializer"] * 2
    x = reader.deserializers[0].streams["x"]
    assert (x.name, x.dim, x.format, x.defines_mb_size) == ("x", 2, "sparse", False)
    assert reader.deserializers[1].streams["y"].dim == 4
    assert reader.randomizes is False and reader.sample_window is None


def test_a_legacy_reader_configures_its_own_deserializer_with_its_stream_blocks():
    reader = settings_of.reader({"readerType": "ImageReader", "file": "map.txt",
                                 "features": {"width": 8, "height": 6, "channels": 3, "cropRatio": 0.75},
                                 "labels": {"labelDim": 3}})
    assert reader.reader_type == "ImageReader" and reader.deserializers == ()
    legacy = reader.legacy
    assert legacy.type is None and legacy.legacy_streams and legacy.file == "map.txt"
    features = legacy.streams["features"]
    assert features.side_ratio == (0.75,) and features.source("sideRatio").path.endswith("cropRatio")
    assert features.crop_type is None and not features.given("cropType")


@pytest.mark.parametrize("value, randomizes, window", [("true", True, None), ("false", False, None),
                                                       ('"auto"', True, None), ('"none"', False, None),
                                                       ("5000", True, 5000)])
def test_randomize_spellings(value, randomizes, window):
    reader = settings_of.reader(f'readerType = "CNTKTextFormatReader" ; randomize = {value}')
    assert (reader.randomizes, reader.sample_window) == (randomizes, window)
