"""The image reader's transforms (Crop, Scale, Mean, Color, Intensity, Transpose) and mean files.

Reference §5.5. An image travels through the chain as a NumPy array in HWC layout (height, width,
channels) with channels in BGR order and values 0..255, as CNTK's OpenCV decoding gives them: uint8
until a transform needs floats (Mean, Color, Intensity), float32 after. `Transpose` turns HWC into
the CHW layout a `W:H:C` network input expects, so it must come last.

Every transform is `apply(image, rng, view) -> image`:

* `rng` is the sample's own generator, or None when the reader does not randomize. With None every
  transform is deterministic: crops are centred, square and use the low end of their ratio range
  (what `jitterType = None` uses), nothing is flipped, Color and Intensity do nothing and Scale
  uses the first of its interpolations. That is the evaluation behaviour CNTK users get by writing
  `cropType = "Center"` in their test readers, and it is what `randomize = false` gives here.
* `view` is the sample's copy index for `cropType = "MultiView10"` (0-9), else 0.

`parse_transform` reads one `[ type = "Crop" ; … ]` record; `legacy_transforms` reads the keys of a
legacy `ImageReader` features block (`width`, `height`, `channels`, `cropType`, `meanFile`, …).
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from netlang.errors import ConfigError, DataError, DataPosition, suggest
from netlang.readers.factory import ConfigView, resolve_path

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "linear": Image.Resampling.BILINEAR,
    "cubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
CROP_TYPES = ("center", "randomside", "randomarea", "multiview10")
JITTER_TYPES = ("none", "uniratio", "unilength", "uniarea")
SCALE_MODES = ("fill", "crop", "pad")
MULTIVIEW_COPIES = 10
# CNTK retries a crop whose jittered aspect ratio does not fit this often, then takes the whole image.
_CROP_ATTEMPTS = 10


class Transform(Protocol):
    is_random: bool          # whether `apply` draws from `rng` (when it gets one)

    def apply(self, image: np.ndarray, rng: np.random.Generator | None, view: int) -> np.ndarray: ...


def _as_float(image: np.ndarray) -> np.ndarray:
    return image if image.dtype == np.float32 else image.astype(np.float32)


# ---- Crop --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Crop:
    """Cut a window out of the image.

    The window is square with side `min(H, W) * sideRatio`, or has area `H * W * areaRatio`; an
    `aspectRatio` below 1 then stretches it to that width/height ratio at the same area, landscape or
    portrait with equal chance. Ranges `lo:hi` are jittered uniformly (`jitterType = UniRatio`;
    `UniArea` draws the area uniformly instead) or use `lo` (`None`). Center and MultiView10 place
    the window deterministically (MultiView10: four corners and the centre for views 0-4, the same
    flipped for views 5-9); the random types place it uniformly. With neither ratio the window is
    the whole image.
    """

    kind: str = "center"
    side_ratio: tuple[float, float] | None = None
    area_ratio: tuple[float, float] | None = None
    aspect_ratio: tuple[float, float] = (1.0, 1.0)
    jitter: str = "none"
    hflip: bool = False

    @property
    def is_random(self) -> bool:
        ranges = [r for r in (self.side_ratio, self.area_ratio, self.aspect_ratio) if r is not None]
        jittered = self.jitter != "none" and any(lo < hi for lo, hi in ranges)
        return self.kind in ("randomside", "randomarea") or self.hflip or jittered or self.aspect_ratio[0] < 1

    def apply(self, image, rng, view):
        height, width = image.shape[:2]
        crop_h, crop_w = self._window(height, width, rng)
        top, left = self._position(height, width, crop_h, crop_w, rng, view)
        out = image[top:top + crop_h, left:left + crop_w]
        flip = view >= MULTIVIEW_COPIES // 2 or (self.hflip and rng is not None and rng.random() < 0.5)
        return out[:, ::-1] if flip else out

    def _window(self, height: int, width: int, rng) -> tuple[int, int]:
        if self.side_ratio is None and self.area_ratio is None:
            return height, width
        for _ in range(_CROP_ATTEMPTS if rng is not None else 1):
            if self.side_ratio is not None:
                side = round(min(height, width) * self._draw(self.side_ratio, rng, squared=self.jitter == "uniarea"))
            else:
                side = round(math.sqrt(height * width * self._draw(self.area_ratio, rng)))
            crop_h = crop_w = max(1, side)
            aspect = self._draw(self.aspect_ratio, rng) if rng is not None else 1.0
            if aspect != 1.0:
                area = crop_h * crop_w
                long_side, short_side = int(math.sqrt(area / aspect)), int(math.sqrt(area * aspect))
                crop_h, crop_w = (short_side, long_side) if rng.random() < 0.5 else (long_side, short_side)
                crop_h, crop_w = max(1, crop_h), max(1, crop_w)
            if crop_h <= height and crop_w <= width:
                return crop_h, crop_w
        return height, width

    def _draw(self, bounds: tuple[float, float], rng, squared: bool = False) -> float:
        """A ratio from `lo:hi`: `lo` without jitter, else uniform (in its square: uniform in area)."""
        lo, hi = bounds
        if rng is None or self.jitter == "none" or lo == hi:
            return lo
        if squared:
            return math.sqrt(rng.uniform(lo * lo, hi * hi))
        return float(rng.uniform(lo, hi))

    def _position(self, height, width, crop_h, crop_w, rng, view) -> tuple[int, int]:
        free_h, free_w = height - crop_h, width - crop_w
        if self.kind == "multiview10":
            corner = view % (MULTIVIEW_COPIES // 2)     # top-left, top-right, bottom-left, bottom-right, centre
            if corner == 4:
                return free_h // 2, free_w // 2
            return (free_h if corner >= 2 else 0), (free_w if corner % 2 else 0)
        if self.kind == "center" or rng is None:
            return free_h // 2, free_w // 2
        return int(rng.integers(0, free_h + 1)), int(rng.integers(0, free_w + 1))


# ---- Scale -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    """Resize to `width` × `height` (Pillow's filters).

    `fill` stretches; `crop` keeps the aspect ratio, scales until the target is covered and cuts the
    centre; `pad` keeps the aspect ratio, scales until the image fits and pads the rest with `padValue`
    (-1 repeats the border pixels).
    Several `interpolations` (`cubic:linear`) are chosen from at random per image.
    """

    width: int
    height: int
    channels: int = 3
    interpolations: tuple[str, ...] = ("linear",)
    mode: str = "fill"
    pad_value: float = -1

    @property
    def is_random(self) -> bool:
        return len(self.interpolations) > 1

    def apply(self, image, rng, view):
        name = self.interpolations[0] if rng is None else self.interpolations[rng.integers(len(self.interpolations))]
        resample = INTERPOLATIONS[name]
        if self.mode == "fill":
            return _resize(image, self.height, self.width, resample)
        # crop: the smallest scaling that covers the target; pad: the largest that fits in it (for a
        # square target, CNTK's "shorter side" and "longer side" to the target size)
        height, width = image.shape[:2]
        bound = max if self.mode == "crop" else min
        factor = bound(self.width / width, self.height / height)
        target_h = bound(self.height, max(1, round(height * factor)))
        target_w = bound(self.width, max(1, round(width * factor)))
        image = _resize(image, target_h, target_w, resample)
        if self.mode == "crop":
            top, left = (target_h - self.height) // 2, (target_w - self.width) // 2
            return image[top:top + self.height, left:left + self.width]
        return self._pad(image)

    def _pad(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        top, left = (self.height - height) // 2, (self.width - width) // 2
        pads = ((top, self.height - height - top), (left, self.width - width - left), (0, 0))
        if self.pad_value < 0:
            return np.pad(image, pads, mode="edge")
        if image.dtype == np.uint8 and (self.pad_value > 255 or not float(self.pad_value).is_integer()):
            image = _as_float(image)
        return np.pad(image, pads, mode="constant", constant_values=self.pad_value)


def _resize(image: np.ndarray, height: int, width: int, resample) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    if image.dtype == np.uint8 and image.shape[2] in (1, 3):
        planes = image[:, :, 0] if image.shape[2] == 1 else image
        out = np.asarray(Image.fromarray(np.ascontiguousarray(planes)).resize((width, height), resample))
        return out[:, :, None] if out.ndim == 2 else out
    # Pillow resizes floats one plane at a time (mode "F").
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32))
                         .resize((width, height), resample)) for c in range(image.shape[2])]
    return np.stack(planes, axis=2)


# ---- Mean, Color, Intensity, Transpose ------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Mean:
    """Subtract a per-pixel mean image (HWC, read from an OpenCV XML `meanFile`)."""

    mean: np.ndarray
    path: str = ""
    is_random = False

    def apply(self, image, rng, view):
        if image.shape != self.mean.shape:
            raise DataError(f"the mean image is {_size_text(self.mean.shape)}, but the image reaching the Mean "
                            f"transform is {_size_text(image.shape)}", DataPosition(self.path),
                            hint="put a Scale transform to the mean file's size before Mean")
        return _as_float(image) - self.mean


@dataclass(frozen=True)
class Color:
    """Random brightness, contrast and saturation, as CNTK's ColorTransformer does.

    Brightness adds `x * mean(image)`, contrast multiplies by `1 + y` (both then clipped to 0..255),
    saturation multiplies HSV saturation by `1 + z` (capped at 1); x, y, z are uniform in ±radius.
    The saturation change is done without an HSV round trip: with hue and value fixed, each
    channel's distance below the maximum channel is proportional to the saturation.
    """

    brightness_radius: float = 0.0
    contrast_radius: float = 0.0
    saturation_radius: float = 0.0

    @property
    def is_random(self) -> bool:
        return bool(self.brightness_radius or self.contrast_radius or self.saturation_radius)

    def apply(self, image, rng, view):
        if rng is None or not self.is_random:
            return image
        image = image.astype(np.float32)                 # a copy: the changes below are in place
        if self.brightness_radius or self.contrast_radius:
            beta = rng.uniform(-self.brightness_radius, self.brightness_radius) * float(image.mean()) \
                if self.brightness_radius else 0.0
            alpha = 1.0 + rng.uniform(-self.contrast_radius, self.contrast_radius) if self.contrast_radius else 1.0
            image *= np.float32(alpha)
            image += np.float32(beta)
            np.clip(image, 0, 255, out=image)
        if self.saturation_radius and image.shape[2] == 3:
            ratio = np.float32(1.0 + rng.uniform(-self.saturation_radius, self.saturation_radius))
            # Plane by plane: NumPy reductions over a last axis of length 3 are slow.
            planes = image[:, :, 0], image[:, :, 1], image[:, :, 2]
            top = np.maximum(np.maximum(*planes[:2]), planes[2])[:, :, None]
            factor = ratio
            if ratio > 1:
                # saturation is capped at 1: the channel furthest below the top may reach 0, no further
                low = np.minimum(np.minimum(*planes[:2]), planes[2])[:, :, None]
                factor = np.minimum(ratio, top / np.maximum(top - low, np.float32(1e-6)))
            image -= top
            image *= factor
            image += top
        return image


@dataclass(frozen=True, eq=False)
class Intensity:
    """AlexNet's PCA lighting noise: add `eigvec @ (alpha * eigval)`, alpha ~ N(0, stdDev), per channel.

    The eigen data in `intensityFile` are in RGB order; the image is BGR, so the shift is reversed.
    """

    std_dev: float
    eigval: np.ndarray
    eigvec: np.ndarray

    @property
    def is_random(self) -> bool:
        return self.std_dev > 0

    def apply(self, image, rng, view):
        if rng is None or self.std_dev == 0 or image.shape[2] != 3:
            return image
        alphas = rng.normal(0.0, self.std_dev, 3) * self.eigval
        shift = (self.eigvec @ alphas)[::-1].astype(np.float32)
        return np.clip(_as_float(image) + shift, 0, 255)


@dataclass(frozen=True)
class Transpose:
    """HWC → CHW, the layout of a `W:H:C` input."""

    is_random = False

    def apply(self, image, rng, view):
        return image.transpose(2, 0, 1)


def _size_text(shape: tuple) -> str:
    return "×".join(str(d) for d in shape) + " (H×W×C)"


# ---- OpenCV XML matrices (mean and intensity files) ----------------------------------------------

def read_mean_file(path: str) -> np.ndarray:
    """The mean image of an OpenCV XML mean file, as a float32 HWC array.

    The layout CNTK uses: `<opencv_storage>` holding `<Channel>`, `<Row>`, `<Col>` and an
    `opencv-matrix` named `MeanImg` whose data are the pixels in HWC order (OpenCV's interleaved
    channels; BGR for colour images). The matrix's own rows/cols may be any factorisation
    (CNTK's scripts write one row).
    """
    root = _read_xml(path)
    channels, rows, cols = (_read_int(root, name, path) for name in ("Channel", "Row", "Col"))
    data = read_opencv_matrix(root, "MeanImg", path)
    if data.size != channels * rows * cols:
        raise DataError(f"MeanImg holds {data.size} values, but Channel × Row × Col = {channels * rows * cols}",
                        DataPosition(path), hint="the mean file is damaged or was written for another size")
    return data.reshape(rows, cols, channels).astype(np.float32)


def write_mean_file(path: str, mean: np.ndarray) -> None:
    """Write an HWC mean image (channels in the reader's BGR order) as an OpenCV XML mean file."""
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim == 2:
        mean = mean[:, :, None]
    if mean.ndim != 3:
        raise ValueError(f"a mean image is H×W×C, got shape {mean.shape}")
    rows, cols, channels = mean.shape
    values = " ".join(f"{v:.9g}" for v in mean.ravel())
    text = ('<?xml version="1.0" ?>\n<opencv_storage>\n'
            f"  <Channel>{channels}</Channel>\n  <Row>{rows}</Row>\n  <Col>{cols}</Col>\n"
            '  <MeanImg type_id="opencv-matrix">\n'
            f"    <rows>1</rows>\n    <cols>{mean.size}</cols>\n    <dt>f</dt>\n"
            f"    <data>{values}</data>\n  </MeanImg>\n</opencv_storage>\n")
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)


def read_intensity_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """`EigVal` (3 values) and `EigVec` (3×3) of an OpenCV XML intensity file."""
    root = _read_xml(path)
    eigval = read_opencv_matrix(root, "EigVal", path)
    eigvec = read_opencv_matrix(root, "EigVec", path)
    if eigval.size != 3 or eigvec.shape != (3, 3):
        raise DataError(f"EigVal must be 1×3 and EigVec 3×3, found {eigval.shape} and {eigvec.shape}",
                        DataPosition(path))
    return eigval.ravel().astype(np.float64), eigvec.astype(np.float64)


def read_opencv_matrix(root: ElementTree.Element, name: str, path: str) -> np.ndarray:
    """The `opencv-matrix` element `name` as a (rows, cols·channels) float array."""
    node = root.find(name)
    if node is None:
        raise DataError(f"no <{name}> matrix in the file", DataPosition(path),
                        hint="an OpenCV XML file written with cv::FileStorage (or write_mean_file)")
    rows, cols = _read_int(node, "rows", path), _read_int(node, "cols", path)
    dt = (node.findtext("dt") or "f").strip()
    channels = int(dt[:-1]) if dt[:-1].isdigit() else 1
    try:
        data = np.array((node.findtext("data") or "").split(), dtype=np.float64)
    except ValueError:
        raise DataError(f"<{name}> holds a value that is not a number", DataPosition(path)) from None
    if data.size != rows * cols * channels:
        raise DataError(f"<{name}> declares {rows}×{cols}×{channels} values but holds {data.size}",
                        DataPosition(path))
    return data.reshape(rows, cols * channels)


def _read_xml(path: str) -> ElementTree.Element:
    try:
        return ElementTree.parse(path).getroot()
    except OSError as err:
        raise DataError(f"cannot open the file: {err.strerror or err}", DataPosition(path),
                        hint="a relative path is resolved against the directory of the config file") from None
    except ElementTree.ParseError as err:
        line, col = err.position
        raise DataError(f"not a well-formed XML file ({err.msg if hasattr(err, 'msg') else err})",
                        DataPosition(path, line, col + 1)) from None


def _read_int(node: ElementTree.Element, name: str, path: str) -> int:
    text = node.findtext(name)
    try:
        return int((text or "").strip())
    except ValueError:
        raise DataError(f"<{name}> must hold a whole number, found {text!r}", DataPosition(path)) from None


# ---- reading the config --------------------------------------------------------------------------

_CROP_KEYS = ("cropType", "sideRatio", "cropRatio", "areaRatio", "aspectRatio", "jitterType", "hflip")
_SCALE_KEYS = ("width", "height", "channels", "interpolations", "scaleMode", "padValue")
_COLOR_KEYS = ("brightnessRadius", "contrastRadius", "saturationRadius")
_INTENSITY_KEYS = ("intensityFile", "intensityStdDev")
TRANSFORM_KEYS = {"crop": _CROP_KEYS, "scale": _SCALE_KEYS, "mean": ("meanFile",),
                  "color": _COLOR_KEYS + _INTENSITY_KEYS, "intensity": _INTENSITY_KEYS, "transpose": ()}
TRANSFORM_TYPES = ("Crop", "Scale", "Mean", "Color", "Intensity", "Transpose")
# Keys a legacy ImageReader features block may hold besides the transform keys.
LEGACY_FEATURE_KEYS = ("transforms", "type", "dim")


def parse_transform(cfg: ConfigView, base_dir: str) -> list[Transform]:
    """The transforms of one `[ type = "…" ; … ]` record of a stream's `transforms`: one, or for a
    Color record with `intensityFile` (reference §5.5 lists PCA lighting under Color) Color then
    Intensity."""
    kind = cfg.string("type").lower()
    if kind not in TRANSFORM_KEYS:
        raise ConfigError(f"unknown transform type '{cfg.get('type')}'", key=cfg.key_path("type"),
                          hint=suggest(kind, TRANSFORM_TYPES) or "one of " + ", ".join(TRANSFORM_TYPES))
    known = ("type",) + TRANSFORM_KEYS[kind]
    for name in cfg.keys():
        if name.lower() not in {k.lower() for k in known}:
            raise ConfigError(f"unknown key '{name}' in a {kind.capitalize()} transform", key=cfg.path,
                              hint=suggest(name, known) or "its keys are " + ", ".join(known[1:] or ("(none)",)))
    if kind == "color" and cfg.has("intensityFile"):
        return [_color(cfg, base_dir), _intensity(cfg, base_dir)]
    return [_BUILDERS[kind](cfg, base_dir)]


def legacy_transforms(cfg: ConfigView, base_dir: str) -> list[Transform]:
    """The fixed chain of CNTK's legacy ImageReader: Crop, Scale, Color, Intensity, Mean, Transpose,
    each only when its keys are given (Scale always: `width`, `height`, `channels` are required)."""
    cfg.reject_typos(_CROP_KEYS + _SCALE_KEYS + _COLOR_KEYS + _INTENSITY_KEYS + ("meanFile",) + LEGACY_FEATURE_KEYS)
    chain: list[Transform] = []
    if any(cfg.has(k) for k in _CROP_KEYS):
        chain.append(_crop(cfg, base_dir))
    chain.append(_scale(cfg, base_dir))
    if any(cfg.has(k) for k in _COLOR_KEYS):
        chain.append(_color(cfg, base_dir))
    if cfg.has("intensityFile"):
        chain.append(_intensity(cfg, base_dir))
    if cfg.has("meanFile"):
        chain.append(_mean(cfg, base_dir))
    chain.append(Transpose())
    return chain


def _crop(cfg: ConfigView, base_dir: str) -> Crop:
    kind = cfg.string("cropType", "center", choices=CROP_TYPES + ("random",)).lower()
    kind = "randomside" if kind == "random" else kind           # older builds' name
    side_key = "sideRatio" if cfg.has("sideRatio") else "cropRatio"   # cropRatio: the older name
    side = _ratio_range(cfg, side_key) if cfg.has(side_key) else None
    area = _ratio_range(cfg, "areaRatio") if cfg.has("areaRatio") else None
    if side is not None and area is not None:
        raise ConfigError(f"{side_key} and areaRatio cannot both be given", key=cfg.path,
                          hint="sideRatio sizes the crop by its side, areaRatio by its area: pick one")
    if kind == "randomarea" and area is None:
        raise ConfigError("cropType RandomArea needs areaRatio", key=cfg.path, hint="e.g. areaRatio = 0.08:1.0")
    if kind == "randomside" and side is None:
        raise ConfigError("cropType RandomSide needs sideRatio", key=cfg.path, hint="e.g. sideRatio = 0.8:1.0")
    jitter = cfg.string("jitterType", "none", choices=JITTER_TYPES).lower()
    random_kind = kind in ("randomside", "randomarea")
    hflip = cfg.boolean("hflip", random_kind) and kind != "multiview10"
    return Crop(kind, side, area, _ratio_range(cfg, "aspectRatio") if cfg.has("aspectRatio") else (1.0, 1.0),
                jitter, hflip)


def _scale(cfg: ConfigView, base_dir: str) -> Scale:
    channels = cfg.integer("channels", minimum=1)
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (colour), not {channels}", key=cfg.key_path("channels"))
    names = _name_list(cfg.get("interpolations", "linear"))
    for name in names:
        if name not in INTERPOLATIONS:
            raise ConfigError(f"unknown interpolation '{name}'", key=cfg.key_path("interpolations"),
                              hint=suggest(name, INTERPOLATIONS) or "one of nearest, linear, cubic, lanczos")
    pad_value = _number(cfg, "padValue", -1)
    if pad_value < 0 and pad_value != -1:
        raise ConfigError(f"padValue must be -1 (repeat the border) or ≥ 0, not {pad_value}",
                          key=cfg.key_path("padValue"))
    return Scale(cfg.integer("width", minimum=1), cfg.integer("height", minimum=1), channels,
                 tuple(names) or ("linear",), cfg.string("scaleMode", "fill", choices=SCALE_MODES).lower(),
                 pad_value)


def _mean(cfg: ConfigView, base_dir: str) -> Mean:
    path = resolve_path(cfg.string("meanFile"), base_dir)
    return Mean(read_mean_file(path), path)


def _color(cfg: ConfigView, base_dir: str) -> Color:
    return Color(*(_number(cfg, key, 0.0, 0.0, 1.0) for key in _COLOR_KEYS))


def _intensity(cfg: ConfigView, base_dir: str) -> Intensity:
    eigval, eigvec = read_intensity_file(resolve_path(cfg.string("intensityFile"), base_dir))
    return Intensity(_number(cfg, "intensityStdDev", 0.0, 0.0), eigval, eigvec)


def _transpose(cfg: ConfigView, base_dir: str) -> Transpose:
    return Transpose()


_BUILDERS = {"crop": _crop, "scale": _scale, "mean": _mean, "color": _color, "intensity": _intensity,
             "transpose": _transpose}


def _number(cfg: ConfigView, key: str, default: float, lo: float | None = None, hi: float | None = None) -> float:
    value = _to_float(cfg.get(key, default))
    if value is None:
        raise ConfigError(f"expected a number, found {cfg.get(key)!r}", key=cfg.key_path(key))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"must lie in [{lo}, {hi}], found {value:g}", key=cfg.key_path(key))
    return value


def _ratio_range(cfg: ConfigView, key: str) -> tuple[float, float]:
    """`r` or `lo:hi` (an array or the text "lo:hi") with 0 < lo ≤ hi ≤ 1."""
    value = cfg.get(key)
    parts: list[Any] = value.split(":") if isinstance(value, str) else \
        list(value) if isinstance(value, (list, tuple)) else [value]
    numbers = [_to_float(p) for p in parts]
    if not 1 <= len(numbers) <= 2 or any(n is None for n in numbers):
        raise ConfigError(f"expected a ratio or a range lo:hi, found {value!r}", key=cfg.key_path(key))
    lo, hi = numbers[0], numbers[-1]
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"ratios must satisfy 0 < lo ≤ hi ≤ 1, found {lo:g}:{hi:g}", key=cfg.key_path(key))
    return lo, hi


def _name_list(value: Any) -> list[str]:
    items = value.split(":") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) \
        else [value]
    return [str(item).strip().lower() for item in items if str(item).strip()]


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None

