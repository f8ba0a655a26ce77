"""Typed settings: a validated block (a `View`) turned into the frozen objects the runtime and the
readers consume. This is the one path from a config to them:

    AST ─ field type (fields.py) ─▶ View ─ settings.py ─▶ SGDSettings … ─▶ learner, trainer, reader

Every value was read, checked and defaulted by the schema (blocks.py), so nothing here parses or
checks ranges again, and no default is repeated: a settings object holds exactly the schema's typed
values (a `Schedule` stays a `Schedule`). Each object remembers where each value came from (a
`Source`: key path and span), so a problem found later — a checkpoint written by another
`gradUpdateType`, a `gradientBits` the parallel code cannot run — is reported with
`settings.error(key, message, hint)` at the file:line:col that set the value.

An attribute is declared with `setting("schemaKey")` and read from the block the object is made of;
attributes that combine several keys or come from elsewhere are passed by the builder.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from netlang.compiler.lang.blocks import (
    BLOCK_MOMENTUM_SGD_SCHEMA,
    DATA_PARALLEL_SGD_SCHEMA,
    MODEL_AVERAGING_SGD_SCHEMA,
    PARALLEL_TRAIN_SCHEMA,
)
from netlang.compiler.lang.schedule import Schedule
from netlang.compiler.lang.views import View, defaults
from netlang.errors import SchemaError, Span

FULL_PRECISION_BITS = 32   # gradientBits not given: no quantisation (also in double precision)


# ---- where a value came from ---------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Where one setting's value came from."""

    path: str              # key path as the user spelled it, e.g. "train.SGD.learningRatesPerMB"
    span: Span | None      # where the value is written, or its block's span when it is a default
    given: bool            # the config sets it (not a default)


def setting(key: str):
    """A settings attribute that holds the schema key `key` of the block the object is read from."""
    return field(metadata={"key": key})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Base of the typed settings: the block they were read from and where each value came from."""

    block_path: str = ""
    block_span: Span | None = None
    sources: Mapping[str, Source] = field(default_factory=dict, repr=False, compare=False)

    def source(self, key: str) -> Source:
        found = self.sources.get(key)
        if found is not None:
            return found
        return Source(f"{self.block_path}.{key}" if self.block_path else key, self.block_span, False)

    def span_of(self, key: str) -> Span | None:
        return self.source(key).span

    def given(self, key: str) -> bool:
        return self.source(key).given

    def error(self, key: str, message: str, hint: str | None = None) -> SchemaError:
        """An error about the value of `key`, at the file:line:col that set it, naming its key path."""
        source = self.source(key)
        return SchemaError(message, source.span, hint=hint, key=source.path)

    def block_error(self, message: str, hint: str | None = None) -> SchemaError:
        return SchemaError(message, self.block_span, hint=hint, key=self.block_path or None)


def _source(view: View, key: str) -> Source:
    name = view.schema.field(key).name
    return Source(view.key_path(name), view.span_of(name), view.given(name))


def _plain(value):
    """Lists become tuples: settings are frozen."""
    return tuple(value) if isinstance(value, list) else value


def _read(cls, view: View, *, sources: Mapping[str, Source] | None = None, **values):
    """A `cls` whose `setting(key)` attributes are read from `view`; `values` are given by the builder
    (with their `sources`), and override what `view` holds."""
    found = dict(sources or {})
    for f in fields(cls):
        key = f.metadata.get("key")
        if key is None or f.name in values:
            continue
        values[f.name] = _plain(view[key])
        found[key] = _source(view, key)
    return cls(block_path=view.path, block_span=view.span, sources=MappingProxyType(found), **values)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# ---- SGD: the learner -----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class SGDSettings(Settings):
    """The learner's keys of an SGD block (reference §5.3). One learning-rate key is set (none only
    with autoAdjustLR = searchBeforeEpoch, which the runtime refuses) and exactly one momentum key
    (the schema fills in momentumPerMB = 0.9); `adam_beta1` None means β1 follows the momentum."""

    minibatch_size: Schedule = setting("minibatchSize")
    learning_rates_per_sample: Schedule | None = setting("learningRatesPerSample")
    learning_rates_per_mb: Schedule | None = setting("learningRatesPerMB")
    momentum_per_mb: Schedule | None = setting("momentumPerMB")
    momentum_per_sample: Schedule | None = setting("momentumPerSample")
    momentum_as_time_constant: Schedule | None = setting("momentumAsTimeConstant")
    grad_update_type: str = setting("gradUpdateType")       # the schema's spelling, e.g. "rmsProp"
    use_nesterov: bool = setting("useNAG")
    l2_reg_weight: float = setting("L2RegWeight")
    l1_reg_weight: float = setting("L1RegWeight")
    clipping_threshold_per_sample: float = setting("clippingThresholdPerSample")
    gradient_clipping_with_truncation: bool = setting("gradientClippingWithTruncation")
    gaussian_noise_inject_std: float = setting("gaussianNoiseInjectStd")
    norm_with_ave_multiplier: bool = setting("normWithAveMultiplier")
    rms_gamma: float = setting("rms_gamma")
    rms_wgt_inc: float = setting("rms_wgt_inc")
    rms_wgt_dec: float = setting("rms_wgt_dec")
    rms_wgt_max: float = setting("rms_wgt_max")
    rms_wgt_min: float = setting("rms_wgt_min")
    variance_time_constant: float = setting("varianceTimeConstant")
    fsadagrad_target_av_denom: float = setting("fsAdagradTargetAvDenom")
    adam_beta1: float | None = setting("adamBeta1")
    adam_beta2: float = setting("adamBeta2")
    adam_epsilon: float = setting("adamEpsilon")
    adadelta_rho: float = setting("rho")
    adadelta_epsilon: float = setting("epsilon")
    noise_seed: int = 0     # not a config key: the stream of gaussianNoiseInjectStd's noise


def sgd_settings(sgd: View) -> SGDSettings:
    return _read(SGDSettings, sgd)


# ---- AutoAdjust ------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class AutoAdjustSettings(Settings):
    """The `SGD.AutoAdjust` block (learning-rate control between epochs)."""

    method: str = setting("autoAdjustLR")                  # none | searchBeforeEpoch | adjustAfterEpoch
    reduce_if_improve_less_than: float = setting("reduceLearnRateIfImproveLessThan")
    continue_reduce: bool = setting("continueReduce")
    interval: int = setting("learnRateAdjustInterval")
    decrease_factor: float = setting("learnRateDecreaseFactor")
    increase_if_improve_more_than: float = setting("increaseLearnRateIfImproveMoreThan")
    increase_factor: float = setting("learnRateIncreaseFactor")
    load_best_model: bool = setting("loadBestModel")
    use_cv: bool = setting("UseCVSetControlLRIfCVExists")
    use_eval: bool = setting("UseEvalCriterionControlLR")


def auto_adjust_settings(block: View | None) -> AutoAdjustSettings | None:
    return None if block is None else _read(AutoAdjustSettings, block)


# ---- ParallelTrain ---------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ParallelSettings(Settings):
    """`SGD.ParallelTrain` with the sub-block of its method (reference §5.4); sub-blocks the config
    does not give have their schema's defaults."""

    method: str = setting("parallelizationMethod")
    start_epoch: int = setting("parallelizationStartEpoch")
    gradient_bits: Schedule | None          # DataParallelSGD.gradientBits; None: full precision
    zero_threshold: bool                    # useZeroThresholdFor1BitQuantization
    longer_axis: bool                       # quantizeAlongLongerAxis (netlang)
    block_size: int | None                  # samples over all workers (block methods)
    block_size_per_worker: int | None       # or per worker (legacy: syncPeriod, syncFrequencyInFrames)
    block_learning_rate: float
    block_momentum_per_sync: float | None
    block_momentum_as_time_constant: float | None
    use_nesterov: bool                      # useNesterovMomentum
    reset_sgd_momentum: bool

    def bits(self, epoch: int) -> int:
        """The gradient bits of `epoch` (1-based)."""
        return FULL_PRECISION_BITS if self.gradient_bits is None else int(self.gradient_bits.value(epoch))

    def describe(self, workers: int) -> str:
        text = f"{workers} workers, {self.method}"
        if self.method == "DataParallelSGD":
            bits = self.bits(max(self.start_epoch, 1))
            text += " (full precision)" if bits >= FULL_PRECISION_BITS else f" ({bits}-bit)"
            if bits < FULL_PRECISION_BITS and self.longer_axis:
                text += " along the longer axis"
        if self.start_epoch > 1:
            text += f" from epoch {self.start_epoch}"
        return text


# CNTK's older keys for the samples between syncs count per worker.
_LEGACY_PER_WORKER_KEYS = {"BlockMomentumSGD": ("syncPeriod",),
                           "ModelAveragingSGD": ("syncPeriod", "syncFrequencyInFrames")}


def parallel_settings(top: View, sgd: View) -> ParallelSettings | None:
    """`SGD.ParallelTrain`; None unless the top level says parallelTrain = true."""
    if not top.parallelTrain:
        return None
    block = sgd.ParallelTrain or defaults(PARALLEL_TRAIN_SCHEMA, _join(sgd.path, "ParallelTrain"), sgd.span)
    data = _sub_block(block, "DataParallelSGD", DATA_PARALLEL_SGD_SCHEMA)
    bmuf = _sub_block(block, "BlockMomentumSGD", BLOCK_MOMENTUM_SGD_SCHEMA)
    method = block.parallelizationMethod
    sizes = _sub_block(block, "ModelAveragingSGD", MODEL_AVERAGING_SGD_SCHEMA) \
        if method == "ModelAveragingSGD" else bmuf
    values = dict(gradient_bits=data.gradientBits, zero_threshold=data.useZeroThresholdFor1BitQuantization,
                  longer_axis=data.quantizeAlongLongerAxis, block_size=sizes.blockSize,
                  block_learning_rate=bmuf.blockLearningRate, block_momentum_per_sync=bmuf.blockMomentumPerSync,
                  block_momentum_as_time_constant=bmuf.blockMomentumAsTimeConstant,
                  use_nesterov=bmuf.useNesterovMomentum, reset_sgd_momentum=bmuf.resetSGDMomentum)
    sources = {key: _source(view, key) for view, keys in (
        (data, ("gradientBits", "useZeroThresholdFor1BitQuantization", "quantizeAlongLongerAxis")),
        (sizes, ("blockSize", "blockSizePerWorker")),
        (bmuf, ("blockLearningRate", "blockMomentumPerSync", "blockMomentumAsTimeConstant",
                "useNesterovMomentum", "resetSGDMomentum"))) for key in keys}
    per_worker_key = "blockSizePerWorker"
    if sizes.blockSizePerWorker is None and sizes.blockSize is None:
        per_worker_key = next((k for k in _LEGACY_PER_WORKER_KEYS.get(method, ()) if sizes[k] is not None),
                              per_worker_key)
    values["block_size_per_worker"] = sizes[per_worker_key]
    sources["blockSizePerWorker"] = _source(sizes, per_worker_key)
    return _read(ParallelSettings, block, sources=sources, **values)


def _sub_block(block: View, name: str, schema) -> View:
    return block[name] or defaults(schema, _join(block.path, name), block.span)


# ---- training ----------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class TrainingSettings(Settings):
    """What the training loop needs from a train action: its SGD block's process keys, the learner,
    AutoAdjust and parallel training, and the action's model path. Read from the SGD block; the keys
    of the action block and the top level are named in `sources` too."""

    model_path: str                                       # the action's modelPath
    make_mode: bool                                       # the action's makeMode
    cuda_graph: bool = True                               # the action's cudaGraph (runtime/stepgraph.py)
    seed: int                                             # the top level's randomSeed + 1
    max_epochs: int = setting("maxEpochs")
    epoch_size: int = setting("epochSize")                # samples; 0 = one full sweep of the data
    num_mbs_to_show_result: int = setting("numMBsToShowResult")
    first_mbs_to_show_result: int = setting("firstMBsToShowResult")
    keep_checkpoint_files: bool = setting("keepCheckPointFiles")
    dropout_rate: Schedule = setting("dropoutRate")
    truncated: bool = setting("truncated")                # the legacy spelling of truncated BPTT
    criterion: str | None = setting("trainCriterionNodeName")
    evaluation: tuple[str, ...] | None                    # evalCriterionNodeName
    tensorboard_log_dir: str | None = setting("tensorBoardLogDir")
    tensorboard_mbs_to_log: int | None = setting("tensorBoardNumMBsToLogResult")   # None: numMBsToShowResult
    sgd: SGDSettings
    auto_adjust: AutoAdjustSettings | None
    parallel: ParallelSettings | None
    config_path: str = ""
    action: str = ""

    @property
    def minibatch_size(self) -> Schedule:
        return self.sgd.minibatch_size

    @property
    def metrics_log(self) -> str:
        """JSON lines beside the model, one per report and per epoch."""
        return os.path.join(os.path.dirname(os.path.abspath(self.model_path)), "metrics.jsonl")

    @property
    def meta(self) -> dict:
        """What the model files record about the run."""
        return {"config": self.config_path, "action": self.action}


def training_settings(config, name: str, action: View) -> TrainingSettings:
    """The settings of train action `name` of a validated `Config`."""
    if not action.modelPath:
        raise action.block_error("the train action needs modelPath", hint="set modelPath = \"out/model.dnn\"")
    sgd = action.SGD
    evaluation = (sgd.evalCriterionNodeName,) if sgd.evalCriterionNodeName else None
    sources = {"modelPath": _source(action, "modelPath"), "makeMode": _source(action, "makeMode"),
               "randomSeed": _source(config.top, "randomSeed"),
               "evalCriterionNodeName": _source(sgd, "evalCriterionNodeName"),
               "cudaGraph": _source(action, "cudaGraph")}
    return _read(TrainingSettings, sgd, sources=sources, model_path=action.modelPath, make_mode=action.makeMode,
                 cuda_graph=action.cudaGraph,
                 seed=top_seed(config.top), evaluation=evaluation, sgd=sgd_settings(sgd),
                 auto_adjust=auto_adjust_settings(sgd.AutoAdjust), parallel=parallel_settings(config.top, sgd),
                 config_path=config.path, action=name)


def top_seed(top: View) -> int:
    """The seed of parameter initialisation and dropout: `randomSeed` + 1."""
    return int(top.randomSeed or 0) + 1


# ---- readers -----------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ImageSettings(Settings):
    """The image-transform keys, which a transform record and a legacy ImageReader stream share. The
    schema gives them no defaults: None means not given, and the image reader applies CNTK's."""

    crop_type: str | None = setting("cropType")
    side_ratio: tuple | None = setting("sideRatio")
    area_ratio: tuple | None = setting("areaRatio")
    aspect_ratio: tuple | None = setting("aspectRatio")
    jitter_type: str | None = setting("jitterType")
    hflip: bool | None = setting("hflip")
    width: int | None = setting("width")
    height: int | None = setting("height")
    channels: int | None = setting("channels")
    interpolations: tuple | None = setting("interpolations")
    scale_mode: str | None = setting("scaleMode")
    pad_value: float | None = setting("padValue")
    mean_file: str | None = setting("meanFile")
    brightness_radius: float | None = setting("brightnessRadius")
    contrast_radius: float | None = setting("contrastRadius")
    saturation_radius: float | None = setting("saturationRadius")
    intensity_file: str | None = setting("intensityFile")
    intensity_std_dev: float | None = setting("intensityStdDev")


@dataclass(frozen=True, kw_only=True)
class TransformSettings(ImageSettings):
    """One record of a stream's `transforms = ( … )`."""

    type: str = setting("type")      # Crop, Scale, Mean, Color, Intensity or Transpose


@dataclass(frozen=True, kw_only=True)
class StreamSettings(ImageSettings):
    """One input stream of a reader or deserializer."""

    name: str
    dim: int | None = setting("dim")                 # alias labelDim
    format: str = setting("format")                  # dense | sparse
    alias: str | None = setting("alias")
    defines_mb_size: bool = setting("definesMBSize")
    transforms: tuple[TransformSettings, ...] | None
    # HTK features (HTKFeatureDeserializer) and MLF labels (HTKMLFDeserializer), readers/htk.py
    scp_file: str | None = setting("scpFile")
    context_window: tuple | None = setting("contextWindow")      # (n,) or (left, right)
    prefix_path_in_scp: str | None = setting("prefixPathInSCP")
    mlf_file: str | None = setting("mlfFile")
    mlf_file_list: str | None = setting("mlfFileList")
    label_mapping_file: str | None = setting("labelMappingFile")
    phone_boundaries: bool = setting("phoneBoundaries")
    label_type: str | None = setting("labelType")


@dataclass(frozen=True, kw_only=True)
class DeserializerSettings(Settings):
    """One deserializer: an entry of `deserializers = ( … )`, or the one a legacy reader block
    configures itself (then `type` is None and the reader's `readerType` says which)."""

    type: str | None
    file: str | None = setting("file")
    skip_sequence_ids: bool = setting("skipSequenceIds")
    max_errors: int = setting("maxErrors")
    chunk_size_in_bytes: int = setting("chunkSizeInBytes")
    streams: Mapping[str, StreamSettings]
    legacy_streams: bool       # no `input`: the streams are the block's own (ImageReader: features = { … })


@dataclass(frozen=True, kw_only=True)
class ReaderSettings(Settings):
    """A reader block (reference §5.5): composite (`deserializers`) or legacy (`readerType`)."""

    reader_type: str | None = setting("readerType")
    deserializers: tuple[DeserializerSettings, ...]      # composite; empty for a legacy reader
    legacy: DeserializerSettings                         # what a legacy reader block configures
    randomize: object = setting("randomize")             # true/false, auto/none, or a window in samples
    randomization_window: int | None = setting("randomizationWindow")
    sample_based_randomization_window: bool = setting("sampleBasedRandomizationWindow")
    randomization_seed: int = setting("randomizationSeed")
    epoch_size: int | None = setting("epochSize")
    truncated: bool = setting("truncated")
    truncation_length: int = setting("truncationLength")
    parallel_sequences: int = setting("nbruttsineachrecurrentiter")
    frame_mode: bool = setting("frameMode")              # every frame its own sample (HTK)

    @property
    def randomizes(self) -> bool:
        """Whether sequences are shuffled: `auto` and a window size (HTK style) shuffle, `none` does not."""
        if self.randomize in ("auto", "none"):
            return self.randomize == "auto"
        return bool(self.randomize)

    @property
    def sample_window(self) -> int | None:
        """`randomize = <n>` (HTK style): a randomization window of n samples."""
        value = self.randomize
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def reader_settings(reader: View) -> ReaderSettings:
    composite = tuple(deserializer_settings(view) for view in reader.deserializers or ())
    return _read(ReaderSettings, reader, deserializers=composite, legacy=deserializer_settings(reader))


def deserializer_settings(view: View) -> DeserializerSettings:
    """A `deserializers` entry, or (given a reader block) the deserializer a legacy reader configures."""
    legacy_streams = view.input is None
    blocks = view.extra_blocks if legacy_streams else view.input
    streams = {name: stream_settings(name, block) for name, block in blocks.items()}
    return _read(DeserializerSettings, view, type=view.get("type"), streams=MappingProxyType(streams),
                 legacy_streams=legacy_streams)


def stream_settings(name: str, view: View) -> StreamSettings:
    transforms = None if view.transforms is None else tuple(transform_settings(t) for t in view.transforms)
    return _read(StreamSettings, view, sources={"transforms": _source(view, "transforms")}, name=name,
                 transforms=transforms)


def transform_settings(view: View) -> TransformSettings:
    return _read(TransformSettings, view)
