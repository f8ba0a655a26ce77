"""The parts of CNTK's library and rules that `.cntk` configs rely on (reference §3.7, §3.9, §4): library
functions, `new` helper types, shape rules no stricter than CNTK's, parameter counting, SimpleNetworkBuilder,
and what `netlang check` does with library files and models an earlier block writes."""
from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest

from netlang.cli import main
from netlang.compiler.graph import evaluate_expression, evaluate_text, load_config
from netlang.compiler.graph.network import build_action_network, network_from_value
from netlang.compiler.lang.evaluator import force_all
from netlang.errors import NetlangError
from netlang.ops.registry import ShapeMismatch, get
from netlang.readers.transforms import Crop
from netlang.runtime.backend import select_backend
from netlang.runtime.executor import Executor


def network_of(body: str):
    """The network of a record written in BrainScript."""
    record = evaluate_text("net = {\n" + textwrap.dedent(body) + "\n}", "<test>")
    return network_from_value(record.get("net"))


def parameters(network) -> dict:
    return {p.name: p.shape for p in network.trained_parameters()}


# ---- the library ----------------------------------------------------------------------------------

def test_new_helper_types_evaluate_as_cntk_core_bs_writes_them():
    assert evaluate_expression("new NumericFunction [ what = 'Length' ; arg = (1:2:3) ]") == 3.0
    assert evaluate_expression("{ M (x, y) = new NumericFunction [ what = 'Mod' ; args = (x:y) ] }.M (-7, 3)") == -1.0
    assert evaluate_expression("new NumericFunction [ what = 'IntDiv' ; args = (7:2) ]") == 3.0
    assert evaluate_expression("new StringFunction [ what = 'Format' ; arg = 3.14159 ; how = '.2' ]") == "3.14"
    assert evaluate_expression("new StringFunction [ what = 'Replace' ; arg = 'a-b' ; replacewhat = '-' ; withwhat = '+' ]") \
        == "a+b"
    assert evaluate_expression("new StringFunction [ what = 'Substr' ; arg = 'hello' ; pos = -3 ; chars = 2 ]") == "ll"
    assert evaluate_expression("new CompareFunction [ what = 'IsSameObject' ; args = (None : None) ]") is True
    assert evaluate_expression("new CompareFunction [ what = 'IsDouble' ; args = 'x' ]") is False


def test_a_fail_action_reads_its_message_from_the_function_arguments():
    with pytest.raises(NetlangError, match="stop here"):
        evaluate_expression("{ F (what) = new FailAction [ /*what*/ ] }.F ('stop here')")


def test_an_unknown_helper_function_is_an_error():
    with pytest.raises(NetlangError, match="NumericFunction: unknown function 'Sqrt'"):
        evaluate_expression("new NumericFunction [ what = 'Sqrt' ; arg = 4 ]")


def test_log_prior_bff_sbff_and_diag_times():
    net = network_of("""
        features = Input {4} ; labels = Input {3}
        layer = BFF (features, 3, 4)
        hidden = SBFF (features, 3, 4).Eh
        scaled = DiagTimes (ParameterTensor {3}, layer.z)
        prior = LogPrior (labels)
        out = scaled + hidden - prior
        ce = CrossEntropyWithSoftmax (labels, out) ; criterionNodes = (ce)
    """)
    shapes = parameters(net)
    assert shapes["layer.W"] == (3, 4) and shapes["layer.B"] == (3, 1)
    assert net.node("prior").op == "Log" and net.node("prior").inputs[0].op == "Mean"
    assert net.node("out").shape == (3, 1)


def test_softmax_along_an_axis_normalises_that_axis():
    net = network_of("""
        x = Input {2:3}
        p = Softmax (x, axis=2)
    """)
    ex = Executor(net, select_backend("cpu", "double"))
    x = np.random.default_rng(0).standard_normal((5, 3, 2))            # 5 samples of BS [2 x 3]
    p = ex.run({"x": x}, [net.node("p")])[0]["p"]
    np.testing.assert_allclose(p.sum(axis=1), 1.0)                      # BS axis 2 is row-major axis 1


def test_trace_passes_values_through_and_prints_them(capsys):
    net = network_of("""
        x = Input {3}
        t = Trace (x, say='inputs', logFirst=1)
    """)
    ex = Executor(net, select_backend("cpu", "double"))
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(ex.run({"x": x}, [net.node("t")])[0]["t"], x)
    ex.run({"x": x}, [net.node("t")])
    assert capsys.readouterr().err.count("Trace inputs value") == 1     # logFirst = 1


@pytest.mark.parametrize("init", ["normal", "truncNormal", "heNormal", "glorotUniform", "gaussian", "xavier"])
def test_cntk_initializer_names(init):
    net = network_of(f"""
        x = Input {{3}}
        W = ParameterTensor {{(4:3), init='{init}', initValueScale=0.5}}
        y = W * x
    """)
    ex = Executor(net, select_backend("cpu", "double"))
    value = ex.parameters["W"]
    assert value.shape == (3, 4) and np.all(np.isfinite(value)) and np.any(value != 0)
    if init == "truncNormal":
        assert np.abs(value).max() <= 2 * 0.5


def lstmp_stack_count(hook: bool, stabilize: bool) -> int:
    net = network_of(f"""
        x = Input {{3}}
        hook (input, prevState) = BS.Sequences.BroadcastSequenceAs (input, BS.Sequences.Last (input))
        layers = BS.RNNs.RecurrentLSTMPStack ((4:4:4), x, inputDim=3, augmentInputDim=3,
                                              {'augmentInputHook=hook,' if hook else ''}
                                              enableSelfStabilization={'true' if stabilize else 'false'})
        out = layers[2].h
    """)
    return sum(p.dim for p in net.learnable_parameters)


def test_an_lstmp_stack_hooks_only_its_first_layer_and_stabilizes_between_layers():
    # the hook's aux input adds A (4 x 3) to each of the first layer's four gates, to no other layer
    assert lstmp_stack_count(True, False) - lstmp_stack_count(False, False) == 4 * 4 * 3
    # self-stabilization: dh, dc and ct in each of the 3 layers, and each upper layer's input
    assert lstmp_stack_count(False, True) - lstmp_stack_count(False, False) == 3 * 3 + 2


def test_optimized_rnn_stack_counts_cudnns_two_bias_vectors():
    net = network_of("""
        x = Input {10}
        W = ParameterTensor {(0:0)}
        h = OptimizedRNNStack (W, x, 16, numLayers=2)
    """)
    # per layer: 4 gates x 16 x (input + 16 + 2 biases)
    assert net.parameter_count() == 4 * 16 * (10 + 16 + 2) + 4 * 16 * (16 + 16 + 2)


def test_class_based_softmax_is_not_supported_yet_with_a_clear_message():
    with pytest.raises(NetlangError, match="ClassBasedCrossEntropyWithSoftmax is not supported by netlang yet"):
        network_of("""
            x = Input {10} ; c = Input {2}
            ce = ClassBasedCrossEntropyWithSoftmax (c, x, ParameterTensor {(10:10)}, x)
        """)


# ---- shape rules no stricter than CNTK's ----------------------------------------------------------

def test_criteria_accept_broadcast_compatible_operands():
    for name in ("CrossEntropyWithSoftmax", "ClassificationError", "SquareError", "CrossEntropy", "Logistic"):
        assert get(name).shape([(10,), (10, 1)], {}) == (1,)
        with pytest.raises(ShapeMismatch, match="must have the same shape"):
            get(name).shape([(10,), (10, 2)], {})


def test_a_convolution_weight_is_checked_by_its_number_of_elements():
    net = network_of("""
        x = Input {8:8:6}
        x2 = SplitDimension (x .* x, 3, 1)
        W = ParameterTensor {(1:1:3:1), learningRateMultiplier=0, initValue=0.25}
        y = Convolution (W, x2, (1:1:3), mapDims=1, autoPadding=true)
    """)
    assert net.node("y").shape == (8, 8, 6, 1)
    with pytest.raises(NetlangError, match="the weight is \\[1 x 1 x 2 x 1\\]"):
        network_of("""
            x = Input {8:8:6}
            W = ParameterTensor {(1:1:2:1), initValue=0.25}
            y = Convolution (W, SplitDimension (x, 3, 1), (1:1:3), mapDims=1)
        """)


# ---- parameter counting ---------------------------------------------------------------------------

def test_parameters_the_criterion_does_not_use_are_neither_counted_nor_trained(capsys, tmp_path):
    path = tmp_path / "cfg.net"
    path.write_text(textwrap.dedent("""
        train = {
            action = "train"
            network = {
                x = Input {4} ; y = Input {2}
                z = DenseLayer {2} (x)
                spare = DenseLayer {3} (x)          # a root, but the criterion does not use it
                ce = CrossEntropyWithSoftmax (y, z) ; criterionNodes = (ce) ; outputNodes = (z : spare)
            }
            SGD = { maxEpochs = 1 ; learningRatesPerMB = 0.1 }
            reader = { readerType = "CNTKTextFormatReader" ; file = "d.txt" ; input = { x = { dim = 4 } ; y = { dim = 2 } } }
        }"""))
    assert main(["check", str(path), "--no-data", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["actions"]["train"]
    assert report["parameters"] == 4 * 2 + 2
    assert report["unused_parameters"] == {"spare.arrayOfFunctions[0].W": 12, "spare.arrayOfFunctions[0].b": 3}
    assert main(["check", str(path), "--no-data"]) == 0
    out = capsys.readouterr().out
    assert "train: 10 learnable parameters" in out and "15 more in 2 parameter(s) the criterion does not use" in out


# ---- SimpleNetworkBuilder -------------------------------------------------------------------------

SIMPLE = """
command = train
train = [
    action = train
    SimpleNetworkBuilder = [
        layerSizes = 20:64*2:5
        layerTypes = RectifiedLinear:Tanh
        {extra}
    ]
    SGD = [ maxEpochs = 1 ; learningRatesPerMB = 0.1 ; dropoutRate = 0.1 ]
    reader = [ readerType = CNTKTextFormatReader ; file = d.txt ; input = [ features = [ dim = 20 ] ; labels = [ dim = 5 ] ] ]
]
"""


def simple_network(tmp_path, extra: str = ""):
    path = tmp_path / "simple.cntk"
    path.write_text(SIMPLE.replace("{extra}", extra))
    return build_action_network(load_config(str(path)).action("train").network_expr())


def test_simple_network_builder_ffdnn_layers_activations_and_dropout(tmp_path):
    net = simple_network(tmp_path, "addDropoutNodes = true ; uniformInit = false ; initValueScale = 2")
    assert net.parameter_count() == (20 * 64 + 64) + (64 * 64 + 64) + (64 * 5 + 5)
    assert net.node("H1").op == "ReLU" and net.node("H2").op == "Tanh"
    assert net.node("DropH1").op == "Dropout" and net.node("DropH2").op == "Dropout"
    assert net.node("W0").attrs["init"] == "gaussian" and net.node("W0").attrs["initValueScale"] == 2
    assert [n.name for n in net.groups["output"]] == ["HLast"]


def test_simple_network_builder_kinds_other_than_ffdnn_are_not_supported_yet(tmp_path):
    with pytest.raises(NetlangError, match="rnnType = CLASSLSTM is not supported by netlang yet") as info:
        simple_network(tmp_path, "rnnType = CLASSLSTM")
    assert "simple.cntk:8:9" in str(info.value)
    with pytest.raises(NetlangError, match="trainingCriterion = ClassCrossEntropyWithSoftmax is not supported"):
        simple_network(tmp_path, "trainingCriterion = ClassCrossEntropyWithSoftmax")


# ---- check: library files and models an earlier block writes ------------------------------------

def test_check_of_a_definitions_only_file_says_there_is_nothing_to_run(capsys, tmp_path):
    path = tmp_path / "Macros.bs"
    path.write_text("Hidden {n} = DenseLayer {n, activation = ReLU}\nwidth = 3\n")
    assert main(["check", str(path)]) == 0
    assert "2 definitions (Hidden, width); no command to run" in capsys.readouterr().out


def test_check_of_a_definitions_only_file_reports_errors_in_them(capsys, tmp_path):
    path = tmp_path / "Macros.bs"
    path.write_text("width = 3\nbroken = width + 'x'\n")
    assert main(["check", str(path)]) == 78
    assert "Macros.bs:2:" in capsys.readouterr().err


def test_check_defers_a_model_an_earlier_block_writes_and_checks_the_rest(capsys, tmp_path):
    path = tmp_path / "cfg.cntk"
    path.write_text(textwrap.dedent("""
        modelPath = out/m.dnn
        command = train:tune
        train = [
            action = train
            BrainScriptNetworkBuilder = { x = Input {4} ; y = Input {2} ; z = DenseLayer {2} (x) ; ce = CrossEntropyWithSoftmax (y, z) ; criterionNodes = (ce) }
            SGD = [ maxEpochs = 1 ; learningRatesPerMB = 0.1 ]
            reader = [ readerType = CNTKTextFormatReader ; file = d.txt ; input = [ x = [ dim = 4 ] ; y = [ dim = 2 ] ] ]
        ]
        tune = [
            action = test
            BrainScriptNetworkBuilder = (BS.Network.Load ("$modelPath$.1"))
            reader = [ readerType = CNTKTextFormatReader ; file = d.txt ; input = [ x = [ dim = 4 ] ; y = [ dim = 2 ] ] ]
        ]
        """))
    assert main(["check", str(path), "--no-data"]) == 0      # no model file: it is not loaded
    out = capsys.readouterr().out
    assert "train: 10 learnable parameters" in out
    assert "tune: loads out/m.dnn.1, which block train writes" in out


# ---- the library CNTK.core.bs is written against ------------------------------------------------

# The helpers as CNTK's core library defines them (through `new` objects), in our own text.
CORE_STYLE_HELPERS = """
    CoreLength (x) = new NumericFunction [ what = 'Length' ; arg = x ]
    CoreMod (x, y) = new NumericFunction [ what = 'Mod' ; args = (x : y) ]
    CoreIntDiv (x, y) = new NumericFunction [ what = 'IntDiv' ; args = (x : y) ]
    CoreFormat (value, format) = new StringFunction [ what = 'Format' ; arg = value ; how = format ]
    CoreSubstr (s, begin, num) = new StringFunction [ what = 'Substr' ; arg = s ; pos = begin ; chars = num ]
    CoreReplace (s, from, to) = new StringFunction [ what = 'Replace' ; arg = s ; replacewhat = from ; withwhat = to ]
    CoreChr (c) = new StringFunction [ what = 'Chr' ; arg = c ]
    CoreIsSameObject (a, b) = new CompareFunction [ what = 'IsSameObject' ; args = (a : b) ]
    CoreIsArray (a) = new CompareFunction [ what = 'IsArray' ; args = a ]
    CoreIsDouble (a) = new CompareFunction [ what = 'IsDouble' ; args = a ]
    CoreIsBool (a) = new CompareFunction [ what = 'IsBool' ; args = a ]
"""


@pytest.mark.parametrize("call", [
    "Length ((1:2:3))", "Length ('abc')", "Mod (-7, 3)", "IntDiv (-7, 2)", "Format (3.14159, '.3')", "Format (7, '')",
    "Substr ('hello', 1, 3)", "Substr ('hello', -2, -1)", "Replace ('a.b.c', '.', '/')", "Chr (66)",
    "IsSameObject (None, None)", "IsSameObject ((1:2), (1:2))", "IsArray ((1:2))", "IsArray (1)", "IsDouble (1)",
    "IsBool (true)", "IsBool (1)",
])
def test_helpers_written_as_cntk_core_bs_writes_them_agree_with_netlangs(call):
    record = evaluate_text(textwrap.dedent(CORE_STYLE_HELPERS) + f"mine = {call}\ncore = Core{call}\n", "<core>")
    assert record.get("core") == record.get("mine")


CNTK_CORE_BS = os.environ.get("NETLANG_CNTK_CORE_BS")


@pytest.mark.skipif(not CNTK_CORE_BS, reason="set NETLANG_CNTK_CORE_BS to a copy of CNTK's CNTK.core.bs")
def test_cntk_core_bs_itself_evaluates_and_its_layers_agree_with_netlangs():
    with open(CNTK_CORE_BS, encoding="utf-8") as handle:
        core = handle.read()
    probe = """
        features = Input {20} ; labels = Input {5}
        z = Sequential (DenseLayer {64, activation=ReLU} : LinearLayer {5}) (features)
        ce = CrossEntropyWithSoftmax (labels, z) ; criterionNodes = (ce)
    """
    record = evaluate_text(core + "\nprobe = {" + probe + "}\n", CNTK_CORE_BS)
    for name in ("BS", "CNTK2"):
        force_all(record.get(name))
    theirs = network_from_value(record.get("probe"))
    ours = network_of(probe)
    assert theirs.parameter_count() == ours.parameter_count() == 20 * 64 + 64 + 64 * 5 + 5


def test_a_crop_jitters_aspect_ratios_above_one_too():
    crop = Crop("randomarea", area_ratio=(0.25, 0.25), aspect_ratio=(0.75, 1.3333), jitter="uniratio")
    assert crop.is_random
    rng = np.random.default_rng(0)
    image = np.zeros((40, 40, 3))
    ratios = set()
    for _ in range(40):
        out = crop.apply(image, rng, 0)
        ratios.add(round(out.shape[1] / out.shape[0], 1))
        assert out.shape[0] * out.shape[1] <= 0.3 * 40 * 40
    assert min(ratios) < 1 < max(ratios)


def test_a_cntk_reader_netlang_does_not_have_is_not_supported_yet_at_its_reader_type(capsys, tmp_path):
    path = tmp_path / "lm.cntk"
    path.write_text(textwrap.dedent("""
        command = train
        train = [
            action = train
            BrainScriptNetworkBuilder = { x = Input {10} ; y = Input {10} ; ce = CrossEntropyWithSoftmax (y, DenseLayer {10} (x)) ; criterionNodes = (ce) }
            SGD = [ maxEpochs = 1 ; learningRatesPerSample = 0.1 ]
            reader = [ readerType = LMSequenceReader ; file = ptb.txt ; x = [ dim = 10 ] ; y = [ dim = 10 ] ]
        ]
        """))
    assert main(["check", str(path)]) == 78
    err = capsys.readouterr().err
    assert "lm.cntk:7:16" in err and "reader type 'LMSequenceReader' is not supported by netlang yet" in err
