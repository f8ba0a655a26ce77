"""CNTK's legacy config layer in `.cntk` files (reference §1.3, §3.8): `$var$` substitution, values as
text, repeated keys, inheritance, the keys CNTK reads, and CNTK's policy for keys it does not know.
Every config here is our own text in CNTK's style."""
from __future__ import annotations

import logging
import math
import textwrap

import pytest

from netlang.cli import main
from netlang.compiler.graph import load_config
from netlang.errors import NetlangError

NETWORK = """BrainScriptNetworkBuilder = {
        features = Input {$dim$} ; labels = Input {3}
        z = DenseLayer {3} (features)
        ce = CrossEntropyWithSoftmax (labels, z) ; errs = ClassificationError (labels, z)
        featureNodes = (features) ; labelNodes = (labels) ; criterionNodes = (ce) ; evaluationNodes = (errs)
    }"""


def write(tmp_path, text: str, name: str = "cfg.cntk") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def config_with(tmp_path, top: str = "", train: str = "", reader: str = "", sgd: str = "", name="cfg.cntk"):
    """A small train config in CNTK's style with extra lines in its blocks."""
    return write(tmp_path, f"""
        command = train
        modelPath = out/model.dnn
        dim = 2
        {top}
        train = [
            action = train
            {NETWORK}
            SGD = [ maxEpochs = 1 ; learningRatesPerMB = 0.1 ; {sgd} ]
            reader = [
                readerType = CNTKTextFormatReader
                file = data.txt
                input = [ features = [ dim = 2 ] ; labels = [ dim = 3 ] ]
                {reader}
            ]
            {train}
        ]
        """, name)


def train_view(path: str, overrides=()):
    return load_config(path, overrides).action("train")


def position_of(path: str, needle: str, after: str = "") -> str:
    """`path:line:col` of the first `needle` in the file (after the first `after`)."""
    with open(path) as handle:
        text = handle.read()
    at = text.index(needle, text.index(after) if after else 0)
    line = text.count("\n", 0, at) + 1
    return f"{path}:{line}:{at - text.rfind(chr(10), 0, at)}"


def raises_at(path_or_call, where: str, message: str):
    """The call raises a NetlangError naming `where` (file:line:col) and containing `message`."""
    with pytest.raises(NetlangError) as info:
        path_or_call()
    text = str(info.value)
    assert where in text and message in text, text
    return info.value


# ---- 1. $var$ substitution ------------------------------------------------------------------------

def test_a_variable_is_found_in_any_case(tmp_path):
    path = config_with(tmp_path, top="dataDir = /data/mnist", reader="file = $DataDir$/Train.txt")
    assert train_view(path).reader.file == "/data/mnist/Train.txt"


def test_variables_are_substituted_recursively_in_the_top_level(tmp_path):
    path = config_with(tmp_path, top="RootDir = ..\nDataDir = $RootDir$/Data\nmodelPath = $rootdir$/Models/m.dnn",
                       reader="file = $DATADIR$/x.txt")
    view = train_view(path)
    assert view.reader.file == "../Data/x.txt"
    assert view.modelPath == "../Models/m.dnn"


def test_x_equals_dollar_x_in_a_block_is_the_top_level_x(tmp_path):
    path = config_with(tmp_path, top="minibatchSize = 32", sgd="minibatchSize = $minibatchSize$")
    assert train_view(path).SGD.minibatchSize.value(1) == 32


def test_a_variable_in_the_network_is_replaced_by_its_text_before_brainscript_reads_it(tmp_path):
    path = config_with(tmp_path, top="dim = 2:2")      # the text "2:2" becomes the shape 2:2
    main(["check", path, "--no-data", "-q"])
    network = train_view(path).network.evaluate()
    assert network.get("features").shape == (2, 2)


def test_a_variable_inside_a_brainscript_string_is_replaced_too(tmp_path):
    path = config_with(tmp_path, top="which = small",
                       train="""BrainScriptNetworkBuilder = {
            width = if "$which$" == "small" then 2 else 3
            features = Input {width} ; labels = Input {3} ; z = DenseLayer {3} (features)
            ce = CrossEntropyWithSoftmax (labels, z) ; criterionNodes = (ce)
        }""")
    assert train_view(path).network.evaluate().get("features").shape == (2,)


def test_variables_are_substituted_in_brainscript_include_paths(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "Macros.bs").write_text("Hidden {n} = DenseLayer {n, activation = ReLU}\n")
    path = config_with(tmp_path, top="ConfigDir = lib", train="""BrainScriptNetworkBuilder = {
            include "$ConfigDir$/Macros.bs"
            features = Input {2} ; labels = Input {3} ; z = DenseLayer {3} (Hidden {4} (features))
            ce = CrossEntropyWithSoftmax (labels, z) ; criterionNodes = (ce)
        }""")
    network = train_view(path).network.evaluate()
    assert network.get("z").shape == (3,)


def test_config_dir_is_the_config_files_directory_unless_the_file_defines_it(tmp_path):
    path = config_with(tmp_path, reader="file = $ConfigDir$/data.txt")
    assert train_view(path).reader.file == f"{tmp_path}/data.txt"
    path = config_with(tmp_path, top="ConfigDir = elsewhere", reader="file = $ConfigDir$/data.txt")
    assert train_view(path).reader.file == "elsewhere/data.txt"


def test_an_undefined_variable_is_an_error_that_says_so_at_its_position(tmp_path):
    path = config_with(tmp_path, top="deviceId = $gpu$")
    err = raises_at(lambda: load_config(path), position_of(path, "$gpu$"), "undefined variable '$gpu$'")
    assert "device" not in err.message


def test_an_undefined_variable_in_the_network_names_its_line_and_column(tmp_path):
    path = config_with(tmp_path, train="""BrainScriptNetworkBuilder = { x = Input {$width$} }""")
    raises_at(lambda: train_view(path).network.evaluate(), position_of(path, "$width$"), "undefined variable '$width$'")


def test_an_undefined_variable_in_a_block_no_command_runs_is_no_error(tmp_path):
    path = config_with(tmp_path, top="unused = [ action = write ; outputPath = $nowhere$/out ]")
    assert train_view(path).reader.file == "data.txt"


def test_a_variable_that_refers_to_itself_is_an_error(tmp_path):
    path = config_with(tmp_path, top="a = $b$/x\nb = $A$/y", reader="file = $a$")
    raises_at(lambda: train_view(path), position_of(path, "$A$"), "refers to itself: $a$ -> $b$ -> $a$")


def test_a_variable_naming_a_block_is_an_error(tmp_path):
    path = config_with(tmp_path, top="paths = [ data = x ]", reader="file = $paths$")
    raises_at(lambda: train_view(path), "cfg.cntk", "names a block")


def test_a_dollar_without_a_name_stays_text(tmp_path):
    path = config_with(tmp_path, reader="file = costs$ 5$.txt")
    assert train_view(path).reader.file == "costs$ 5$.txt"


def test_a_command_line_value_reaches_every_variable_that_uses_it(tmp_path):
    path = config_with(tmp_path, top="DataDir = here", reader="file = $DataDir$/x.txt")
    assert train_view(path, ["DataDir=/elsewhere"]).reader.file == "/elsewhere/x.txt"
    assert train_view(path, ["train=[reader=[file=$DataDir$/y.txt]]"]).reader.file == "here/y.txt"


# ---- 2. values are text ---------------------------------------------------------------------------

@pytest.mark.parametrize("written, read", [
    ("./work", "./work"),
    ("train.rois.txt", "train.rois.txt"),
    ("g2p-01-$deviceId$", "g2p-01--1"),
    ("%d\\t|w\\s", "%d\\t|w\\s"),
    ("C:\\data\\cifar\\train_map.txt", "C:\\data\\cifar\\train_map.txt"),
    ('"  spaced  "', "  spaced  "),
])
def test_unquoted_values_are_strings(tmp_path, written, read):
    path = config_with(tmp_path, top="deviceId = -1", reader=f"file = {written}")
    assert train_view(path).reader.file == read


def test_a_later_key_replaces_an_earlier_one_of_any_case(tmp_path):
    path = config_with(tmp_path, top="DeviceId = 0\ndeviceid = -1")
    assert load_config(path).top.deviceId == -1


def test_a_bracket_block_given_again_is_merged_into_the_first(tmp_path):
    path = config_with(tmp_path, train="SGD = [ maxEpochs = 7 ]")
    sgd = train_view(path).SGD
    assert sgd.maxEpochs == 7 and sgd.learningRatesPerMB.value(1) == 0.1


def test_a_brace_block_given_again_replaces_the_first(tmp_path):
    path = config_with(tmp_path, train="SGD = { maxEpochs = 7 ; learningRatesPerSample = 0.5 }")
    sgd = train_view(path).SGD
    assert sgd.maxEpochs == 7 and not sgd.given("learningRatesPerMB")


def test_a_top_level_frame_mode_reaches_the_reader(tmp_path):
    path = config_with(tmp_path, top="frameMode = true")
    reader = train_view(path).reader
    assert reader.frameMode is True and reader.origin("frameMode").inherited_from == ""


def test_a_bare_key_means_true(tmp_path):
    path = config_with(tmp_path, top="parallelTrain")
    assert load_config(path).top.parallelTrain is True


def test_comments_need_a_blank_before_the_hash_so_1_inf_is_a_number(tmp_path):
    path = config_with(tmp_path, train="""SGD = [
            # a whole-line comment
            clippingThresholdPerSample = 1#INF # the rest of the line is a comment ]
        ]""")
    assert math.isinf(train_view(path).SGD.clippingThresholdPerSample)


def test_items_are_separated_by_newlines_semicolons_and_commas(tmp_path):
    path = config_with(tmp_path, sgd="minibatchSize = 16, momentumPerMB = 0.5")
    sgd = train_view(path).SGD
    assert sgd.minibatchSize.value(1) == 16 and sgd.momentumPerMB.value(1) == 0.5


def test_a_block_may_name_its_own_separator(tmp_path):
    path = config_with(tmp_path, train="SGD = [|maxEpochs = 3|learningRatesPerMB = 0.2]")
    assert train_view(path).SGD.maxEpochs == 3


def test_include_lines_splice_other_config_files(tmp_path):
    write(tmp_path, "DataDir = shared/data\n", "paths.cntk")
    config_with(tmp_path, reader="file = $DataDir$/x.txt", name="main.cntk")
    path = write(tmp_path, "include=paths.cntk\n" + (tmp_path / "main.cntk").read_text())
    assert train_view(path).reader.file == "shared/data/x.txt"


def test_an_include_line_with_a_variable_is_an_error(tmp_path):
    path = write(tmp_path, "ConfigDir = .\ninclude=$ConfigDir$/paths.cntk\n")
    raises_at(lambda: load_config(path), f"{path}:2:1", "an include= line names files explicitly")


def test_an_unmatched_bracket_is_an_error_at_its_position(tmp_path):
    path = write(tmp_path, "command = train\ntrain = [\n    action = train\n    SGD = [ maxEpochs = 1 }\n]\n")
    raises_at(lambda: load_config(path), position_of(path, "}"), "unmatched bracket: '}' does not close the '['")


def test_a_block_that_is_never_closed_is_an_error_at_its_opening(tmp_path):
    path = write(tmp_path, "command = train\ntrain = [\n    action = train\n")
    raises_at(lambda: load_config(path), f"{path}:2:9", "no closing ]")


def test_a_key_without_a_value_is_an_error(tmp_path):
    path = write(tmp_path, "command = train\nmodelPath =\n")
    raises_at(lambda: load_config(path), f"{path}:2:11", "no value given for 'modelPath'")


def test_brackets_in_brainscript_strings_and_comments_do_not_count(tmp_path):
    path = config_with(tmp_path, train="""BrainScriptNetworkBuilder = {
            // a comment with a stray ( bracket
            note = 'a string with ] in it'
            features = Input {2} ; labels = Input {3} ; z = DenseLayer {3} (features)
            ce = CrossEntropyWithSoftmax (labels, z) ; criterionNodes = (ce)
        }""")
    assert train_view(path).network.evaluate().get("note") == "a string with ] in it"


# ---- 3. keys CNTK reads, and keys it does not know ------------------------------------------------

def test_keys_cntk_reads_are_accepted(tmp_path, caplog):
    path = config_with(tmp_path, sgd="loadBestModel = false ; autoAdjustLR = adjustAfterEpoch",
                       reader="useMersenneTwisterRand = true")
    with caplog.at_level(logging.WARNING):
        view = train_view(path)
    assert view.SGD.AutoAdjust.loadBestModel is False
    assert view.SGD.AutoAdjust.autoAdjustLR == "adjustAfterEpoch"
    assert view.reader.useMersenneTwisterRand is True
    assert not caplog.records


def test_lm_sequence_reader_keys_are_accepted(tmp_path, caplog):
    path = write(tmp_path, """
        command = train
        train = [
            action = train
            BrainScriptNetworkBuilder = { x = Input {10} ; y = Input {10} ; ce = CrossEntropyWithSoftmax (y, DenseLayer {10} (x)) ; criterionNodes = (ce) }
            SGD = [ maxEpochs = 1 ; learningRatesPerSample = 0.1 ]
            reader = [
                readerType = LMSequenceReader
                randomize = None
                nbruttsineachrecurrentiter = 10
                unk = <unk>
                wordclass = vocab.txt
                file = ptb.train.txt
                features = [ dim = 10 ; sectionType = data ]
                labelIn = [ dim = 1 ; labelType = Category ; beginSequence = </s> ; endSequence = </s> ; labelDim = 10 ; labelMappingFile = words.txt ; sectionType = labels ]
            ]
        ]
        """)
    with caplog.at_level(logging.WARNING):
        reader = train_view(path).reader
    assert reader.unk == "<unk>" and reader.extra_blocks["labelIn"].beginSequence == "</s>"
    # netlang reads dim and labelDim as one setting; CNTK's LMSequenceReader reads both: a warning, no error
    assert [r.getMessage() for r in caplog.records if "unknown key" in r.getMessage()] == []


def test_an_aspect_ratio_range_above_one_is_accepted(tmp_path):
    path = config_with(tmp_path, reader="features2 = [ dim = 2 ; aspectRatio = 0.75:1.3333 ]")
    assert train_view(path).reader.extra_blocks["features2"].aspectRatio == [0.75, 1.3333]


def test_an_unknown_key_in_a_cntk_file_is_a_warning_at_its_position(tmp_path, caplog):
    path = config_with(tmp_path, sgd="learningRateMultipliers = 2")
    with caplog.at_level(logging.WARNING, logger="netlang.config"):
        config = load_config(path)
        assert config.action("train").SGD.maxEpochs == 1
    assert len(config.warnings) == 1
    text = caplog.records[0].getMessage()
    assert position_of(path, "learningRateMultipliers") in text
    assert "unknown key 'learningRateMultipliers' in SGD" in text
    assert "CNTK ignores it" in text


def test_an_unknown_key_in_a_net_file_stays_an_error_with_a_suggestion(tmp_path):
    path = write(tmp_path, """
        command = train
        train = {
            action = "train"
            network = { x = Input {2} ; ce = ReduceSum (x) ; criterionNodes = (ce) }
            SGD = { maxEpochs = 1 ; learningRatesPerMB = 0.1 ; minibachSize = 3 }
            reader = { readerType = "CNTKTextFormatReader" ; file = "d.txt" ; input = { x = { dim = 2 } } }
        }
        """, "cfg.net")
    err = raises_at(lambda: load_config(path).actions(), position_of(path, "minibachSize"),
                    "unknown key 'minibachSize' in SGD")
    assert "minibatchSize" in err.hint


def test_a_near_miss_of_a_top_level_setting_is_a_warning_in_a_cntk_file(tmp_path, caplog):
    path = config_with(tmp_path, top="modelPth = x.dnn")
    with caplog.at_level(logging.WARNING, logger="netlang.config"):
        load_config(path)
    assert "modelPth" in caplog.records[0].getMessage() and "did you mean 'modelPath'" in caplog.records[0].getMessage()
