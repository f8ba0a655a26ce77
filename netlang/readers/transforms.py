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
from typing import Protocol

import numpy as np
from PIL import Image

from netlang.compiler.lang.settings import ImageSettings, TransformSettings
from netlang.errors import RELATIVE_PATH_HINT, DataError, DataPosition
from netlang.readers.factory import resolve_path

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "linear": Image.Resampling.BILINEAR,
    "cubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
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
    `aspectRatio` other than 1 then stretches it to that width/height ratio at the same area, landscape
    or portrait with equal chance (a range such as 0.75:1.3333 covers both by itself). Ranges `lo:hi` are jittered uniformly (`jitterType = UniRatio`;
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
        return self.kind in ("randomside", "randomarea") or self.hflip or jittered or self.aspect_ratio != (1.0, 1.0)

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
                        hint=RELATIVE_PATH_HINT) from None
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


# ---- reading the settings ----------------------------------------------------------------------
# The schema has checked each key's type and range (blocks.py: _IMAGE_TRANSFORM_FIELDS) but gives
# none a default; the defaults below are CNTK's, and the rules between keys are checked here.

_CROP_KEYS = ("cropType", "sideRatio", "areaRatio", "aspectRatio", "jitterType", "hflip")
_SCALE_KEYS = ("width", "height", "channels", "interpolations", "scaleMode", "padValue")
_COLOR_KEYS = ("brightnessRadius", "contrastRadius", "saturationRadius")
_INTENSITY_KEYS = ("intensityFile", "intensityStdDev")
TRANSFORM_KEYS = {"crop": _CROP_KEYS, "scale": _SCALE_KEYS, "mean": ("meanFile",),
                  "color": _COLOR_KEYS + _INTENSITY_KEYS, "intensity": _INTENSITY_KEYS, "transpose": ()}
_ALL_KEYS = _CROP_KEYS + _SCALE_KEYS + _COLOR_KEYS + _INTENSITY_KEYS + ("meanFile",)


def parse_transform(settings: TransformSettings, base_dir: str) -> list[Transform]:
    """The transforms of one `[ type = "…" ; … ]` record of a stream's `transforms`: one, or for a
    Color record with `intensityFile` (reference §5.5 lists PCA lighting under Color) Color then
    Intensity."""
    kind = settings.type.lower()
    known = TRANSFORM_KEYS[kind]
    for key in _ALL_KEYS:
        if settings.given(key) and key not in known:
            raise settings.error(key, f"{_spelling(settings, key)} is not a key of a {settings.type} transform",
                                 hint="its keys are " + ", ".join(known or ("(none)",)))
    if kind == "color" and settings.given("intensityFile"):
        return [_color(settings, base_dir), _intensity(settings, base_dir)]
    return [_BUILDERS[kind](settings, base_dir)]


def legacy_transforms(settings: ImageSettings, base_dir: str) -> list[Transform]:
    """The fixed chain of CNTK's legacy ImageReader: Crop, Scale, Color, Intensity, Mean, Transpose,
    each only when its keys are given (Scale always: `width`, `height`, `channels` are required)."""
    chain: list[Transform] = []
    if any(settings.given(k) for k in _CROP_KEYS):
        chain.append(_crop(settings, base_dir))
    chain.append(_scale(settings, base_dir))
    if any(settings.given(k) for k in _COLOR_KEYS):
        chain.append(_color(settings, base_dir))
    if settings.given("intensityFile"):
        chain.append(_intensity(settings, base_dir))
    if settings.given("meanFile"):
        chain.append(_mean(settings, base_dir))
    chain.append(Transpose())
    return chain


def _crop(settings: ImageSettings, base_dir: str) -> Crop:
    kind = (settings.crop_type or "Center").lower()
    side = _ratio_range(settings, "sideRatio", settings.side_ratio)
    area = _ratio_range(settings, "areaRatio", settings.area_ratio)
    if side is not None and area is not None:
        raise settings.error("areaRatio", f"{_spelling(settings, 'sideRatio')} and areaRatio cannot both be given",
                             hint="sideRatio sizes the crop by its side, areaRatio by its area: pick one")
    if kind == "randomarea" and area is None:
        raise settings.error("cropType", "cropType RandomArea needs areaRatio", hint="e.g. areaRatio = 0.08:1.0")
    if kind == "randomside" and side is None:
        raise settings.error("cropType", "cropType RandomSide needs sideRatio", hint="e.g. sideRatio = 0.8:1.0")
    random_kind = kind in ("randomside", "randomarea")
    hflip = (random_kind if settings.hflip is None else settings.hflip) and kind != "multiview10"
    aspect = _ratio_range(settings, "aspectRatio", settings.aspect_ratio) or (1.0, 1.0)
    return Crop(kind, side, area, aspect, (settings.jitter_type or "None").lower(), hflip)


def _scale(settings: ImageSettings, base_dir: str) -> Scale:
    for key in ("width", "height", "channels"):
        if not settings.given(key):
            raise settings.block_error(f"a Scale needs width, height and channels; {key} is missing",
                                       hint="e.g. width = 224 ; height = 224 ; channels = 3")
    if settings.channels not in (1, 3):
        raise settings.error("channels", f"channels must be 1 (grey) or 3 (colour), not {settings.channels}")
    pad_value = -1.0 if settings.pad_value is None else settings.pad_value
    if pad_value < 0 and pad_value != -1:
        raise settings.error("padValue", f"padValue must be -1 (repeat the border) or ≥ 0, not {pad_value:g}")
    return Scale(settings.width, settings.height, settings.channels, settings.interpolations or ("linear",),
                 (settings.scale_mode or "fill").lower(), pad_value)


def _mean(settings: ImageSettings, base_dir: str) -> Mean:
    path = resolve_path(_required_path(settings, "meanFile", settings.mean_file), base_dir)
    return Mean(read_mean_file(path), path)


def _color(settings: ImageSettings, base_dir: str) -> Color:
    return Color(*(radius or 0.0 for radius in (settings.brightness_radius, settings.contrast_radius,
                                                settings.saturation_radius)))


def _intensity(settings: ImageSettings, base_dir: str) -> Intensity:
    path = resolve_path(_required_path(settings, "intensityFile", settings.intensity_file), base_dir)
    eigval, eigvec = read_intensity_file(path)
    return Intensity(settings.intensity_std_dev or 0.0, eigval, eigvec)


def _transpose(settings: ImageSettings, base_dir: str) -> Transpose:
    return Transpose()


_BUILDERS = {"crop": _crop, "scale": _scale, "mean": _mean, "color": _color, "intensity": _intensity,
             "transpose": _transpose}


def _required_path(settings: ImageSettings, key: str, value: str | None) -> str:
    if value is None:
        raise settings.block_error(f"this transform needs {key}", hint=f'{key} = "…"')
    return value


def _ratio_range(settings: ImageSettings, key: str, value: tuple | None) -> tuple[float, float] | None:
    """`r` or `lo:hi` with 0 < lo ≤ hi ≤ 1 (the schema has checked that each lies in [0, 1]), or None."""
    if value is None:
        return None
    if not 1 <= len(value) <= 2:
        raise settings.error(key, f"expected a ratio or a range lo:hi, found {len(value)} values")
    lo, hi = value[0], value[-1]
    if not 0 < lo <= hi:
        raise settings.error(key, f"ratios must satisfy 0 < lo ≤ hi ≤ 1, found {lo:g}:{hi:g}")
    return lo, hi


def _spelling(settings: ImageSettings, key: str) -> str:
    """The key as the user wrote it (`cropRatio` for sideRatio)."""
    return settings.source(key).path.rsplit(".", 1)[-1]
