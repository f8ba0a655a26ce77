"""The declared keys of every config block: the top level, the action blocks, SGD and its sub-blocks,
readers, deserializers, streams and image transforms.

Each key's default, range and spellings are declared here once, with CNTK's defaults (reference
§5); `netlang explain` lists them, the settings (settings.py) and the runtime read them. Rules between
keys are the schemas' `checks`. Other modules may extend a schema with `schema.add(Field(...))`.

The network member is never evaluated here: `ActionView.network_expr()` hands the IR builder the
record and member name so it can evaluate the network later.

Adam and AdaDelta are netlang additions (CNTK's SGD block has neither): `gradUpdateType = "adam"`
reads `adamBeta1` (not given: β1 follows the momentum schedule), `adamBeta2` (0.999) and
`adamEpsilon` (1e-8), Kingma & Ba's defaults; `gradUpdateType = "adadelta"` reads `rho` (0.95) and
`epsilon` (1e-8), CNTK's Python API defaults.
"""
from __future__ import annotations

import math

from netlang.compiler.lang.fields import (
    AnyValue,
    Bool,
    Device,
    Enum,
    Float,
    Int,
    List,
    NameList,
    Network,
    NetworkRef,
    Path,
    Randomize,
    Scheduled,
    String,
    Unsupported,
)
from netlang.compiler.lang.schema import REQUIRED, Field, Schema
from netlang.compiler.lang.views import Block, BlockList, RecordOf, View

INFINITY = math.inf

# ---- SGD (reference §5.3, §5.4) -----------------------------------------------------------------

AUTO_ADJUST_SCHEMA = Schema("AutoAdjust", [
    Field("autoAdjustLR", Enum(("none", "searchBeforeEpoch", "adjustAfterEpoch"),
                               {"before": "searchBeforeEpoch", "beforeEpoch": "searchBeforeEpoch",
                                "after": "adjustAfterEpoch", "afterEpoch": "adjustAfterEpoch",
                                "false": "none"}), "none",
          doc="automatic learning-rate control: search before each epoch or adjust after it"),
    Field("reduceLearnRateIfImproveLessThan", Float(), 0.0),
    Field("continueReduce", Bool(), False),
    Field("learnRateAdjustInterval", Int(min=1), 1),
    Field("learnRateDecreaseFactor", Float(min=0, max=1), 0.618),
    Field("increaseLearnRateIfImproveMoreThan", Float(), INFINITY),
    Field("learnRateIncreaseFactor", Float(min=1), 1.382),
    Field("loadBestModel", Bool(), True),
    Field("UseCVSetControlLRIfCVExists", Bool(), True),
    Field("UseEvalCriterionControlLR", Bool(), False),
    Field("numPrevLearnRates", Int(min=1), 5),
    Field("numBestSearchEpoch", Int(min=1), 1),
    Field("numSamples4Search", Int(min=1), None, doc="default 500 x minibatch size"),
    Field("numMiniBatch4LRSearch", Int(min=1), None, doc="legacy, in minibatches"),
    Field("autoAdjustMinibatch", Bool(), False),
    Field("minibatchSizeTuningFrequency", Int(min=1), 1),
    Field("minibatchSizeTuningMax", Int(min=1), 1048576),
    Field("minibatchSearchCriterionErrorMargin", Int(min=0), 1),
], doc="automatic learning-rate and minibatch-size adjustment")

DATA_PARALLEL_SGD_SCHEMA = Schema("DataParallelSGD", [
    Field("gradientBits", Scheduled(integer=True, min=1, max=64), None,
          doc="bits per gradient value: 1 = 1-bit SGD; default 32 (float) / 64 (double) = no quantisation"),
    Field("useZeroThresholdFor1BitQuantization", Bool(), True),
    Field("useBufferedAsyncGradientAggregation", Bool(), False),
    Field("quantizeAlongLongerAxis", Bool(), False,
          doc="netlang: quantise each weight matrix along its longer axis (fewer bytes than CNTK's columns)"),
])

MODEL_AVERAGING_SGD_SCHEMA = Schema("ModelAveragingSGD", [
    Field("blockSize", Int(min=1), None, doc="samples between syncs over all workers (default 40000 x workers)"),
    Field("blockSizePerWorker", Int(min=1), None),
    Field("syncPeriod", Int(min=1), None, doc="legacy: samples per worker"),
    Field("syncFrequencyInFrames", Int(min=1), None, doc="legacy: samples per worker"),
])

BLOCK_MOMENTUM_SGD_SCHEMA = Schema("BlockMomentumSGD", [
    Field("blockSize", Int(min=1), None, doc="samples between syncs over all workers (default 120000 x workers)"),
    Field("blockSizePerWorker", Int(min=1), None),
    Field("syncPeriod", Int(min=1), None, doc="legacy: samples per worker"),
    Field("resetSGDMomentum", Bool(), True),
    Field("useNesterovMomentum", Bool(), True),
    Field("blockLearningRate", Float(min=0), 1.0),
    Field("blockMomentumAsTimeConstant", Float(min=0), None, doc="default: momentum 1 - 1/workers"),
    Field("blockMomentumPerSync", Float(min=0, max=1, max_exclusive=True), None),
])

ADJUST_LR_AT_BEGINNING_SCHEMA = Schema("AdjustLearningRateAtBeginning", [
    Field("adjustCoefficient", Float(min=0), 0.1),
    Field("adjustNBMiniBatch", Int(min=1), 256),
])

DATA_PARALLEL_ASGD_SCHEMA = Schema("DataParallelASGD", [
    Field("syncPeriodPerWorker", Int(min=1), 256, aliases=("syncPeriod",)),
    Field("usePipeline", Bool(), False),
    Field("AdjustLearningRateAtBeginning", Block(ADJUST_LR_AT_BEGINNING_SCHEMA), None),
])

PARALLEL_TRAIN_SCHEMA = Schema("ParallelTrain", [
    Field("parallelizationMethod", Enum(("none", "DataParallelSGD", "ModelAveragingSGD", "BlockMomentumSGD",
                                         "DataParallelASGD")), "none"),
    Field("parallelizationStartEpoch", Int(min=1), 1),
    Field("distributedMBReading", Bool(), None, doc="default: true with composite/new-style readers"),
    Field("syncPerfStats", Int(min=0), 0),
    Field("DataParallelSGD", Block(DATA_PARALLEL_SGD_SCHEMA), None),
    Field("ModelAveragingSGD", Block(MODEL_AVERAGING_SGD_SCHEMA), None),
    Field("BlockMomentumSGD", Block(BLOCK_MOMENTUM_SGD_SCHEMA), None),
    Field("DataParallelASGD", Block(DATA_PARALLEL_ASGD_SCHEMA), None),
], doc="data-parallel training over MPI (needs parallelTrain = true at the top level)")

GRAD_UPDATE_TYPES = ("none", "adagrad", "rmsProp", "fsAdagrad", "adam", "adadelta")

SGD_SCHEMA = Schema("SGD", [
    # process
    Field("modelPath", Path(), None, inherit=True),
    Field("trainCriterionNodeName", String(), None, doc="default: the network's criterion"),
    Field("evalCriterionNodeName", String(), None, doc="default: the network's evaluation nodes"),
    Field("maxEpochs", Int(min=1), REQUIRED),
    Field("epochSize", Int(min=0), 0, inherit=True, doc="samples per epoch; 0 = one sweep over the data"),
    Field("minibatchSize", Scheduled(integer=True, min=1), 256, inherit=True),
    Field("truncated", Bool(), False),
    Field("maxSamplesInRAM", Int(min=1), None),
    Field("numSubminibatches", Int(min=1), 1),
    Field("keepCheckPointFiles", Bool(), False, inherit=True),
    Field("maxTempMemSizeInSamplesForCNN", Int(min=0), 0),
    Field("saveBestModelPerCriterion", Bool(), False),
    Field("disableRegInBatchNormalization", Bool(), False),
    Field("batchNormalizationTimeConstant", Float(min=0), 0.0),
    Field("batchNormalizationBlendTimeConstant", Float(min=0), 0.0),
    Field("useAllDataForPreComputedNode", Bool(), True),
    Field("packThresholdSizeInKB", Int(min=0), 32),
    Field("tensorBoardLogDir", Path(), None),
    Field("tensorBoardNumMBsToLogResult", Int(min=1), None, doc="default: numMBsToShowResult"),
    Field("traceLevel", Int(min=0), 0, inherit=True),
    Field("numMBsToShowResult", Int(min=0), 10, inherit=True),
    Field("firstMBsToShowResult", Int(min=0), 0, inherit=True),
    Field("numMBsToCUDAProfile", Int(min=0), 0),
    Field("gradientCheck", Bool(), False, doc="compare gradients with finite differences (needs double)"),
    Field("sigFigs", Int(min=1), 6),
    Field("unitTest", Bool(), False),
    # learning rate
    Field("learningRatesPerSample", Scheduled(min=0), None),
    Field("learningRatesPerMB", Scheduled(min=0), None, doc="divided by the minibatch size"),
    Field("minLearningRatePerSample", Float(min=0), 1e-9),
    # momentum (at most one; momentumPerMB = 0.9 when none is given)
    Field("momentumPerMB", Scheduled(min=0, max=1, max_exclusive=True), None),
    Field("momentumPerSample", Scheduled(min=0, max=1, max_exclusive=True), None),
    Field("momentumAsTimeConstant", Scheduled(min=0), None, doc="in samples; per-sample momentum exp(-1/t)"),
    Field("useNAG", Bool(), False),
    # regularisation and gradient
    Field("L2RegWeight", Float(min=0), 0.0),
    Field("L1RegWeight", Float(min=0), 0.0),
    Field("gradientClippingWithTruncation", Bool(), True),
    Field("clippingThresholdPerSample", Float(min=0), INFINITY),
    Field("gaussianNoiseInjectStd", Float(min=0), 0.0),
    Field("dropoutRate", Scheduled(min=0, max=1, max_exclusive=True), 0.0),
    # update rule
    Field("gradUpdateType", Enum(GRAD_UPDATE_TYPES, {"": "none", "normal": "none", "simple": "none"}), "none"),
    Field("useAdagrad", Bool(), False, doc="legacy: same as gradUpdateType = \"adagrad\""),
    Field("normWithAveMultiplier", Bool(), True),
    Field("rms_wgt_inc", Float(min=0), 1.2),
    Field("rms_wgt_dec", Float(min=0), 0.75),
    Field("rms_wgt_max", Float(min=0), 10.0),
    Field("rms_wgt_min", Float(min=0), 0.1),
    Field("rms_gamma", Float(min=0, max=1), 0.99),
    Field("varianceTimeConstant", Float(min=0), 720000.0, doc="FSAdaGrad, in samples"),
    Field("fsAdagradTargetAvDenom", Float(min=0), 1.0),
    Field("adamBeta1", Float(min=0, max=1, max_exclusive=True), None,
          doc="Adam's first-moment decay; not given: the momentum per minibatch (0.9 by default)",
          unset_text="(the momentum per minibatch)"),
    Field("adamBeta2", Float(min=0, max=1, max_exclusive=True), 0.999),
    Field("adamEpsilon", Float(min=0), 1e-8),
    Field("rho", Float(min=0, max=1), 0.95, doc="AdaDelta decay"),
    Field("epsilon", Float(min=0), 1e-8, doc="AdaDelta epsilon"),
    # adaptation and sequence training
    Field("adaptationRegType", Enum(("none", "kl")), "none"),
    Field("adaptationRegWeight", Float(min=0, max=1), 0.0),
    Field("hSmoothingWeight", Float(), 0.95),
    Field("frameDropThresh", Float(), 1e-10),
    Field("doReferenceAlign", Bool(), False),
    Field("seqGammarUsesMBR", Bool(), False),
    Field("seqGammarAMF", Float(), 14.0),
    Field("seqGammarLMF", Float(), 14.0),
    Field("seqGammarBMMIFactor", Float(), 0.0),
    Field("seqGammarWordPen", Float(), 0.0),
    # sub-blocks
    Field("AutoAdjust", Block(AUTO_ADJUST_SCHEMA), None),
    Field("ParallelTrain", Block(PARALLEL_TRAIN_SCHEMA), None),
], doc="the learner: schedules, momentum, regularisation, update rule")


def _check_learning_rate(sgd: View) -> None:
    per_sample, per_mb = sgd.given("learningRatesPerSample"), sgd.given("learningRatesPerMB")
    if per_sample and per_mb:
        raise sgd.error("learningRatesPerMB", "both learningRatesPerSample and learningRatesPerMB are given",
                        hint="give exactly one: learningRatesPerMB is divided by the minibatch size")
    searching = sgd.AutoAdjust is not None and sgd.AutoAdjust.autoAdjustLR == "searchBeforeEpoch"
    if not (per_sample or per_mb or searching):
        raise sgd.block_error("no learning rate: give learningRatesPerSample or learningRatesPerMB",
                              hint="e.g. learningRatesPerMB = 0.1*5:0.01 (0.1 for 5 epochs, then 0.01)")


def _check_momentum(sgd: View) -> None:
    given = [k for k in ("momentumPerMB", "momentumPerSample", "momentumAsTimeConstant") if sgd.given(k)]
    if len(given) > 1:
        raise sgd.error(given[1], f"both {given[0]} and {given[1]} are given",
                        hint="give at most one momentum key")
    if not given:
        sgd.set_derived("momentumPerMB", 0.9, kind="default")


def _check_legacy_adagrad(sgd: View) -> None:
    if sgd.useAdagrad and not sgd.given("gradUpdateType"):
        sgd.set_derived("gradUpdateType", "adagrad")


SGD_SCHEMA.checks += [_check_learning_rate, _check_momentum, _check_legacy_adagrad]


def _at_most_one(*keys):
    def check(view: View) -> None:
        given = [k for k in keys if view.given(k)]
        if len(given) > 1:
            raise view.error(given[1], f"both {given[0]} and {given[1]} are given", hint="give at most one")
    return check


MODEL_AVERAGING_SGD_SCHEMA.checks.append(_at_most_one("blockSize", "blockSizePerWorker"))
BLOCK_MOMENTUM_SGD_SCHEMA.checks += [_at_most_one("blockSize", "blockSizePerWorker"),
                                     _at_most_one("blockMomentumAsTimeConstant", "blockMomentumPerSync")]

# ---- readers (reference §5.5) ---------------------------------------------------------------------

STREAM_SCHEMA = Schema("stream", [
    Field("dim", Int(min=1), None, aliases=("labelDim",), doc="values per sample (one-hot dimension for labels)"),
    Field("format", Enum(("dense", "sparse")), "dense"),
    Field("alias", String(), None, doc="the stream's name in the data file"),
    Field("definesMBSize", Bool(), False),
    # HTK features and MLF labels
    Field("scpFile", Path(), None),
    Field("contextWindow", List(Int(min=0)), None, doc="n or left:right (default 1)"),
    Field("prefixPathInSCP", String(), None),
    Field("mlfFile", Path(), None),
    Field("mlfFileList", Path(), None),
    Field("labelMappingFile", Path(), None),
    Field("phoneBoundaries", Bool(), False),
    Field("labelType", String(), None),
    Field("type", String(), None, doc="legacy per-stream type (e.g. \"real\", \"category\")"),
    Field("transforms", AnyValue(), None, doc="image transforms"),
], doc="one input stream of a reader")

# Image reader keys (netlang/readers/transforms.py): the records of a stream's `transforms = ( … )`,
# and the same keys directly in a legacy ImageReader features block. No defaults here: the reader
# tells "not given" from a value, and applies CNTK's defaults itself.
_IMAGE_TRANSFORM_FIELDS = lambda: [  # noqa: E731  (a fresh list per schema: Fields are not shared)
    Field("cropType", Enum(("Center", "RandomSide", "RandomArea", "MultiView10"), aliases={"Random": "RandomSide"}),
          None),
    Field("sideRatio", List(Float(min=0, max=1)), None, aliases=("cropRatio",), doc="r or min:max"),
    Field("areaRatio", List(Float(min=0, max=1)), None, doc="r or min:max"),
    Field("aspectRatio", List(Float(min=0, max=1)), None, doc="r or min:max (width/height or height/width)"),
    Field("jitterType", Enum(("None", "UniRatio", "UniLength", "UniArea")), None),
    Field("hflip", Bool(), None, doc="random horizontal flip (default: on for random crops)"),
    Field("width", Int(min=1), None),
    Field("height", Int(min=1), None),
    Field("channels", Int(min=1), None),
    Field("interpolations", List(Enum(("nearest", "linear", "cubic", "lanczos"))), None,
          doc="one, or several separated by ':' chosen at random"),
    Field("scaleMode", Enum(("fill", "crop", "pad")), None),
    Field("padValue", Float(min=-1), None, doc="-1 repeats the border"),
    Field("meanFile", Path(), None, doc="OpenCV XML mean image"),
    Field("brightnessRadius", Float(min=0, max=1), None),
    Field("contrastRadius", Float(min=0, max=1), None),
    Field("saturationRadius", Float(min=0, max=1), None),
    Field("intensityFile", Path(), None, doc="OpenCV XML EigVal/EigVec for PCA lighting"),
    Field("intensityStdDev", Float(min=0), None),
]

TRANSFORM_SCHEMA = Schema("transform", [
    Field("type", Enum(("Crop", "Scale", "Mean", "Color", "Intensity", "Transpose")), REQUIRED),
    *_IMAGE_TRANSFORM_FIELDS(),
], doc="one image transform")

STREAM_SCHEMA.replace(Field("transforms", BlockList(TRANSFORM_SCHEMA), None, doc="image transforms, in order"))
STREAM_SCHEMA.add(*_IMAGE_TRANSFORM_FIELDS())

DESERIALIZER_TYPES = ("CNTKTextFormatDeserializer", "ImageDeserializer", "Base64ImageDeserializer",
                      "HTKFeatureDeserializer", "HTKMLFDeserializer", "CNTKBinaryFormatDeserializer")

# Keys a CTF reader and a CTF deserializer share.
_DATA_FILE_FIELDS = lambda: [  # noqa: E731  (a fresh list per schema: Fields are not shared)
    Field("file", Path(), None),
    Field("skipSequenceIds", Bool(), False),
    Field("maxErrors", Int(min=0), 0),
    Field("traceLevel", Int(min=0), 1, inherit=True),
    Field("chunkSizeInBytes", Int(min=1), 33554432),
    Field("keepDataInMemory", Bool(), False),
    Field("cacheIndex", Bool(), False),
    Field("precision", Enum(("float", "double")), None),
    Field("input", RecordOf(STREAM_SCHEMA), None, doc="the streams: name = { dim ; format ; alias }"),
]

DESERIALIZER_SCHEMA = Schema("deserializer", [
    Field("type", Enum(DESERIALIZER_TYPES), REQUIRED),
    Field("module", String(), None),
    *_DATA_FILE_FIELDS(),
], doc="one deserializer of a composite reader")

READER_SCHEMA = Schema("reader", [
    Field("readerType", String(), None, doc="CNTKTextFormatReader, ImageReader, HTKMLFReader, ..."),
    *_DATA_FILE_FIELDS(),
    Field("deserializers", BlockList(DESERIALIZER_SCHEMA), None),
    Field("randomize", Randomize(), True),
    Field("randomizationWindow", Int(min=1), None, doc="in chunks (CTF: 128), or samples when sample-based"),
    Field("sampleBasedRandomizationWindow", Bool(), False),
    Field("randomizationSeed", Int(min=0), 0),
    Field("frameMode", Bool(), False),
    Field("truncated", Bool(), False),
    Field("truncationLength", Int(min=0), 0),
    Field("epochSize", Int(min=0), None),
    Field("multiThreadedDeserialization", Bool(), False),
    Field("verbosity", Int(min=0, max=2), 0),
    Field("useNumericSequenceKeys", Bool(), False),
    Field("hashSequenceKeys", Bool(), False),
    # legacy HTKMLFReader
    Field("readMethod", Enum(("blockRandomize", "rollingWindow")), None),
    Field("pageFilePath", Path(), None),
    Field("miniBatchMode", Enum(("partial", "full")), None),
    Field("nbruttsineachrecurrentiter", Int(min=1), 1),
], extra_blocks=STREAM_SCHEMA, doc="a data reader (legacy per-stream blocks are accepted as streams)")


def _check_reader_truncation(reader: View) -> None:
    if reader.frameMode and reader.truncated:
        raise reader.error("truncated", "frameMode and truncated cannot both be true")




def _legacy_htk_reads_frames(reader: View) -> None:
    """CNTK's HTKMLFReader reads frames (frameMode = true) unless told otherwise or truncated."""
    legacy_htk = str(reader.readerType or "").lower() == "htkmlfreader"
    if legacy_htk and not reader.given("frameMode") and not reader.truncated:
        reader.set_derived("frameMode", True, kind="default")


READER_SCHEMA.checks += [_check_reader_truncation, _legacy_htk_reads_frames]

# ---- actions and the top level (reference §3.8, §5.1, §5.2, §5.6) -------------------------------

FORMAT_SCHEMA = Schema("format", [
    Field("type", Enum(("real", "category")), "real"),
    Field("labelMappingFile", Path(), None),
    Field("transpose", Bool(), True),
    Field("prologue", String(), ""),
    Field("epilogue", String(), ""),
    Field("sequenceSeparator", String(), ""),
    Field("sequencePrologue", String(), ""),
    Field("sequenceEpilogue", String(), ""),
    Field("elementSeparator", String(), " "),
    Field("sampleSeparator", String(), "\n"),
    Field("precisionFormat", String(), ""),
], doc="text formatting of the write action's output")

ACTIONS = ("train", "adapt", "test", "eval", "testunroll", "cv", "write", "edit", "dumpnode", "convertdbn",
           "createLabelMap", "writeWordAndClass", "plot", "SVD", "bnstat", "trainEncoderDecoder",
           "testEncoderDecoder", "trainBidirectionEncoderDecoder", "beamSearch", "devtest")

_OLD_BUILDER_HINT = "write the network in BrainScript: network = { ... } (alias BrainScriptNetworkBuilder)"

# Settings that live at the top level and may be overridden in an action block.
_SHARED_FIELDS = lambda: [  # noqa: E731
    Field("modelPath", Path(), None, inherit=True, doc="model file; epoch files are <modelPath>.<epoch>"),
    Field("deviceId", Device(), "auto", inherit=True, doc="-1 or cpu, auto, or a GPU index"),
    Field("precision", Enum(("float", "double")), "float", aliases=("type",), inherit=True),
    Field("traceLevel", Int(min=0), 0, inherit=True),
    Field("makeMode", Bool(), True, inherit=True, doc="resume from existing epoch files, skip finished work"),
]

ACTION_SCHEMA = Schema("action", [
    Field("action", Enum(ACTIONS, {"trainRNN": "train"}), "train"),
    Field("network", Network(), None, aliases=("BrainScriptNetworkBuilder", "ExperimentalNetworkBuilder"),
          inherit=True),
    Field("SimpleNetworkBuilder", Unsupported(_OLD_BUILDER_HINT), None),
    Field("NDLNetworkBuilder", Unsupported(_OLD_BUILDER_HINT), None),
    Field("SGD", Block(SGD_SCHEMA), None, aliases=("optimizer",), inherit=True),
    Field("reader", Block(READER_SCHEMA), None, inherit=True),
    Field("cvReader", Block(READER_SCHEMA), None, inherit=True),
    *_SHARED_FIELDS(),
    Field("minibatchSize", Scheduled(integer=True, min=1), None, inherit=True,
          doc="test/eval/cv: 40960, write: 2048 (train: SGD.minibatchSize)"),
    Field("epochSize", Int(min=0), None, inherit=True, doc="samples to process; 0 = all"),
    Field("numMBsToShowResult", Int(min=0), None, inherit=True, doc="test/eval/cv: 100"),
    Field("firstMBsToShowResult", Int(min=0), None, inherit=True),
    Field("maxSamplesInRAM", Int(min=1), None),
    Field("numSubminibatches", Int(min=1), None),
    Field("distributedMBReading", Bool(), None),
    Field("evalNodeNames", NameList(), None, doc="nodes to evaluate (default: the evaluation nodes)"),
    Field("outputNodeNames", NameList(), None, doc="nodes to write (default: the output nodes)"),
    Field("outputPath", Path(), None, doc="write: one text file per node, <outputPath>.<node>"),
    Field("format", Block(FORMAT_SCHEMA), None),
    Field("writer", AnyValue(), None),
    Field("crossValidationInterval", List(Int(min=0)), None, doc="cv: start:step:end epochs"),
    Field("sleepTimeBetweenRuns", Int(min=0), 0),
    Field("outputModelPath", Path(), None, doc="edit, SVD"),
    Field("editPath", Path(), None),
    Field("ndlMacros", Path(), None),
    Field("nodeName", String(), None, doc="dumpnode"),
    Field("nodeNameRegex", String(), None),
    Field("outputFile", Path(), None),
    Field("printValues", Bool(), True),
    Field("printMetadata", Bool(), True),
    Field("outputDotFile", Path(), None, doc="plot"),
    Field("RenderCmd", String(), None),
    Field("newModelPath", Path(), None, doc="bnstat"),
    Field("itersPerNode", Int(min=1), 30),
    Field("enableDistributedMBReading", Bool(), False),
    Field("origModelFileName", Path(), None, doc="adapt"),
    Field("refNodeName", String(), None),
    Field("SVDConfig", Path(), None),
    Field("dbnModelPath", Path(), None),
    Field("section", String(), None),
    Field("inputFile", Path(), None, doc="writeWordAndClass"),
    Field("outputVocabFile", Path(), None),
    Field("outputWord2Cls", Path(), None),
    Field("outputCls2Index", Path(), None),
    Field("vocabSize", Int(min=1), None),
    Field("nbrClass", Int(min=1), None),
    Field("cutoff", Int(min=0), 2),
], closed=False, doc="one command block: what to run and with which settings")

# Defaults that depend on the action (reference §5.6).
ACTION_DEFAULTS = {
    "test": {"minibatchSize": 40960, "epochSize": 0, "numMBsToShowResult": 100},
    "eval": {"minibatchSize": 40960, "epochSize": 0, "numMBsToShowResult": 100},
    "cv": {"minibatchSize": 40960, "epochSize": 0, "numMBsToShowResult": 100},
    "write": {"minibatchSize": 2048, "epochSize": 0},
}

EVALUATING_ACTIONS = ("test", "eval", "cv", "write", "bnstat")


def _apply_action_defaults(view: View) -> None:
    for key, value in ACTION_DEFAULTS.get(view.action, {}).items():
        if not view.given(key):
            view.set_derived(key, value, kind="default")


def _check_action_needs(view: View) -> None:
    what = f"{view.path} (action {view.action})"
    if view.action == "train":
        if view.network is None:
            raise view.block_error(f"{what} has no network", hint="add network = { ... } to the block")
        if view.SGD is None:
            raise view.block_error(f"{what} has no SGD block", hint="add SGD = { maxEpochs = ... ; "
                                                                    "learningRatesPerMB = ... }")
    if view.action in ("train",) + EVALUATING_ACTIONS and view.reader is None:
        raise view.block_error(f"{what} has no reader", hint="add reader = { ... } to the block")
    if view.action in EVALUATING_ACTIONS and view.network is None and view.modelPath is None:
        raise view.block_error(f"{what} has no model: give modelPath or a network")


class ActionView(View):
    """A validated command block, e.g. `train = { action = "train" ; SGD = {...} ; reader = {...} }`."""

    @property
    def name(self) -> str:
        return self.path

    def network_expr(self) -> NetworkRef | None:
        """The unevaluated network member (record + name) for the IR builder, or None."""
        return self.network


ACTION_SCHEMA.checks += [_apply_action_defaults, _check_action_needs]
ACTION_SCHEMA.view_class = ActionView

TOP_SCHEMA = Schema("top level", [
    Field("command", NameList(), "train", doc="the blocks to run, in order (train:test)"),
    *_SHARED_FIELDS(),
    Field("excludedDevices", List(Int(min=0)), None),
    Field("numCPUThreads", Int(), 0, doc="0 = library default; negative = all cores minus n"),
    Field("parallelTrain", Bool(), False, doc="data-parallel training over MPI"),
    Field("randomSeed", Int(min=0), 0, doc="seed for parameter initialisation and dropout"),
    Field("forceDeterministicAlgorithms", Bool(), False),
    Field("keepCheckPointFiles", Bool(), False),
    Field("stderr", Path(), None, doc="log file prefix: <stderr>_<commands>.log"),
    Field("outputDir", Path(), None),
    Field("rootDir", Path(), None),
    Field("dataDir", Path(), None),
    Field("configDir", Path(), None),
    Field("traceGPUMemoryAllocations", Bool(), False),
    Field("hyperCompressMemory", Bool(), False),
    Field("DoneFile", Path(), None),
    Field("progressTracing", Bool(), False),
    Field("currentDirectory", Path(), None),
], closed=False, doc="settings for the whole run")


def _inheritable_keys(*schemas: Schema) -> set:
    return {key for schema in schemas for f in schema.fields if f.inherit for key in f.keys()}


# Keys an enclosing block may hold because the blocks inside inherit them (CNTK's parent lookup).
TOP_SCHEMA.also_known = lambda: _inheritable_keys(ACTION_SCHEMA, SGD_SCHEMA, READER_SCHEMA)
ACTION_SCHEMA.also_known = lambda: _inheritable_keys(SGD_SCHEMA, READER_SCHEMA)
TOP_SCHEMA.command_block_keys = lambda: {key for f in ACTION_SCHEMA.fields for key in f.keys()}

