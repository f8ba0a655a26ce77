"""CNTK's SimpleNetworkBuilder: a network given by a few settings (reference §3.9), written out as the
BrainScript it stands for and evaluated like any network.

    SimpleNetworkBuilder = [
        layerSizes = 363:512:512:132 ; layerTypes = Sigmoid ; initValueScale = 1.0 ; uniformInit = true
        trainingCriterion = CrossEntropyWithSoftmax ; evalCriterion = ClassificationError
        applyMeanVarNorm = true ; needPrior = true ; addDropoutNodes = false
    ]

`rnnType = FFDNN` (the default) is the feed-forward network of CNTK's AN4 speech example, with CNTK's
node names, so `outputNodeNames = ScaledLogLikelihood` and the like find their nodes:

    features → [MeanOfFeatures, InvStdOfFeatures → MVNormalizedFeatures]
    → H1 = f (W0 · x + B0) [→ DropH1] → … → HLast = W{n} · H{n} + B{n}
    labels: CrossEntropyWithSoftmax (criterion), EvalErrorPrediction (evaluation)
    needPrior: Prior = Mean (labels), LogOfPrior, ScaledLogLikelihood = HLast - LogOfPrior (output)
    PosteriorProb = Softmax (HLast)

W{i} is (layerSizes[i+1] x layerSizes[i]), uniform (±0.05·initValueScale) or gaussian
(0.2·initValueScale/√fan-in) with random seed i+1; B{i} is (layerSizes[i+1] x 1), zero; `layerTypes`
lists each hidden layer's nonlinearity, the last one repeating. The other network kinds (LSTM,
CLASSLSTM with its class-based criterion, …) are not written out yet: the schema stops at `rnnType`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netlang import sources
from netlang.compiler.lang.evaluator import evaluate
from netlang.errors import Span
from netlang.grammar.parser import parse_expression

ACTIVATIONS = {"Sigmoid": "Sigmoid", "Tanh": "Tanh", "RectifiedLinear": "ReLU", "Linear": "Identity"}
# Criterion node names are CNTK's, and some are the names of library functions too, which a member of
# that name would hide inside the network record: the functions are reached through outer aliases.
CRITERIA = {"CrossEntropyWithSoftmax": "_CE", "SquareError": "_SE", "Logistic": "_LG"}
EVALUATIONS = {"ErrorPrediction": ("EvalErrorPrediction", "_ERR"),
               "CrossEntropyWithSoftmax": ("CrossEntropyWithSoftmax", "_CE"),
               "SquareError": ("SquareError", "_SE"), "Logistic": ("Logistic", "_LG")}
_ALIASES = "_CE = CrossEntropyWithSoftmax ; _SE = SquareError ; _LG = Logistic ; _ERR = ClassificationError"


def layer_sizes(schedule) -> list[int]:
    """`363:512*2:132` as CNTK's integer vectors read it: `value*n` repeats a value n times."""
    return [value for value, count in schedule.entries for _ in range(count or 1)]


def ffdnn_text(view) -> str:
    """The BrainScript network record of a validated `SimpleNetworkBuilder` block with rnnType FFDNN."""
    sizes = layer_sizes(view.layerSizes)
    types = view.layerTypes
    init = "uniform" if view.uniformInit else "gaussian"
    lines = [f"features = Input {{{sizes[0]}}}"]
    x = "features"
    if view.applyMeanVarNorm:
        lines += ["MeanOfFeatures = Mean (features)", "InvStdOfFeatures = InvStdDev (features)",
                  "MVNormalizedFeatures = PerDimMeanVarNormalization (features, MeanOfFeatures, InvStdOfFeatures)"]
        x = "MVNormalizedFeatures"
    last = len(sizes) - 2
    for i in range(last + 1):
        weight = (f"W{i} = Parameter ({sizes[i + 1]}, {sizes[i]}, init='{init}', "
                  f"initValueScale={view.initValueScale!r}, randomSeed={i + 1})")
        lines += [weight, f"B{i} = Parameter ({sizes[i + 1]}, 1, initValue=0)"]
        if i == last:
            lines.append(f"HLast = W{i} * {x} + B{i}")
            break
        activation = ACTIVATIONS[types[min(i, len(types) - 1)]]
        lines.append(f"H{i + 1} = {activation} (W{i} * {x} + B{i})")
        x = f"H{i + 1}"
        if view.addDropoutNodes:
            lines.append(f"Drop{x} = Dropout ({x})")
            x = f"Drop{x}"
    lines.append(f"labels = Input {{{sizes[-1]}}}")
    criterion = view.trainingCriterion
    lines.append(f"{criterion} = {CRITERIA[criterion]} (labels, HLast)")
    evaluation, function = EVALUATIONS[view.evalCriterion]
    if evaluation != criterion:
        lines.append(f"{evaluation} = {function} (labels, HLast)")
    output = "HLast"
    if view.needPrior:
        lines += ["Prior = Mean (labels)", "LogOfPrior = Log (Prior)", "ScaledLogLikelihood = HLast - LogOfPrior"]
        output = "ScaledLogLikelihood"
    lines += ["PosteriorProb = Softmax (HLast)",
              "featureNodes = (features)", "labelNodes = (labels)", f"criterionNodes = ({criterion})",
              f"evaluationNodes = ({evaluation})", f"outputNodes = ({output})"]
    network = "\n".join("        " + line for line in lines)
    return f"{{\n    {_ALIASES}\n    network = {{\n{network}\n    }}\n}}.network"


@dataclass
class SimpleNetworkRef:
    """The network of a `SimpleNetworkBuilder` block, built when asked (like fields.NetworkRef)."""

    view: Any          # the validated SimpleNetworkBuilder block
    record: Any        # the command block: the scope the network is evaluated in
    span: Span | None

    @property
    def name(self) -> str:
        return f"<SimpleNetworkBuilder of {self.view.path}>"

    def source_text(self) -> str:
        return ffdnn_text(self.view)

    def evaluate(self):
        text = self.source_text()
        sources.register(self.name, text)
        return evaluate(parse_expression(text, self.name), self.record, "")

    def expr(self):
        return parse_expression(self.source_text(), self.name)
