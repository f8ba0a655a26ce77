"""The config schema: field types, schedules, key matching, unknown keys, SGD rules, parent lookup."""
from __future__ import annotations

import math

import pytest

from netlang.compiler.lang.blocks import SGD_SCHEMA
from netlang.compiler.lang.config import Config, resolved_config_dict
from netlang.compiler.lang.evaluator import evaluate_text
from netlang.compiler.lang.fields import Bool, Device, Enum, Float, Int, List, NameList, Scheduled, String
from netlang.compiler.lang.schedule import Schedule
from netlang.compiler.lang.schema import REQUIRED, Field, Schema
from netlang.compiler.lang.views import validate
from netlang.errors import EvalError, SchemaError


def read(schema: Schema, text: str):
    return validate(evaluate_text(text, "t.net"), schema)


def one(field_type, text: str, key: str = "x"):
    """The typed value of `x = <text>` read with `field_type`."""
    schema = Schema("test", [Field(key, field_type, None)])
    return read(schema, f"{key} = {text}")[key]


def config(text: str, overrides=()) -> Config:
    return Config(evaluate_text(text, "cfg.net", overrides=overrides), "cfg.net")


TRAIN = """
command = train
train = {
    action = "train"
    network = { z = 1 }
    SGD = { maxEpochs = 2 ; learningRatesPerMB = 0.1 %s }
    reader = { file = "d.ctf" ; input = { f = { dim = 2 } } }
    %s
}
"""


def train_config(sgd: str = "", block: str = "", top: str = "") -> Config:
    return config(top + TRAIN % (sgd, block))


# ---- field types -------------------------------------------------------------------------------

def test_int_accepts_whole_number():
    assert one(Int(), "42") == 42


def test_int_rejects_fraction():
    with pytest.raises(SchemaError, match="whole number"):
        one(Int(), "2.5")


def test_int_rejects_word_string():
    with pytest.raises(SchemaError, match='got the string "three"'):
        one(Int(), '"three"')


def test_int_below_minimum_is_error():
    with pytest.raises(SchemaError, match="at least 1"):
        one(Int(min=1), "0")


@pytest.mark.parametrize("text", ['"1#INF"', '"#INF"', '"infinity"'])
def test_float_accepts_cntk_infinity(text):
    assert one(Float(), text) == math.inf


def test_float_above_exclusive_maximum_is_error():
    with pytest.raises(SchemaError, match="less than 1"):
        one(Float(min=0, max=1, max_exclusive=True), "1")


@pytest.mark.parametrize("text,expected", [("true", True), ("false", False), ('"t"', True), ('"True"', True),
                                           ('"TRUE"', True), ('"1"', True), ('"f"', False), ('"False"', False),
                                           ('"FALSE"', False), ('"0"', False), ("1", True), ("0", False)])
def test_bool_accepts_cntk_spellings(text, expected):
    assert one(Bool(), text) is expected


def test_bool_rejects_other_words():
    with pytest.raises(SchemaError, match="expected true or false"):
        one(Bool(), '"yes"')


def test_string_rejects_number():
    with pytest.raises(SchemaError, match="expected a string"):
        one(String(), "3")


def test_enum_is_case_insensitive_and_returns_canonical_spelling():
    assert one(Enum(("none", "rmsProp")), '"RMSPROP"') == "rmsProp"


def test_enum_maps_legacy_alias():
    assert one(Enum(("none", "adagrad"), {"normal": "none"}), '"normal"') == "none"


def test_enum_accepts_bare_word():
    assert one(Enum(("none", "adagrad")), "adagrad") == "adagrad"


def test_enum_bare_word_that_is_a_string_variable_uses_its_value():
    schema = Schema("test", [Field("x", Enum(("none", "adagrad")), None)], closed=False)
    assert read(schema, 'x = kind ; kind = "none"').x == "none"


def test_enum_unknown_value_suggests_a_value():
    with pytest.raises(SchemaError) as info:
        one(Enum(("none", "adagrad", "rmsProp")), '"adagard"')
    assert "did you mean 'adagrad'?" in info.value.hint


@pytest.mark.parametrize("text,expected", [("-1", -1), ('"cpu"', -1), ("cpu", -1), ("auto", "auto"), ("2", 2)])
def test_device_values(text, expected):
    assert one(Device(), text) == expected


def test_device_rejects_negative_index():
    with pytest.raises(SchemaError, match="not a device"):
        one(Device(), "-2")


def test_name_list_reads_identifiers_without_evaluating_them():
    schema = Schema("test", [Field("command", NameList(), None)], closed=False)
    view = read(schema, "command = train:test ; train = { a = 1 } ; test = { b = 2 }")
    assert view.command == ["train", "test"]


def test_name_list_reads_undefined_names():
    assert one(NameList(), "ce:errs") == ["ce", "errs"]


def test_name_list_splits_a_string():
    assert one(NameList(), '"train:test"') == ["train", "test"]


def test_name_list_uses_a_string_variable():
    schema = Schema("test", [Field("x", NameList(), None)], closed=False)
    assert read(schema, 'x = cmds ; cmds = "a:b"').x == ["a", "b"]


def test_list_of_ints():
    assert one(List(Int()), "1:2:10") == [1, 2, 10]


def test_default_string_means_schema_default():
    schema = Schema("test", [Field("n", Int(), 256)])
    view = read(schema, 'n = "default"')
    assert view.n == 256 and view.origin("n").kind == "default"


def test_missing_required_key_is_error():
    schema = Schema("test", [Field("n", Int(), REQUIRED)])
    with pytest.raises(SchemaError, match="missing required key 'n'"):
        read(schema, "")


# ---- schedules ---------------------------------------------------------------------------------

def test_schedule_value_times_epochs_then_rest():
    schedule = one(Scheduled(), "0.01*2:0.005")
    assert schedule.entries == ((0.01, 2), (0.005, None))


def test_schedule_value_per_epoch_repeats_last():
    schedule = one(Scheduled(), "0.01*2:0.005")
    assert [schedule.value(e) for e in (1, 2, 3, 100)] == [0.01, 0.01, 0.005, 0.005]


def test_schedule_plain_list_is_one_epoch_each():
    schedule = one(Scheduled(), "0.1:0.05:0.01")
    assert [schedule.value(e) for e in (1, 2, 3, 4)] == [0.1, 0.05, 0.01, 0.01]


def test_schedule_single_number():
    assert one(Scheduled(), "0.5").value(7) == 0.5


def test_schedule_from_string():
    assert one(Scheduled(), '"0.8*3:0.2"').entries == ((0.8, 3), (0.2, None))


def test_schedule_values_may_be_variables_and_arithmetic():
    schema = Schema("test", [Field("x", Scheduled(), None)], closed=False)
    schedule = read(schema, "x = lr*2:lr/10 ; lr = 0.5").x
    assert schedule.entries == ((0.5, 2), (0.05, None))


def test_schedule_rejects_fractional_epoch_count():
    with pytest.raises(SchemaError, match="whole number >= 1"):
        one(Scheduled(), "0.8*0.1")


def test_schedule_integer_values():
    schedule = one(Scheduled(integer=True), "64*2:128")
    assert schedule.value(1) == 64 and isinstance(schedule.value(3), int) and schedule.value(3) == 128


def test_schedule_checks_value_range():
    with pytest.raises(SchemaError, match="less than 1"):
        one(Scheduled(min=0, max=1, max_exclusive=True), "0.9:1.0")


def test_schedule_epochs_count_from_one():
    with pytest.raises(ValueError):
        Schedule.constant(0.1).value(0)


def test_schedule_text_round_trips():
    assert str(one(Scheduled(), "0.01*2:0.005")) == "0.01*2:0.005"


# ---- keys ----------------------------------------------------------------------------------------

def test_keys_are_case_insensitive():
    schema = Schema("SGD", [Field("maxEpochs", Int(), None)])
    assert read(schema, "MAXEPOCHS = 3").maxEpochs == 3


def test_alias_counts_as_the_key():
    schema = Schema("test", [Field("precision", Enum(("float", "double")), "float", aliases=("type",))])
    assert read(schema, 'type = "double"').precision == "double"


def test_two_spellings_of_one_key_is_error():
    schema = Schema("test", [Field("precision", String(), None, aliases=("type",))])
    with pytest.raises(SchemaError, match="same setting"):
        read(schema, 'precision = "float" ; type = "double"')


def test_unknown_key_in_closed_block_suggests_the_key():
    with pytest.raises(SchemaError) as info:
        validate(evaluate_text("maxEpoch = 3 ; learningRatesPerMB = 1", "t.net"), SGD_SCHEMA, "train.SGD")
    err = info.value
    assert err.message == "unknown key 'maxEpoch' in SGD"
    assert err.hint == "did you mean 'maxEpochs'?"
    assert err.key == "train.SGD.maxEpoch"
    assert (err.span.line, err.span.col) == (1, 1)


def test_view_reports_origin_file_line_col():
    schema = Schema("test", [Field("n", Int(), 1), Field("m", Int(), 5)])
    view = read(schema, "\n  n = 3")
    assert str(view.origin("n")) == "t.net:2:3" and str(view.origin("m")) == "default"


# ---- the user's own variables in open blocks -------------------------------------------------------

def test_unused_top_level_variable_is_a_typo_error():
    with pytest.raises(SchemaError) as info:
        train_config(top="comand = train\n")
    assert "unknown key 'comand' (not a setting and never used)" in info.value.message
    assert info.value.hint == "did you mean 'command'?"


def test_variable_used_by_name_is_accepted():
    cfg = train_config(sgd="; minibatchSize = mb", top="mb = 32\n")
    assert cfg.action("train").SGD.minibatchSize.value(1) == 32


def test_variable_used_in_string_interpolation_is_accepted():
    cfg = train_config(top='dataDirectory = "/data"\n', block='cvReader = { file = "$dataDirectory$/cv.ctf" }')
    assert cfg.action("train").cvReader.file == "/data/cv.ctf"


def test_unrun_command_block_is_accepted():
    cfg = train_config(top='write = { action = "write" ; outputPath = "o.txt" }\n')
    assert [name for name, _ in cfg.actions()] == ["train"]


def test_unused_variable_in_action_block_is_error():
    with pytest.raises(SchemaError, match="unknown key 'SDG' in train"):
        train_config(block="SDG = { maxEpochs = 1 }").actions()


# ---- SGD rules -------------------------------------------------------------------------------------

def test_both_learning_rate_keys_is_error_at_second_key():
    with pytest.raises(SchemaError) as info:
        validate(evaluate_text("maxEpochs = 1\nlearningRatesPerSample = 0.1\nlearningRatesPerMB = 1", "t.net"),
                 SGD_SCHEMA)
    assert "both learningRatesPerSample and learningRatesPerMB" in info.value.message
    assert info.value.span.line == 3


def test_no_learning_rate_is_error():
    with pytest.raises(SchemaError, match="no learning rate"):
        validate(evaluate_text("maxEpochs = 1", "t.net"), SGD_SCHEMA)


def test_no_learning_rate_is_fine_with_learning_rate_search():
    sgd = validate(evaluate_text('maxEpochs = 1 ; AutoAdjust = { autoAdjustLR = "searchBeforeEpoch" }', "t.net"),
                   SGD_SCHEMA)
    assert sgd.learningRatesPerMB is None and sgd.learningRatesPerSample is None


def test_two_momentum_keys_is_error():
    with pytest.raises(SchemaError, match="both momentumPerMB and momentumAsTimeConstant"):
        validate(evaluate_text("maxEpochs = 1 ; learningRatesPerMB = 1 ; momentumPerMB = 0.9 ; "
                               "momentumAsTimeConstant = 100", "t.net"), SGD_SCHEMA)


def test_default_momentum_is_0_9_per_minibatch():
    sgd = validate(evaluate_text("maxEpochs = 1 ; learningRatesPerMB = 1", "t.net"), SGD_SCHEMA)
    assert sgd.momentumPerMB.value(1) == 0.9 and not sgd.given("momentumPerMB")


def test_legacy_use_adagrad_sets_update_type():
    sgd = validate(evaluate_text("maxEpochs = 1 ; learningRatesPerMB = 1 ; useAdagrad = true", "t.net"),
                   SGD_SCHEMA)
    assert sgd.gradUpdateType == "adagrad"


def test_clipping_threshold_defaults_to_infinity():
    sgd = validate(evaluate_text("maxEpochs = 1 ; learningRatesPerMB = 1", "t.net"), SGD_SCHEMA)
    assert sgd.clippingThresholdPerSample == math.inf


def test_parallel_train_block_is_read():
    sgd = validate(evaluate_text("maxEpochs = 1 ; learningRatesPerMB = 1 ; ParallelTrain = { "
                                 "parallelizationMethod = \"blockmomentumsgd\" ; "
                                 "BlockMomentumSGD = { blockSize = 8000 } }", "t.net"), SGD_SCHEMA)
    assert sgd.ParallelTrain.parallelizationMethod == "BlockMomentumSGD"
    assert sgd.ParallelTrain.BlockMomentumSGD.blockSize == 8000


def test_block_size_and_block_size_per_worker_is_error():
    with pytest.raises(SchemaError, match="both blockSize and blockSizePerWorker"):
        validate(evaluate_text("maxEpochs = 1 ; learningRatesPerMB = 1 ; ParallelTrain = { "
                               "BlockMomentumSGD = { blockSize = 8 ; blockSizePerWorker = 4 } }", "t.net"), SGD_SCHEMA)


def test_both_block_momentum_forms_is_error():
    with pytest.raises(SchemaError, match="both blockMomentumAsTimeConstant and blockMomentumPerSync"):
        validate(evaluate_text("maxEpochs = 1 ; learningRatesPerMB = 1 ; ParallelTrain = { BlockMomentumSGD = { "
                               "blockMomentumPerSync = 0.5 ; blockMomentumAsTimeConstant = 100 } }", "t.net"),
                 SGD_SCHEMA)


@pytest.mark.parametrize("key, value", [("blockMomentumPerSync", "1"), ("blockMomentumAsTimeConstant", "-1"),
                                        ("blockSize", "0")])
def test_block_momentum_values_out_of_range_are_errors(key, value):
    with pytest.raises(SchemaError, match=key):
        validate(evaluate_text("maxEpochs = 1 ; learningRatesPerMB = 1 ; ParallelTrain = { BlockMomentumSGD = { "
                               f"{key} = {value} }} }}", "t.net"), SGD_SCHEMA)


# ---- readers -------------------------------------------------------------------------------------

def test_reader_streams_are_views():
    reader = train_config().action("train").reader
    assert reader.input["f"].dim == 2 and reader.input["f"].format == "dense"


def test_stream_with_unknown_key_is_error():
    with pytest.raises(SchemaError, match="unknown key 'dimm' in stream"):
        config(TRAIN.replace("dim = 2", "dimm = 2") % ("", "")).actions()


def test_deserializers_are_a_list_of_blocks():
    block = ('cvReader = { deserializers = ( { type = "CNTKTextFormatDeserializer" ; file = "a.ctf" } : '
             '{ type = "ImageDeserializer" ; file = "map.txt" } ) }')
    readers = train_config(block=block).action("train").cvReader.deserializers
    assert [d.type for d in readers] == ["CNTKTextFormatDeserializer", "ImageDeserializer"]


def test_legacy_per_stream_block_in_reader_is_a_stream():
    block = 'cvReader = { readerType = "HTKMLFReader" ; features = { dim = 363 ; scpFile = "a.scp" } }'
    reader = train_config(block=block).action("train").cvReader
    assert reader.extra_blocks["features"].dim == 363


# ---- actions and parent lookup --------------------------------------------------------------------

def test_actions_follow_command_order():
    cfg = config('command = b:a\na = { action = "dumpnode" }\nb = { action = "plot" }')
    assert [(name, view.action) for name, view in cfg.actions()] == [("b", "plot"), ("a", "dumpnode")]


def test_unknown_command_suggests_block():
    with pytest.raises(SchemaError) as info:
        config('command = trian\ntrain = { action = "plot" }').actions()
    assert "unknown command 'trian' — no block of that name (did you mean 'train'?)" == info.value.message
    assert (info.value.span.line, info.value.span.col) == (1, 11)


def test_action_inherits_model_path_from_top_level():
    cfg = train_config(top='modelPath = "m.dnn"\n')
    train = cfg.action("train")
    assert train.modelPath == "m.dnn"
    assert train.origin("modelPath").inherited_from == "" and str(train.origin("modelPath")).startswith("cfg.net:1:1")


def test_sgd_inherits_minibatch_size_from_action_block():
    cfg = train_config(block="minibatchSize = 64")
    assert cfg.action("train").SGD.minibatchSize.value(1) == 64


def test_own_key_beats_enclosing_block():
    cfg = train_config(sgd="; minibatchSize = 32", block="minibatchSize = 64")
    assert cfg.action("train").SGD.minibatchSize.value(1) == 32


def test_test_action_has_its_own_minibatch_default():
    cfg = config('command = t\nmodelPath = "m"\nt = { action = "test" ; reader = { file = "x" } }')
    assert cfg.action("t").minibatchSize.value(1) == 40960


def test_network_is_not_evaluated():
    cfg = config(TRAIN.replace("network = { z = 1 }", "network = { z = undefinedThing }") % ("", ""))
    network = cfg.action("train").network_expr()
    with pytest.raises(EvalError, match="unknown identifier 'undefinedThing'"):
        network.evaluate().get("z")


def test_builder_alias_is_the_network():
    cfg = config(TRAIN.replace("network =", "BrainScriptNetworkBuilder =") % ("", ""))
    assert cfg.action("train").network_expr().name == "BrainScriptNetworkBuilder"


def test_train_without_sgd_is_error():
    with pytest.raises(SchemaError, match="has no SGD block"):
        config('train = { network = { z = 1 } ; reader = { file = "x" } }').actions()


def test_override_origin():
    cfg = train_config()
    assert cfg.action("train").SGD.maxEpochs == 2
    cfg = config(TRAIN % ("", ""), overrides=["train.SGD.maxEpochs=5"])
    sgd = cfg.action("train").SGD
    assert sgd.maxEpochs == 5 and str(sgd.origin("maxEpochs")) == "override"


def test_resolved_dict_has_defaults_and_variables():
    resolved = resolved_config_dict(train_config(sgd="; minibatchSize = mb", top="mb = 32\n"))
    assert resolved["config"]["mb"] == 32
    assert resolved["actions"]["train"]["SGD"]["numMBsToShowResult"] == 10
    assert resolved["actions"]["train"]["SGD"]["learningRatesPerMB"] == 0.1


def test_cntk_infinity_written_as_number_hash_inf():
    sgd = validate(evaluate_text("maxEpochs = 1 ; learningRatesPerMB = 1\nclippingThresholdPerSample = 1#INF",
                                 "t.net"), SGD_SCHEMA)
    assert sgd.clippingThresholdPerSample == math.inf


def test_bare_action_word_naming_its_own_block():
    cfg = config(TRAIN.replace('action = "train"', "action = train") % ("", ""))
    assert cfg.action("train").action == "train"


def test_values_inside_an_inherited_block_are_marked_inherited():
    cfg = config('command = t\nmodelPath = "m"\nreader = { file = "x.ctf" }\nt = { action = "test" }')
    entries = {path: origin for path, _, _, origin in cfg.action("t").walk()}
    assert str(entries["t.reader.file"]) == "cfg.net:3:12 (from top level)"


def test_block_named_in_a_command_string_is_referenced():
    cfg = config('command = "a"\na = { }')  # `a` has no action keys: only the command string refers to it
    assert cfg.top.command == ["a"]


def test_plain_user_variables_are_evaluated_and_others_left_alone():
    cfg = train_config(top="dims = 28:28:1\nlayer = DenseLayer{10}\nalias = layer\nhalf = dims[0] / 2\n",
                       block="evalNodeNames = dims:layer:alias:half")
    assert cfg.variables() == {"dims": [28, 28, 1], "half": 14}
    assert cfg.action("train").evalNodeNames == ["dims", "layer", "alias", "half"]


def test_name_list_does_not_evaluate_a_network_variable():
    cfg = train_config(top="z = Undefined(1)\n", block="outputNodeNames = z")
    assert cfg.action("train").outputNodeNames == ["z"]
