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

from netlang.compiler.lang import values
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
from netlang.compiler.lang.simple_network import ACTIVATIONS, CRITERIA, EVALUATIONS, SimpleNetworkRef, layer_sizes
from netlang.compiler.lang.views import Block, BlockList, RecordOf, View, own_names, validate

INFINITY = math.inf

# ---- SGD (reference §5.3, §5.4) -----------------------------------------------------------------

AUTO_ADJUST_SCHEMA = Schema("AutoAdjust", [
    Field("autoAdjustLR", Enum(("none", "searchBeforeEpoch", "adjustAfterEpoch"),
                               {"before": "searchBeforeEpoch", "beforeEpoch": "searchBeforeEpoch",
                                "after": "adjustAfterEpoch", "afterEpoch": "adjustAfterEpoch",
                                "false": "none"}), "none", inherit=True,
          doc="automatic learning-rate control: search before each epoch or adjust after it"),
    Field("reduceLearnRateIfImproveLessThan", Float(), 0.0, inherit=True,
          doc="adjustAfterEpoch: reduce the rate when the criterion improves by less than this"),
    Field("continueReduce", Bool(), False, inherit=True, doc="adjustAfterEpoch: keep reducing in later epochs once reduced"),
    Field("learnRateAdjustInterval", Int(min=1), 1, inherit=True, doc="adjustAfterEpoch: epochs between adjustments"),
    Field("learnRateDecreaseFactor", Float(min=0, max=1), 0.618, inherit=True, doc="the factor a reduced rate is multiplied by"),
    Field("increaseLearnRateIfImproveMoreThan", Float(), INFINITY, inherit=True,
          doc="adjustAfterEpoch: increase the rate when the criterion improves by more than this"),
    Field("learnRateIncreaseFactor", Float(min=1), 1.382, inherit=True, doc="the factor an increased rate is multiplied by"),
    Field("loadBestModel", Bool(), True, inherit=True, doc="go back to the best epoch's model when an epoch did worse"),
    Field("UseCVSetControlLRIfCVExists", Bool(), True, inherit=True, doc="judge epochs on the cvReader's data when there is one"),
    Field("UseEvalCriterionControlLR", Bool(), False, inherit=True,
          doc="judge epochs on the evaluation criterion instead of the training criterion"),
    Field("numPrevLearnRates", Int(min=1), 5, inherit=True,
          doc="searchBeforeEpoch: previous rates to consider (no effect in netlang)"),
    Field("numBestSearchEpoch", Int(min=1), 1, inherit=True,
          doc="searchBeforeEpoch: epochs the best rate is kept (no effect in netlang)"),
    Field("numSamples4Search", Int(min=1), None, inherit=True, doc="default 500 x minibatch size"),
    Field("numMiniBatch4LRSearch", Int(min=1), None, inherit=True, doc="legacy, in minibatches"),
    Field("autoAdjustMinibatch", Bool(), False, inherit=True, doc="CNTK: tune the minibatch size (no effect in netlang)"),
    Field("minibatchSizeTuningFrequency", Int(min=1), 1, inherit=True,
          doc="CNTK: epochs between minibatch-size tunings (no effect in netlang)"),
    Field("minibatchSizeTuningMax", Int(min=1), 1048576, inherit=True,
          doc="CNTK: largest minibatch size to try (no effect in netlang)"),
    Field("minibatchSearchCriterionErrorMargin", Int(min=0), 1, inherit=True,
          doc="CNTK: criterion margin of the minibatch-size search (no effect in netlang)"),
], doc="automatic learning-rate and minibatch-size adjustment (CNTK reads these keys through the parent "
       "chain, so they may also stand in the SGD block itself)")

DATA_PARALLEL_SGD_SCHEMA = Schema("DataParallelSGD", [
    Field("gradientBits", Scheduled(integer=True, min=1, max=64), None,
          doc="bits per gradient value: 1 = 1-bit SGD; default 32 (float) / 64 (double) = no quantisation"),
    Field("useZeroThresholdFor1BitQuantization", Bool(), True,
          doc="1-bit SGD: quantise around zero (else around each column's mean)"),
    Field("useBufferedAsyncGradientAggregation", Bool(), False,
          doc="CNTK: overlap the all-reduce with the next minibatch (no effect in netlang)"),
    Field("quantizeAlongLongerAxis", Bool(), False,
          doc="netlang: quantise each weight matrix along its longer axis (fewer bytes than CNTK's columns)"),
])

MODEL_AVERAGING_SGD_SCHEMA = Schema("ModelAveragingSGD", [
    Field("blockSize", Int(min=1), None, doc="samples between syncs over all workers (default 40000 x workers)"),
    Field("blockSizePerWorker", Int(min=1), None, doc="samples each worker processes between syncs"),
    Field("syncPeriod", Int(min=1), None, doc="legacy: samples per worker"),
    Field("syncFrequencyInFrames", Int(min=1), None, doc="legacy: samples per worker"),
])

BLOCK_MOMENTUM_SGD_SCHEMA = Schema("BlockMomentumSGD", [
    Field("blockSize", Int(min=1), None, doc="samples between syncs over all workers (default 120000 x workers)"),
    Field("blockSizePerWorker", Int(min=1), None, doc="samples each worker processes between syncs"),
    Field("syncPeriod", Int(min=1), None, doc="legacy: samples per worker"),
    Field("resetSGDMomentum", Bool(), True, doc="BMUF: reset the learner's momentum after every sync"),
    Field("useNesterovMomentum", Bool(), True, doc="BMUF: Nesterov-style block momentum"),
    Field("blockLearningRate", Float(min=0), 1.0, doc="BMUF: learning rate of the block update"),
    Field("blockMomentumAsTimeConstant", Float(min=0), None, doc="default: momentum 1 - 1/workers"),
    Field("blockMomentumPerSync", Float(min=0, max=1, max_exclusive=True), None, doc="BMUF: block momentum per sync"),
])

ADJUST_LR_AT_BEGINNING_SCHEMA = Schema("AdjustLearningRateAtBeginning", [
    Field("adjustCoefficient", Float(min=0), 0.1, doc="ASGD warm-up: coefficient (no effect in netlang)"),
    Field("adjustNBMiniBatch", Int(min=1), 256, doc="ASGD warm-up: minibatches (no effect in netlang)"),
])

DATA_PARALLEL_ASGD_SCHEMA = Schema("DataParallelASGD", [
    Field("syncPeriodPerWorker", Int(min=1), 256, aliases=("syncPeriod",),
          doc="ASGD: samples per worker between syncs (no effect in netlang)"),
    Field("usePipeline", Bool(), False, doc="ASGD: pipeline the communication (no effect in netlang)"),
    Field("AdjustLearningRateAtBeginning", Block(ADJUST_LR_AT_BEGINNING_SCHEMA), None,
          doc="ASGD: warm-up of the learning rate (no effect in netlang)"),
])

PARALLEL_TRAIN_SCHEMA = Schema("ParallelTrain", [
    Field("parallelizationMethod", Enum(("none", "DataParallelSGD", "ModelAveragingSGD", "BlockMomentumSGD",
                                         "DataParallelASGD")), "none",
          doc="how workers combine: DataParallelSGD, ModelAveragingSGD, BlockMomentumSGD (DataParallelASGD is refused)"),
    Field("parallelizationStartEpoch", Int(min=1), 1,
          doc="the first epoch trained in parallel (earlier epochs train on one worker's data alone)"),
    Field("distributedMBReading", Bool(), None, doc="default: true with composite/new-style readers"),
    Field("syncPerfStats", Int(min=0), 0,
          doc="CNTK: synchronise performance statistics every n minibatches (no effect in netlang)"),
    Field("DataParallelSGD", Block(DATA_PARALLEL_SGD_SCHEMA), None, doc="settings of DataParallelSGD"),
    Field("ModelAveragingSGD", Block(MODEL_AVERAGING_SGD_SCHEMA), None, doc="settings of ModelAveragingSGD"),
    Field("BlockMomentumSGD", Block(BLOCK_MOMENTUM_SGD_SCHEMA), None, doc="settings of BlockMomentumSGD"),
    Field("DataParallelASGD", Block(DATA_PARALLEL_ASGD_SCHEMA), None,
          doc="settings of DataParallelASGD (CNTK's Multiverso parameter server, not supported)"),
], doc="data-parallel training over MPI (needs parallelTrain = true at the top level)")

GRAD_UPDATE_TYPES = ("none", "adagrad", "rmsProp", "fsAdagrad", "adam", "adadelta")

SGD_SCHEMA = Schema("SGD", [
    # process
    Field("modelPath", Path(), None, inherit=True, doc="model file; epoch files are <modelPath>.<epoch>"),
    Field("trainCriterionNodeName", String(), None, doc="default: the network's criterion"),
    Field("evalCriterionNodeName", String(), None, doc="default: the network's evaluation nodes"),
    Field("maxEpochs", Int(min=1), REQUIRED, doc="epochs to train"),
    Field("epochSize", Int(min=0), 0, inherit=True, doc="samples per epoch; 0 = one sweep over the data"),
    Field("minibatchSize", Scheduled(integer=True, min=1), 256, inherit=True,
          doc="samples per minibatch (a schedule); sequences are packed up to this many samples"),
    Field("truncated", Bool(), False,
          doc="truncated back-propagation through time (reader: with truncationLength; SGD: CNTK's older spelling)"),
    Field("maxSamplesInRAM", Int(min=1), None, doc="CNTK: split minibatches larger than this (no effect in netlang)"),
    Field("numSubminibatches", Int(min=1), 1,
          doc="CNTK: split each minibatch into this many parts (no effect in netlang)"),
    Field("keepCheckPointFiles", Bool(), False, inherit=True,
          doc="keep the checkpoint of every epoch, not only the newest"),
    Field("maxTempMemSizeInSamplesForCNN", Int(min=0), 0,
          doc="CNTK: temporary memory for convolutions, in samples (no effect in netlang)"),
    Field("saveBestModelPerCriterion", Bool(), False,
          doc="CNTK: keep the best model per criterion (no effect in netlang)"),
    Field("disableRegInBatchNormalization", Bool(), False,
          doc="exclude batch-normalisation parameters from L1/L2 regularisation"),
    Field("batchNormalizationTimeConstant", Float(min=0), 0.0,
          doc="CNTK: override the normalisation time constant of every batch-norm node (no effect in netlang)"),
    Field("batchNormalizationBlendTimeConstant", Float(min=0), 0.0,
          doc="CNTK: override the blend time constant of every batch-norm node (no effect in netlang)"),
    Field("useAllDataForPreComputedNode", Bool(), True,
          doc="CNTK: precompute Mean/InvStdDev over all data (no effect in netlang)"),
    Field("packThresholdSizeInKB", Int(min=0), 32,
          doc="CNTK: pack gradients smaller than this for the all-reduce (no effect in netlang)"),
    Field("tensorBoardLogDir", Path(), None,
          doc="write TensorBoard event files here (needs tensorboardX: pip install 'netlang[tensorboard]')"),
    Field("tensorBoardNumMBsToLogResult", Int(min=1), None, doc="default: numMBsToShowResult"),
    Field("traceLevel", Int(min=0), 0, inherit=True, doc="how much to log (0 = least)"),
    Field("numMBsToShowResult", Int(min=0), 10, inherit=True,
          doc="report progress every n minibatches (0 = only per epoch)"),
    Field("firstMBsToShowResult", Int(min=0), 0, inherit=True, doc="also report each of the first n minibatches"),
    Field("numMBsToCUDAProfile", Int(min=0), 0,
          doc="CNTK: profile the first n minibatches with CUDA's profiler (no effect in netlang)"),
    Field("gradientCheck", Bool(), False, doc="compare gradients with finite differences (needs double)"),
    Field("sigFigs", Int(min=1), 6, doc="gradientCheck: significant figures to compare (no effect in netlang)"),
    Field("unitTest", Bool(), False, doc="CNTK: internal test switch (no effect in netlang)"),
    # learning rate
    Field("learningRatesPerSample", Scheduled(min=0), None,
          doc="learning rate per sample (a schedule, e.g. 0.01*2:0.005)"),
    Field("learningRatesPerMB", Scheduled(min=0), None, doc="divided by the minibatch size"),
    Field("minLearningRatePerSample", Float(min=0), 1e-9,
          doc="CNTK: stop training when the rate falls below this (no effect in netlang)"),
    # momentum (at most one; momentumPerMB = 0.9 when none is given)
    Field("momentumPerMB", Scheduled(min=0, max=1, max_exclusive=True), None,
          doc="momentum per minibatch (a schedule); 0.9 when no momentum key is given"),
    Field("momentumPerSample", Scheduled(min=0, max=1, max_exclusive=True), None,
          doc="momentum per sample (a schedule)"),
    Field("momentumAsTimeConstant", Scheduled(min=0), None, doc="in samples; per-sample momentum exp(-1/t)"),
    Field("useNAG", Bool(), False, doc="Nesterov's accelerated gradient"),
    # regularisation and gradient
    Field("L2RegWeight", Float(min=0), 0.0, doc="L2 regularisation weight, per sample"),
    Field("L1RegWeight", Float(min=0), 0.0, doc="L1 regularisation weight, per sample"),
    Field("gradientClippingWithTruncation", Bool(), True,
          doc="clip each gradient element (true) or scale the whole gradient's norm (false)"),
    Field("clippingThresholdPerSample", Float(min=0), INFINITY, doc="gradient clipping threshold, per sample"),
    Field("gaussianNoiseInjectStd", Float(min=0), 0.0,
          doc="standard deviation of Gaussian noise added to the weights while training"),
    Field("dropoutRate", Scheduled(min=0, max=1, max_exclusive=True), 0.0,
          doc="rate of every Dropout node (a schedule)"),
    # update rule
    Field("gradUpdateType", Enum(GRAD_UPDATE_TYPES, {"": "none", "normal": "none", "simple": "none"}), "none",
          doc="update rule: none (SGD with momentum), adagrad, rmsProp, fsAdagrad, adam, adadelta"),
    Field("useAdagrad", Bool(), False, doc="legacy: same as gradUpdateType = \"adagrad\""),
    Field("normWithAveMultiplier", Bool(), True, doc="AdaGrad/RmsProp: normalise with the average multiplier"),
    Field("rms_wgt_inc", Float(min=0), 1.2, doc="RmsProp: factor a step size grows by"),
    Field("rms_wgt_dec", Float(min=0), 0.75, doc="RmsProp: factor a step size shrinks by"),
    Field("rms_wgt_max", Float(min=0), 10.0, doc="RmsProp: largest step-size multiplier"),
    Field("rms_wgt_min", Float(min=0), 0.1, doc="RmsProp: smallest step-size multiplier"),
    Field("rms_gamma", Float(min=0, max=1), 0.99, doc="RmsProp: decay of the mean square"),
    Field("varianceTimeConstant", Float(min=0), 720000.0, doc="FSAdaGrad, in samples"),
    Field("fsAdagradTargetAvDenom", Float(min=0), 1.0, doc="FSAdaGrad: target average denominator"),
    Field("adamBeta1", Float(min=0, max=1, max_exclusive=True), None,
          doc="Adam's first-moment decay; not given: the momentum per minibatch (0.9 by default)",
          unset_text="(the momentum per minibatch)"),
    Field("adamBeta2", Float(min=0, max=1, max_exclusive=True), 0.999, doc="Adam's second-moment decay"),
    Field("adamEpsilon", Float(min=0), 1e-8, doc="Adam's epsilon"),
    Field("rho", Float(min=0, max=1), 0.95, doc="AdaDelta decay"),
    Field("epsilon", Float(min=0), 1e-8, doc="AdaDelta epsilon"),
    # adaptation and sequence training
    Field("adaptationRegType", Enum(("none", "kl")), "none",
          doc="CNTK: regularisation toward the original model when adapting (no effect in netlang)"),
    Field("adaptationRegWeight", Float(min=0, max=1), 0.0,
          doc="CNTK: weight of the adaptation regularisation (no effect in netlang)"),
    Field("hSmoothingWeight", Float(), 0.95, doc="CNTK sequence training: smoothing weight (no effect in netlang)"),
    Field("frameDropThresh", Float(), 1e-10, doc="CNTK sequence training: frame-drop threshold (no effect in netlang)"),
    Field("doReferenceAlign", Bool(), False,
          doc="CNTK sequence training: align to the reference (no effect in netlang)"),
    Field("seqGammarUsesMBR", Bool(), False, doc="CNTK sequence training: minimum Bayes risk (no effect in netlang)"),
    Field("seqGammarAMF", Float(), 14.0, doc="CNTK sequence training: acoustic model factor (no effect in netlang)"),
    Field("seqGammarLMF", Float(), 14.0, doc="CNTK sequence training: language model factor (no effect in netlang)"),
    Field("seqGammarBMMIFactor", Float(), 0.0, doc="CNTK sequence training: boosted MMI factor (no effect in netlang)"),
    Field("seqGammarWordPen", Float(), 0.0, doc="CNTK sequence training: word penalty (no effect in netlang)"),
    # sub-blocks
    Field("AutoAdjust", Block(AUTO_ADJUST_SCHEMA), None, doc="automatic learning-rate control"),
    Field("ParallelTrain", Block(PARALLEL_TRAIN_SCHEMA), None,
          doc="data-parallel training (with parallelTrain = true at the top level)"),
], doc="the learner: schedules, momentum, regularisation, update rule")


def _auto_adjust_from_sgd_keys(sgd: View) -> None:
    """CNTK reads the AutoAdjust keys through the parent chain: written in the SGD block itself (as old
    configs do: `autoAdjustLR = "adjustAfterEpoch"`, `loadBestModel = true`), they configure AutoAdjust."""
    if sgd.AutoAdjust is not None or sgd.record is None:
        return
    keys = {k.lower() for f in AUTO_ADJUST_SCHEMA.fields for k in f.keys()}
    if not any(name.lower() in keys for name in own_names(sgd.record)):
        return
    path = f"{sgd.path}.AutoAdjust" if sgd.path else "AutoAdjust"
    inner = values.Record(sgd.record, path, sgd.span)   # empty: every key comes from SGD or above
    sgd.set_derived("AutoAdjust", validate(inner, AUTO_ADJUST_SCHEMA, path, span=sgd.span, context=sgd.context))


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


SGD_SCHEMA.checks += [_auto_adjust_from_sgd_keys, _check_learning_rate, _check_momentum, _check_legacy_adagrad]
SGD_SCHEMA.also_known = lambda: {k for f in AUTO_ADJUST_SCHEMA.fields for k in f.keys()}


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
    Field("format", Enum(("dense", "sparse")), "dense", doc="dense values, or sparse index:value pairs"),
    Field("alias", String(), None, doc="the stream's name in the data file"),
    Field("definesMBSize", Bool(), False, doc="this stream's samples count for the minibatch size"),
    # HTK features and MLF labels
    Field("scpFile", Path(), None, doc="HTK features: the SCP file listing the feature files (no effect in netlang)"),
    Field("contextWindow", List(Int(min=0)), None, doc="n or left:right (default 1)"),
    Field("prefixPathInSCP", String(), None,
          doc="HTK features: prefix of the paths in the SCP file (no effect in netlang)"),
    Field("mlfFile", Path(), None, doc="HTK labels: the MLF file (no effect in netlang)"),
    Field("mlfFileList", Path(), None, doc="HTK labels: a file listing MLF files (no effect in netlang)"),
    Field("labelMappingFile", Path(), None, doc="one label per line: the labels' names, in index order"),
    Field("phoneBoundaries", Bool(), False, doc="HTK labels: mark phone boundaries (no effect in netlang)"),
    Field("labelType", String(), None, doc="legacy: the type of a label stream (no effect in netlang)"),
    Field("type", String(), None, doc="legacy per-stream type (e.g. \"real\", \"category\")"),
    Field("transforms", AnyValue(), None, doc="image transforms"),
    # LMSequenceReader / LUSequenceReader streams (accepted; those readers are not available yet)
    Field("sectionType", String(), None, doc="LMSequenceReader: data or labels"),
    Field("beginSequence", String(), None, doc="LMSequenceReader: the sentence-start word"),
    Field("endSequence", String(), None, doc="LMSequenceReader: the sentence-end word"),
    Field("mapping", AnyValue(), None, doc="LMSequenceReader: the label-mapping section"),
    Field("category", AnyValue(), None, doc="LMSequenceReader: the category section"),
    Field("elementSize", Int(min=1), None, doc="LMSequenceReader"),
    Field("wordContext", List(Int()), None, doc="LUSequenceReader: the context window"),
], doc="one input stream of a reader")

# Image reader keys (netlang/readers/transforms.py): the records of a stream's `transforms = ( … )`,
# and the same keys directly in a legacy ImageReader features block. No defaults here: the reader
# tells "not given" from a value, and applies CNTK's defaults itself.
_IMAGE_TRANSFORM_FIELDS = lambda: [  # noqa: E731  (a fresh list per schema: Fields are not shared)
    Field("cropType", Enum(("Center", "RandomSide", "RandomArea", "MultiView10"), aliases={"Random": "RandomSide"}),
          None,
          doc="Center, RandomSide, RandomArea or MultiView10"),
    Field("sideRatio", List(Float(min=0, max=1)), None, aliases=("cropRatio",), doc="r or min:max"),
    Field("areaRatio", List(Float(min=0, max=1)), None, doc="r or min:max"),
    Field("aspectRatio", List(Float(min=0)), None, doc="r or min:max of width/height, e.g. 0.75:1.3333"),
    Field("jitterType", Enum(("None", "UniRatio", "UniLength", "UniArea")), None,
          doc="aspect-ratio jitter: None, UniRatio (UniLength, UniArea)"),
    Field("hflip", Bool(), None, doc="random horizontal flip (default: on for random crops)"),
    Field("width", Int(min=1), None, doc="image width in pixels"),
    Field("height", Int(min=1), None, doc="image height in pixels"),
    Field("channels", Int(min=1), None, doc="image channels"),
    Field("interpolations", List(Enum(("nearest", "linear", "cubic", "lanczos"))), None,
          doc="one, or several separated by ':' chosen at random"),
    Field("scaleMode", Enum(("fill", "crop", "pad")), None,
          doc="how an image is scaled to width x height: fill, crop or pad"),
    Field("padValue", Float(min=-1), None, doc="-1 repeats the border"),
    Field("meanFile", Path(), None, doc="OpenCV XML mean image"),
    Field("brightnessRadius", Float(min=0, max=1), None, doc="random brightness change, as a fraction"),
    Field("contrastRadius", Float(min=0, max=1), None, doc="random contrast change, as a fraction"),
    Field("saturationRadius", Float(min=0, max=1), None, doc="random saturation change, as a fraction"),
    Field("intensityFile", Path(), None, doc="OpenCV XML EigVal/EigVec for PCA lighting"),
    Field("intensityStdDev", Float(min=0), None, doc="standard deviation of the PCA lighting noise"),
]

TRANSFORM_SCHEMA = Schema("transform", [
    Field("type", Enum(("Crop", "Scale", "Mean", "Color", "Intensity", "Transpose")), REQUIRED,
          doc="the transform: Crop, Scale, Mean, Color, Intensity or Transpose"),
    *_IMAGE_TRANSFORM_FIELDS(),
], doc="one image transform")

STREAM_SCHEMA.replace(Field("transforms", BlockList(TRANSFORM_SCHEMA), None, doc="image transforms, in order"))
STREAM_SCHEMA.add(*_IMAGE_TRANSFORM_FIELDS())

DESERIALIZER_TYPES = ("CNTKTextFormatDeserializer", "ImageDeserializer", "Base64ImageDeserializer",
                      "HTKFeatureDeserializer", "HTKMLFDeserializer", "CNTKBinaryFormatDeserializer")

# Keys a CTF reader and a CTF deserializer share.
_DATA_FILE_FIELDS = lambda: [  # noqa: E731  (a fresh list per schema: Fields are not shared)
    Field("file", Path(), None, doc="the data file (CTF) or map file (images), relative to the working directory"),
    Field("skipSequenceIds", Bool(), False, doc="CTF: every line is a sequence of its own (ignore sequence ids)"),
    Field("maxErrors", Int(min=0), 0, doc="CTF: bad lines to skip with a warning before failing"),
    Field("traceLevel", Int(min=0), 1, inherit=True, doc="how much to log (0 = least)"),
    Field("chunkSizeInBytes", Int(min=1), 33554432, doc="CTF: bytes per chunk (the unit of randomisation and reading)"),
    Field("keepDataInMemory", Bool(), False, doc="CTF: keep the whole file in memory (no effect in netlang)"),
    Field("cacheIndex", Bool(), False, doc="CTF: cache the file's index on disk (no effect in netlang)"),
    Field("precision", Enum(("float", "double")), None,
          doc="element type of the data read (default: the action's precision)"),
    Field("input", RecordOf(STREAM_SCHEMA), None, doc="the streams: name = { dim ; format ; alias }"),
]

DESERIALIZER_SCHEMA = Schema("deserializer", [
    Field("type", Enum(DESERIALIZER_TYPES), REQUIRED,
          doc="the deserializer: CNTKTextFormatDeserializer, ImageDeserializer, ..."),
    Field("module", String(), None, doc="the reader library of a deserializer (CNTK's DLL name; informational)"),
    *_DATA_FILE_FIELDS(),
], doc="one deserializer of a composite reader")

READER_SCHEMA = Schema("reader", [
    Field("readerType", String(), None, doc="CNTKTextFormatReader, ImageReader, HTKMLFReader, ..."),
    *_DATA_FILE_FIELDS(),
    Field("deserializers", BlockList(DESERIALIZER_SCHEMA), None,
          doc="the deserializers of a composite reader, joined on sequence keys"),
    Field("randomize", Randomize(), True, doc="shuffle the data: true, false, or a window size (HTK: auto, none)"),
    Field("randomizationWindow", Int(min=1), None, doc="in chunks (CTF: 128), or samples when sample-based"),
    Field("sampleBasedRandomizationWindow", Bool(), False, doc="randomizationWindow counts samples, not chunks"),
    Field("randomizationSeed", Int(min=0), 0, doc="seed of the shuffling"),
    Field("frameMode", Bool(), False, inherit=True,
          doc="CNTK: treat every frame as a sample of its own (no effect in netlang); may stand at the top level"),
    Field("truncated", Bool(), False,
          doc="truncated back-propagation through time (reader: with truncationLength; SGD: CNTK's older spelling)"),
    Field("truncationLength", Int(min=0), 0, doc="truncated BPTT: steps per window"),
    Field("epochSize", Int(min=0), None, doc="samples per epoch; 0 = one sweep over the data"),
    Field("multiThreadedDeserialization", Bool(), False,
          doc="CNTK: deserialize chunks on several threads (no effect in netlang)"),
    Field("verbosity", Int(min=0, max=2), 0, doc="reader log detail (0-2)"),
    Field("useNumericSequenceKeys", Bool(), False, doc="CNTK: sequence keys are numbers (no effect in netlang)"),
    Field("hashSequenceKeys", Bool(), False, doc="CNTK: hash string sequence keys (no effect in netlang)"),
    # legacy HTKMLFReader
    Field("readMethod", Enum(("blockRandomize", "rollingWindow")), None, inherit=True,
          doc="legacy HTKMLFReader: how to read the data (no effect in netlang)"),
    Field("pageFilePath", Path(), None, doc="legacy HTKMLFReader: where to page data (no effect in netlang)"),
    Field("miniBatchMode", Enum(("partial", "full")), None, inherit=True,
          doc="legacy HTKMLFReader: full or partial last minibatch (no effect in netlang)"),
    Field("nbruttsineachrecurrentiter", Int(min=1), 1, inherit=True,
          doc="sequences read in parallel (legacy truncated BPTT)"),
    Field("useMersenneTwisterRand", Bool(), False, inherit=True,
          doc="CNTK's choice of random generator for randomization (no effect in netlang: NumPy's)"),
    # LMSequenceReader / LUSequenceReader (accepted; those readers are not supported yet)
    Field("unk", String(), None, doc="LMSequenceReader: the word for out-of-vocabulary words"),
    Field("wordclass", Path(), None, doc="LMSequenceReader: the word-class file"),
    Field("cacheBlockSize", Int(min=1), None, doc="LMSequenceReader: sentences read at a time"),
    Field("dataMultiPass", Bool(), False, doc="LMSequenceReader: read the data more than once per epoch"),
    Field("writerConfig", AnyValue(), None, doc="LMSequenceReader: its writer's settings"),
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
    Field("type", Enum(("real", "category")), "real",
          doc="real: the values; category: the label of the largest value (with labelMappingFile)"),
    Field("labelMappingFile", Path(), None, doc="one label per line: the labels' names, in index order"),
    Field("transpose", Bool(), True,
          doc="write one sample per line (false: one value per line) (no effect in netlang)"),
    Field("prologue", String(), "", doc="text before the output (no effect in netlang)"),
    Field("epilogue", String(), "", doc="text after the output (no effect in netlang)"),
    Field("sequenceSeparator", String(), "", doc="text between sequences (no effect in netlang)"),
    Field("sequencePrologue", String(), "", doc="text before each sequence (no effect in netlang)"),
    Field("sequenceEpilogue", String(), "", doc="text after each sequence (no effect in netlang)"),
    Field("elementSeparator", String(), " ", doc="text between the values of a sample (no effect in netlang)"),
    Field("sampleSeparator", String(), "\n", doc="text between samples (no effect in netlang)"),
    Field("precisionFormat", String(), "", doc="printf format of the values (no effect in netlang)"),
], doc="text formatting of the write action's output")

ACTIONS = ("train", "adapt", "test", "eval", "testunroll", "cv", "write", "edit", "dumpnode", "convertdbn",
           "createLabelMap", "writeWordAndClass", "plot", "SVD", "bnstat", "trainEncoderDecoder",
           "testEncoderDecoder", "trainBidirectionEncoderDecoder", "beamSearch", "devtest")

_OLD_BUILDER_HINT = "write the network in BrainScript: network = { ... } (alias BrainScriptNetworkBuilder)"

# CNTK's SimpleNetworkBuilder (compiler/lang/simple_network.py writes the network out).
SIMPLE_NETWORK_SCHEMA = Schema("SimpleNetworkBuilder", [
    Field("rnnType", Enum(("FFDNN", "RNN", "LSTM", "CLASSLSTM", "NCELSTM", "CLASSRNN", "LOGBILINEAR", "DNNLM",
                           "CONDITIONALLSTM")), "FFDNN", doc="the kind of network; netlang writes out FFDNN"),
    Field("layerSizes", Scheduled(integer=True, min=1), REQUIRED,
          doc="input:hidden…:output dimensions; value*n repeats a value"),
    Field("layerTypes", List(Enum(tuple(ACTIVATIONS), {"ReLU": "RectifiedLinear"})), ["Sigmoid"],
          doc="the hidden layers' nonlinearities, the last one repeating"),
    Field("trainingCriterion", Enum(("CrossEntropyWithSoftmax", "SquareError", "Logistic",
                                     "ClassCrossEntropyWithSoftmax", "SequenceWithSoftmax",
                                     "NoiseContrastiveEstimation")), "CrossEntropyWithSoftmax",
          doc="the criterion node: CrossEntropyWithSoftmax, SquareError or Logistic (the class-based ones: not yet)"),
    Field("evalCriterion", Enum(("ErrorPrediction", "CrossEntropyWithSoftmax", "SquareError", "Logistic",
                                 "ClassCrossEntropyWithSoftmax", "SequenceWithSoftmax", "NoiseContrastiveEstimation"),
                                {"ClassificationError": "ErrorPrediction"}), "ErrorPrediction",
          doc="the evaluation node: ErrorPrediction (ClassificationError), CrossEntropyWithSoftmax, SquareError, Logistic"),
    Field("initValueScale", Float(min=0), 1.0, doc="scale of the random initial weights"),
    Field("uniformInit", Bool(), True, doc="uniform (±0.05·scale) or gaussian (0.2·scale/√fan-in) weights"),
    Field("applyMeanVarNorm", Bool(), False, doc="normalise the features by their mean and standard deviation"),
    Field("needPrior", Bool(), False, doc="add ScaledLogLikelihood = HLast - Log (Mean (labels)) as the output"),
    Field("addDropoutNodes", Bool(), False, doc="Dropout after each hidden layer (rate: SGD dropoutRate)"),
    # keys of the other network kinds, accepted; those kinds are not written out yet
    Field("recurrentLayer", List(Int(min=0)), None, doc="RNN kinds: the recurrent layers (not yet in netlang)"),
    Field("defaultHiddenActivity", Float(), None, doc="RNN kinds: the initial hidden state (not yet in netlang)"),
    Field("vocabSize", Int(min=1), None, doc="class-based kinds: the vocabulary size (not yet in netlang)"),
    Field("nbrClass", Int(min=1), None, doc="class-based kinds: the number of word classes (not yet in netlang)"),
    Field("lookupTableOrder", Int(min=0), None, doc="LSTM kinds: the input's context size (not yet in netlang)"),
], doc="CNTK's SimpleNetworkBuilder: a fixed topology from a few settings")


def _check_simple_network(block: View) -> None:
    if block.rnnType != "FFDNN":
        raise block.error("rnnType", f"SimpleNetworkBuilder with rnnType = {block.rnnType} is not supported by netlang "
                          "yet (only FFDNN)", hint="write the network in BrainScript: BrainScriptNetworkBuilder = { … }")
    for key, supported in (("trainingCriterion", CRITERIA), ("evalCriterion", EVALUATIONS)):
        if block[key] not in supported:
            raise block.error(key, f"{key} = {block[key]} is not supported by netlang yet",
                              hint=f"one of {', '.join(supported)}")
    if len(layer_sizes(block.layerSizes)) < 2:
        raise block.error("layerSizes", "layerSizes needs at least the input and the output dimension",
                          hint="e.g. layerSizes = 363:512:512:132")


SIMPLE_NETWORK_SCHEMA.checks.append(_check_simple_network)

# `precision`: the element type of a run; bf16 and fp16 are mixed precision (runtime/precision.py).
PRECISIONS = ("float", "double", "bf16", "fp16")

# Settings that live at the top level and may be overridden in an action block.
_SHARED_FIELDS = lambda: [  # noqa: E731
    Field("modelPath", Path(), None, inherit=True, doc="model file; epoch files are <modelPath>.<epoch>"),
    Field("deviceId", Device(), "auto", inherit=True, doc="-1 or cpu, auto, or a GPU index"),
    Field("precision", Enum(PRECISIONS, {"bfloat16": "bf16", "float16": "fp16", "half": "fp16"}), "float",
          aliases=("type",), inherit=True,
          doc="float, double; bf16 or fp16: matrix products and convolutions in 16 bits, float32 master weights"),
    Field("allowTF32", Bool(), False, inherit=True, doc="float32 matrix products on TF32 tensor cores (GPU)"),
    Field("cudaGraph", Bool(), True, inherit=True,
          doc="GPU: capture each step as a CUDA graph per input-shape bucket (--no-cuda-graph: eager)"),
    Field("traceLevel", Int(min=0), 0, inherit=True, doc="how much to log (0 = least)"),
    Field("makeMode", Bool(), True, inherit=True, doc="resume from existing epoch files, skip finished work"),
]

ACTION_SCHEMA = Schema("action", [
    Field("action", Enum(ACTIONS, {"trainRNN": "train"}), "train",
          doc="what the block does: train, test/eval, write, ... (netlang runs train, test, eval, write)"),
    Field("network", Network(), None, aliases=("BrainScriptNetworkBuilder", "ExperimentalNetworkBuilder"),
          inherit=True,
          doc="the network, a BrainScript record of nodes"),
    Field("SimpleNetworkBuilder", Block(SIMPLE_NETWORK_SCHEMA), None,
          doc="CNTK's fixed topologies from a few settings (rnnType = FFDNN)"),
    Field("NDLNetworkBuilder", Unsupported(_OLD_BUILDER_HINT), None,
          doc="CNTK's NDL network description; write the network in BrainScript instead"),
    Field("SGD", Block(SGD_SCHEMA), None, aliases=("optimizer",), inherit=True,
          doc="the learner block (schedules, momentum, update rule, parallel training)"),
    Field("reader", Block(READER_SCHEMA), None, inherit=True, doc="the data the action reads"),
    Field("cvReader", Block(READER_SCHEMA), None, inherit=True,
          doc="cross-validation data, evaluated after every training epoch"),
    *_SHARED_FIELDS(),
    Field("minibatchSize", Scheduled(integer=True, min=1), None, inherit=True,
          doc="test/eval/cv: 40960, write: 2048 (train: SGD.minibatchSize)"),
    Field("epochSize", Int(min=0), None, inherit=True, doc="samples to process; 0 = all"),
    Field("numMBsToShowResult", Int(min=0), None, inherit=True, doc="test/eval/cv: 100"),
    Field("firstMBsToShowResult", Int(min=0), None, inherit=True, doc="also report each of the first n minibatches"),
    Field("maxSamplesInRAM", Int(min=1), None, doc="CNTK: split minibatches larger than this (no effect in netlang)"),
    Field("numSubminibatches", Int(min=1), None,
          doc="CNTK: split each minibatch into this many parts (no effect in netlang)"),
    Field("distributedMBReading", Bool(), None,
          doc="each worker reads its own share of every minibatch (parallel training)"),
    Field("evalNodeNames", NameList(), None, doc="nodes to evaluate (default: the evaluation nodes)"),
    Field("outputNodeNames", NameList(), None, doc="nodes to write (default: the output nodes)"),
    Field("outputPath", Path(), None, doc="write: one text file per node, <outputPath>.<node>"),
    Field("format", Block(FORMAT_SCHEMA), None, doc="text format of the write action's output"),
    Field("writer", AnyValue(), None, doc="CNTK's legacy data writer block (write action)"),
    Field("crossValidationInterval", List(Int(min=0)), None, doc="cv: start:step:end epochs"),
    Field("sleepTimeBetweenRuns", Int(min=0), 0, doc="CNTK: seconds to wait after the action (no effect in netlang)"),
    Field("outputModelPath", Path(), None, doc="edit, SVD"),
    Field("editPath", Path(), None, doc="CNTK edit action: the MEL script (no effect in netlang)"),
    Field("ndlMacros", Path(), None, doc="CNTK: NDL macro file (no effect in netlang)"),
    Field("nodeName", String(), None, doc="dumpnode"),
    Field("nodeNameRegex", String(), None, doc="dumpnode: nodes whose names match (no effect in netlang)"),
    Field("outputFile", Path(), None, doc="dumpnode: the file to write (no effect in netlang)"),
    Field("printValues", Bool(), True, doc="dumpnode: print the values (no effect in netlang)"),
    Field("printMetadata", Bool(), True, doc="dumpnode: print the metadata (no effect in netlang)"),
    Field("outputDotFile", Path(), None, doc="plot"),
    Field("RenderCmd", String(), None,
          doc="plot action: command that renders the DOT file (netlang graph renders with Graphviz) (no effect in netlang)"),
    Field("newModelPath", Path(), None, doc="bnstat"),
    Field("itersPerNode", Int(min=1), 30,
          doc="bnstat: minibatches per batch-normalisation node (no effect in netlang)"),
    Field("enableDistributedMBReading", Bool(), False,
          doc="CNTK's older spelling of distributedMBReading for evaluation (no effect in netlang)"),
    Field("origModelFileName", Path(), None, doc="adapt"),
    Field("refNodeName", String(), None, doc="adapt: the reference node for KL regularisation (no effect in netlang)"),
    Field("SVDConfig", Path(), None, doc="SVD action: the configuration file (no effect in netlang)"),
    Field("dbnModelPath", Path(), None, doc="convertdbn: the DBN model file (no effect in netlang)"),
    Field("section", String(), None, doc="SVD action: the section to use (no effect in netlang)"),
    Field("inputFile", Path(), None, doc="writeWordAndClass"),
    Field("outputVocabFile", Path(), None,
          doc="writeWordAndClass: the vocabulary file to write (no effect in netlang)"),
    Field("outputWord2Cls", Path(), None, doc="writeWordAndClass: the word-to-class file (no effect in netlang)"),
    Field("outputCls2Index", Path(), None, doc="writeWordAndClass: the class-to-index file (no effect in netlang)"),
    Field("vocabSize", Int(min=1), None, doc="writeWordAndClass: the vocabulary size (no effect in netlang)"),
    Field("nbrClass", Int(min=1), None, doc="writeWordAndClass: the number of classes (no effect in netlang)"),
    Field("cutoff", Int(min=0), 2,
          doc="writeWordAndClass: the least count of a word kept in the vocabulary (no effect in netlang)"),
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
    if view.network is not None and view.SimpleNetworkBuilder is not None and view.given("network") \
            and view.member_name("network"):
        raise view.error("SimpleNetworkBuilder", f"{what} gives both a BrainScript network and a SimpleNetworkBuilder",
                         hint="keep one of them")
    if view.action == "train":
        if view.network_expr() is None:
            raise view.block_error(f"{what} has no network", hint="add network = { ... } to the block")
        if view.SGD is None:
            raise view.block_error(f"{what} has no SGD block", hint="add SGD = { maxEpochs = ... ; "
                                                                    "learningRatesPerMB = ... }")
    if view.action in ("train",) + EVALUATING_ACTIONS and view.reader is None:
        raise view.block_error(f"{what} has no reader", hint="add reader = { ... } to the block")
    if view.action in EVALUATING_ACTIONS and view.network_expr() is None and view.modelPath is None:
        raise view.block_error(f"{what} has no model: give modelPath or a network")


class ActionView(View):
    """A validated command block, e.g. `train = { action = "train" ; SGD = {...} ; reader = {...} }`."""

    @property
    def name(self) -> str:
        return self.path

    def network_expr(self) -> NetworkRef | SimpleNetworkRef | None:
        """The unevaluated network member (record + name) for the IR builder, the network a
        SimpleNetworkBuilder block describes, or None."""
        if self.network is None and self.SimpleNetworkBuilder is not None:
            return SimpleNetworkRef(self.SimpleNetworkBuilder, self.record, self.span_of("SimpleNetworkBuilder"))
        return self.network


ACTION_SCHEMA.checks += [_apply_action_defaults, _check_action_needs]
ACTION_SCHEMA.view_class = ActionView

TOP_SCHEMA = Schema("top level", [
    Field("command", NameList(), "train", doc="the blocks to run, in order (train:test)"),
    *_SHARED_FIELDS(),
    Field("excludedDevices", List(Int(min=0)), None,
          doc="GPU indices deviceId = auto must not choose (no effect in netlang)"),
    Field("numCPUThreads", Int(), 0, doc="0 = library default; negative = all cores minus n"),
    Field("parallelTrain", Bool(), False, doc="data-parallel training over MPI"),
    Field("randomSeed", Int(min=0), 0, doc="seed for parameter initialisation and dropout"),
    Field("forceDeterministicAlgorithms", Bool(), False,
          doc="CNTK: use only deterministic GPU kernels (no effect in netlang)"),
    Field("keepCheckPointFiles", Bool(), False, doc="keep the checkpoint of every epoch, not only the newest"),
    Field("stderr", Path(), None, doc="log file prefix: <stderr>_<commands>.log"),
    Field("outputDir", Path(), None, doc="a conventional variable for $outputDir$ paths (not read by netlang itself)"),
    Field("rootDir", Path(), None, doc="a conventional variable for $rootDir$ paths (not read by netlang itself)"),
    Field("dataDir", Path(), None, doc="a conventional variable for $dataDir$ paths (not read by netlang itself)"),
    Field("configDir", Path(), None,
          doc="a conventional variable for $configDir$ paths; netlang predefines $ConfigDir$ as the config file's directory"),
    Field("traceGPUMemoryAllocations", Bool(), False, doc="CNTK: log GPU memory allocations (no effect in netlang)"),
    Field("hyperCompressMemory", Bool(), False, doc="CNTK: release GPU memory aggressively (no effect in netlang)"),
    Field("DoneFile", Path(), None, doc="CNTK: a file written when all commands have run (no effect in netlang)"),
    Field("progressTracing", Bool(), False, doc="CNTK: progress lines for Philly jobs (no effect in netlang)"),
    Field("currentDirectory", Path(), None, doc="CNTK: change the working directory first (no effect in netlang)"),
    Field("opModules", List(String()), None,
          doc="Python modules that register ops of their own (netlang.ops.registry.register), imported "
              "before any network is built: a file (\"$ConfigDir$/myops.py\") or a module name"),
], closed=False, doc="settings for the whole run")


def _inheritable_keys(*schemas: Schema) -> set:
    return {key for schema in schemas for f in schema.fields if f.inherit for key in f.keys()}


# Keys an enclosing block may hold because the blocks inside inherit them (CNTK's parent lookup).
TOP_SCHEMA.also_known = lambda: _inheritable_keys(ACTION_SCHEMA, SGD_SCHEMA, READER_SCHEMA)
ACTION_SCHEMA.also_known = lambda: _inheritable_keys(SGD_SCHEMA, READER_SCHEMA)
TOP_SCHEMA.command_block_keys = lambda: {key for f in ACTION_SCHEMA.fields for key in f.keys()}

