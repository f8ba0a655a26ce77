"""The image deserializer: map files, zip archives, every transform, determinism, errors, the factory."""
from __future__ import annotations

import base64
import colorsys
import threading
import weakref
import zipfile
from collections import Counter

import numpy as np
import pytest
import settings_of
from PIL import Image

from netlang.compiler.lang.settings import reader_settings
from netlang.errors import EXIT_DATA, ConfigError, DataError
from netlang.readers.factory import create_source
from netlang.readers.image import ImageDeserializer, build_image_deserializer
from netlang.readers.source import MinibatchSource
from netlang.readers.transforms import (
    Color,
    Crop,
    Intensity,
    Mean,
    Scale,
    Transpose,
    parse_transform,
    read_mean_file,
    write_mean_file,
)

# ---- helpers -----------------------------------------------------------------------------------

def rgb_image(seed: int, height: int = 12, width: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_png(path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path)


def image_set(tmp_path, count: int = 6, height: int = 12, width: int = 16) -> tuple[str, list]:
    """`count` PNGs and a map file `img<i>.png<TAB>i % 3` next to them; returns (map path, RGB arrays)."""
    pixels = [rgb_image(i, height, width) for i in range(count)]
    lines = []
    for i, p in enumerate(pixels):
        save_png(tmp_path / f"img{i}.png", p)
        lines.append(f"img{i}.png\t{i % 3}")
    map_path = tmp_path / "map.txt"
    map_path.write_text("\n".join(lines) + "\n")
    return str(map_path), pixels


def bgr(pixels: np.ndarray) -> np.ndarray:
    return pixels[:, :, ::-1].astype(np.float32)


def reader(map_path: str, transforms=(), label_dim: int = 3, **options) -> ImageDeserializer:
    return ImageDeserializer(map_path, list(transforms), label_dim, **options)


def all_samples(d: ImageDeserializer, sweep: int = 0) -> np.ndarray:
    return np.concatenate([d.read_chunk(c, sweep).streams["features"].values for c in range(d.num_chunks())])


RANDOM_CHAIN = (Crop("randomside", (0.5, 1.0), jitter="uniratio", hflip=True, aspect_ratio=(0.75, 1.0)),
                Scale(8, 8, 3, ("cubic", "linear", "nearest")), Color(0.3, 0.3, 0.3), Transpose())


# ---- map files ---------------------------------------------------------------------------------

def test_decoding_gives_hwc_in_bgr_order(tmp_path):
    map_path, pixels = image_set(tmp_path)
    np.testing.assert_array_equal(reader(map_path).sample(2), bgr(pixels[2]))


def test_relative_paths_are_resolved_against_the_map_files_directory(tmp_path):
    (tmp_path / "data" / "img").mkdir(parents=True)
    save_png(tmp_path / "data" / "img" / "a.png", rgb_image(1))
    (tmp_path / "data" / "map.txt").write_text("img/a.png\t0\n")
    np.testing.assert_array_equal(reader(str(tmp_path / "data" / "map.txt")).sample(0), bgr(rgb_image(1)))


def test_three_dots_stand_for_the_map_files_directory(tmp_path):
    (tmp_path / "data").mkdir()
    save_png(tmp_path / "data" / "a.png", rgb_image(1))
    (tmp_path / "data" / "map.txt").write_text(".../a.png\t0\n")
    np.testing.assert_array_equal(reader(str(tmp_path / "data" / "map.txt")).sample(0), bgr(rgb_image(1)))


def test_labels_become_one_hot_rows_of_label_dim(tmp_path):
    map_path, _ = image_set(tmp_path, count=4)
    labels = reader(map_path, label_dim=5).read_chunk(0).streams["labels"].values
    np.testing.assert_array_equal(labels, np.eye(5, dtype=np.float32)[[0, 1, 2, 0]])


def test_without_keys_sequences_are_numbered_in_file_order(tmp_path):
    map_path, _ = image_set(tmp_path, count=4)
    np.testing.assert_array_equal(reader(map_path).chunk_keys(0), [0, 1, 2, 3])


def test_a_leading_field_is_the_sequence_key(tmp_path):
    image_set(tmp_path, count=2)
    (tmp_path / "keyed.txt").write_text("17\timg0.png\t1\n5\timg1.png\t2\n")
    d = reader(str(tmp_path / "keyed.txt"))
    np.testing.assert_array_equal(d.chunk_keys(0), [17, 5])
    np.testing.assert_array_equal(d.read_chunk(0).streams["labels"].values.argmax(axis=1), [1, 2])


def test_chunks_split_the_images_and_keep_their_order(tmp_path):
    map_path, pixels = image_set(tmp_path, count=5)
    d = reader(map_path, images_per_chunk=2)
    assert d.num_chunks() == 3
    np.testing.assert_array_equal(all_samples(d), np.stack([bgr(p) for p in pixels]))


def test_a_zip_member_reads_like_the_file(tmp_path):
    map_path, pixels = image_set(tmp_path, count=3)
    with zipfile.ZipFile(tmp_path / "images.zip", "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(3):
            archive.write(tmp_path / f"img{i}.png", f"train/img{i}.png")
    (tmp_path / "zipmap.txt").write_text("".join(f"images.zip@/train/img{i}.png\t0\n" for i in range(3)))
    d = reader(str(tmp_path / "zipmap.txt"), num_threads=2)
    np.testing.assert_array_equal(all_samples(d), np.stack([bgr(p) for p in pixels]))
    d.close()


def test_base64_images_are_read_inline(tmp_path):
    image_set(tmp_path, count=2)
    lines = [f"{i}\t{i + 1}\t{base64.b64encode((tmp_path / f'img{i}.png').read_bytes()).decode()}\n" for i in range(2)]
    (tmp_path / "b64.txt").write_text("".join(lines))
    d = reader(str(tmp_path / "b64.txt"), inline_base64=True)
    np.testing.assert_array_equal(d.sample(1), bgr(rgb_image(1)))
    np.testing.assert_array_equal(d.read_chunk(0).streams["labels"].values.argmax(axis=1), [1, 2])


# ---- the exact pipeline ------------------------------------------------------------------------

def test_center_crop_scale_mean_transpose_give_exact_values(tmp_path):
    pixels = rgb_image(7, height=8, width=12)
    save_png(tmp_path / "a.png", pixels)
    (tmp_path / "map.txt").write_text("a.png\t0\n")
    mean = np.arange(8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3) / 4
    write_mean_file(str(tmp_path / "mean.xml"), mean)
    chain = [Crop("center", side_ratio=(0.5, 0.5)), Scale(8, 8, 3, ("nearest",)),
             Mean(read_mean_file(str(tmp_path / "mean.xml"))), Transpose()]
    out = reader(str(tmp_path / "map.txt"), chain).sample(0)
    # side = 0.5 * min(8, 12) = 4, centred at row 2, column 4; nearest 2x upscaling repeats each pixel
    window = bgr(pixels)[2:6, 4:8]
    expected = (window.repeat(2, axis=0).repeat(2, axis=1) - mean).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_transpose_gives_chw(tmp_path):
    map_path, pixels = image_set(tmp_path, count=1)
    d = reader(map_path, [Transpose()])
    assert d.stream_infos()[0].shape == (3, 12, 16)
    np.testing.assert_array_equal(d.sample(0), bgr(pixels[0]).transpose(2, 0, 1))


def test_transpose_must_be_the_last_transform(tmp_path):
    map_path, _ = image_set(tmp_path, count=1)
    with pytest.raises(ConfigError, match="Transpose must be the last"):
        reader(map_path, [Transpose(), Scale(4, 4, 3)])


# ---- Crop --------------------------------------------------------------------------------------

def _window_of(crop: np.ndarray, image: np.ndarray) -> tuple[int, int] | None:
    """Where `crop` sits in `image` (top, left), or None."""
    h, w = crop.shape[:2]
    for top in range(image.shape[0] - h + 1):
        for left in range(image.shape[1] - w + 1):
            if np.array_equal(image[top:top + h, left:left + w], crop):
                return top, left
    return None


def test_random_side_crops_are_squares_in_the_ratio_range_at_random_places():
    image = rgb_image(3, 20, 30)
    crop = Crop("randomside", (0.5, 1.0), jitter="uniratio")
    places, sides = set(), set()
    for seed in range(40):
        out = crop.apply(image, np.random.default_rng(seed), 0)
        assert out.shape[0] == out.shape[1] and 10 <= out.shape[0] <= 20
        places.add(_window_of(out, image))
        sides.add(out.shape[0])
    assert None not in places and len(places) > 10 and len(sides) > 3


def test_random_area_crops_have_the_area_and_aspect_ratio_asked_for():
    image = rgb_image(3, 40, 40)
    crop = Crop("randomarea", area_ratio=(0.25, 0.25), aspect_ratio=(0.5, 0.5))
    shapes = {crop.apply(image, np.random.default_rng(seed), 0).shape[:2] for seed in range(20)}
    # area 0.25 * 1600 = 400 = 20 x 20, stretched to aspect 1:2 at the same area: 14 x 28 either way
    assert shapes == {(14, 28), (28, 14)}


def test_hflip_mirrors_about_half_the_random_crops():
    image = rgb_image(4, 10, 10)
    crop = Crop("randomside", (1.0, 1.0), hflip=True)
    flipped = sum(np.array_equal(crop.apply(image, np.random.default_rng(s), 0), image[:, ::-1])
                  for s in range(200))
    assert 60 < flipped < 140


def test_without_randomization_a_random_crop_is_the_centre_crop_with_the_low_ratio():
    image = rgb_image(5, 20, 30)
    out = Crop("randomside", (0.5, 1.0), jitter="uniratio", hflip=True).apply(image, None, 0)
    np.testing.assert_array_equal(out, image[5:15, 10:20])


def test_multiview10_makes_ten_views_corners_centre_and_their_mirrors(tmp_path):
    map_path, pixels = image_set(tmp_path, count=2, height=8, width=10)
    d = reader(map_path, [Crop("multiview10", (0.5, 0.5))], randomize=False)
    assert d.num_sequences == 20
    np.testing.assert_array_equal(d.chunk_keys(0)[:12], np.arange(12))
    image = bgr(pixels[1])
    views = [d.sample(10 + v) for v in range(10)]
    corners = [image[0:4, 0:4], image[0:4, 6:10], image[4:8, 0:4], image[4:8, 6:10], image[2:6, 3:7]]
    for v in range(5):
        np.testing.assert_array_equal(views[v], corners[v])
        np.testing.assert_array_equal(views[v + 5], corners[v][:, ::-1])
    np.testing.assert_array_equal(d.read_chunk(0).streams["labels"].values[10:20].argmax(axis=1), [1] * 10)


# ---- Scale -------------------------------------------------------------------------------------

def test_scale_fill_stretches_to_the_target_size():
    out = Scale(5, 7, 3).apply(rgb_image(1, 12, 16), None, 0)
    assert out.shape == (7, 5, 3) and out.dtype == np.uint8


def test_scale_crop_scales_the_shorter_side_and_cuts_the_centre():
    image = rgb_image(2, 8, 16)
    out = Scale(4, 4, 3, ("nearest",), mode="crop").apply(image, None, 0)
    whole = np.asarray(Image.fromarray(image).resize((8, 4), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(out, whole[:, 2:6])


def test_scale_crop_and_pad_reach_a_target_of_another_aspect_ratio():
    image = rgb_image(2, 20, 10)
    for mode in ("crop", "pad"):
        assert Scale(8, 30, 3, mode=mode).apply(image, None, 0).shape == (30, 8, 3)


def test_scale_pad_centres_the_image_and_fills_with_the_pad_value():
    image = rgb_image(2, 4, 8)
    out = Scale(8, 8, 3, mode="pad", pad_value=7).apply(image, None, 0)
    assert out.shape == (8, 8, 3)
    assert (out[:2] == 7).all() and (out[6:] == 7).all()
    np.testing.assert_array_equal(out[2:6], image)


def test_scale_pad_value_minus_one_repeats_the_border():
    image = rgb_image(2, 4, 8)
    out = Scale(8, 8, 3, mode="pad").apply(image, None, 0)
    np.testing.assert_array_equal(out[0], image[0])
    np.testing.assert_array_equal(out[7], image[3])


def test_one_channel_scale_decodes_grey(tmp_path):
    map_path, pixels = image_set(tmp_path, count=1)
    out = reader(map_path, [Scale(16, 12, 1)]).sample(0)
    grey = np.asarray(Image.fromarray(pixels[0]).convert("L"), dtype=np.float32)
    np.testing.assert_array_equal(out[:, :, 0], grey)


def test_several_interpolations_are_chosen_at_random():
    image = rgb_image(3, 13, 17)
    scale = Scale(7, 5, 3, ("nearest", "lanczos"))
    results = {scale.apply(image, np.random.default_rng(s), 0).tobytes() for s in range(20)}
    assert len(results) == 2


# ---- Mean --------------------------------------------------------------------------------------

def test_a_mean_file_round_trips(tmp_path):
    mean = np.random.default_rng(0).uniform(0, 255, (4, 5, 3)).astype(np.float32)
    write_mean_file(str(tmp_path / "m.xml"), mean)
    np.testing.assert_allclose(read_mean_file(str(tmp_path / "m.xml")), mean, rtol=1e-6)


def test_a_mean_file_in_cntks_layout_is_read_as_hwc(tmp_path):
    (tmp_path / "m.xml").write_text(
        '<?xml version="1.0" ?>\n<opencv_storage>\n<Channel>3</Channel>\n<Row>1</Row>\n<Col>2</Col>\n'
        '<MeanImg type_id="opencv-matrix">\n<rows>1</rows>\n<cols>6</cols>\n<dt>f</dt>\n'
        '<data>1.0e+00 2.0e+00 3.0e+00\n 4.0e+00 5.0e+00 6.0e+00</data></MeanImg>\n</opencv_storage>\n')
    np.testing.assert_array_equal(read_mean_file(str(tmp_path / "m.xml")), [[[1, 2, 3], [4, 5, 6]]])


def test_a_mean_file_with_too_few_values_is_a_data_error(tmp_path):
    (tmp_path / "m.xml").write_text(
        '<opencv_storage><Channel>3</Channel><Row>2</Row><Col>2</Col><MeanImg type_id="opencv-matrix">'
        '<rows>1</rows><cols>12</cols><dt>f</dt><data>1 2 3</data></MeanImg></opencv_storage>')
    with pytest.raises(DataError, match="declares 1×12×1 values but holds 3"):
        read_mean_file(str(tmp_path / "m.xml"))


def test_a_mean_image_of_another_size_than_the_scale_is_a_config_error(tmp_path):
    map_path, _ = image_set(tmp_path, count=1)
    with pytest.raises(ConfigError, match="mean file"):
        reader(map_path, [Scale(8, 8, 3), Mean(np.zeros((4, 4, 3), np.float32), "m.xml")])


# ---- Color and Intensity -----------------------------------------------------------------------

def test_color_does_nothing_without_randomization():
    image = rgb_image(1)
    np.testing.assert_array_equal(Color(0.5, 0.5, 0.5).apply(image, None, 0), image)


def test_brightness_and_contrast_are_an_affine_change_within_the_radii():
    image = np.random.default_rng(1).uniform(60, 190, (10, 10, 3)).astype(np.float32)
    for seed in range(10):
        out = Color(0.2, 0.3).apply(image, np.random.default_rng(seed), 0)
        alpha, beta = np.polyfit(image.ravel(), out.ravel(), 1)
        assert 0.7 <= alpha <= 1.3 and abs(beta) <= 0.2 * image.mean() + 1e-3
        np.testing.assert_allclose(out, alpha * image + beta, atol=1e-3)


def test_saturation_matches_an_hsv_round_trip():
    image = np.random.default_rng(2).uniform(0, 255, (6, 6, 3)).astype(np.float32)
    image[0, 0] = 128                                      # a grey pixel stays grey
    ratios = []
    for seed in range(6):
        out = Color(saturation_radius=0.8).apply(image, np.random.default_rng(seed), 0)
        ratios.append(1 + np.random.default_rng(seed).uniform(-0.8, 0.8))
        for (y, x) in [(0, 0), (1, 2), (3, 4), (5, 5)]:
            h, s, v = colorsys.rgb_to_hsv(*(image[y, x] / 255))
            expected = np.array(colorsys.hsv_to_rgb(h, min(s * ratios[-1], 1.0), v)) * 255
            np.testing.assert_allclose(out[y, x], expected, atol=1e-3)
    assert min(ratios) < 1 < max(ratios)


def test_intensity_adds_one_shift_per_channel():
    image = np.full((4, 4, 3), 100, np.float32)
    image[0, 0] = (90, 110, 120)
    out = Intensity(0.5, np.array([10.0, 5.0, 1.0]), np.eye(3)).apply(image, np.random.default_rng(0), 0)
    shift = out - image
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-4)
    assert np.abs(shift[0, 0]).max() > 0


def test_a_color_record_with_an_intensity_file_adds_pca_lighting(tmp_path):
    (tmp_path / "eig.xml").write_text(
        '<opencv_storage><EigVal type_id="opencv-matrix"><rows>1</rows><cols>3</cols><dt>f</dt>'
        '<data>0.2 0.02 0.005</data></EigVal><EigVec type_id="opencv-matrix"><rows>3</rows><cols>3</cols>'
        '<dt>f</dt><data>-0.58 -0.81 0.09 -0.58 -0.01 -0.81 -0.58 0.59 0.58</data></EigVec></opencv_storage>')
    cfg = settings_of.transform({"type": "Color", "brightnessRadius": 0.1, "intensityFile": "eig.xml",
                                 "intensityStdDev": 0.1})
    color, intensity = parse_transform(cfg, str(tmp_path))
    assert isinstance(color, Color) and isinstance(intensity, Intensity)
    np.testing.assert_allclose(intensity.eigval, [0.2, 0.02, 0.005])
    assert intensity.eigvec[2, 1] == pytest.approx(0.59)


# ---- determinism -------------------------------------------------------------------------------

def test_the_same_seed_gives_the_same_samples(tmp_path):
    map_path, _ = image_set(tmp_path)
    a = all_samples(reader(map_path, RANDOM_CHAIN, seed=3, num_threads=2))
    b = all_samples(reader(map_path, RANDOM_CHAIN, seed=3, num_threads=2))
    np.testing.assert_array_equal(a, b)


def test_another_seed_gives_other_samples(tmp_path):
    map_path, _ = image_set(tmp_path)
    a = all_samples(reader(map_path, RANDOM_CHAIN, seed=3))
    b = all_samples(reader(map_path, RANDOM_CHAIN, seed=4))
    assert not np.array_equal(a, b)


def test_another_sweep_gives_other_samples(tmp_path):
    map_path, _ = image_set(tmp_path)
    d = reader(map_path, RANDOM_CHAIN, seed=3)
    assert not np.array_equal(all_samples(d, sweep=0), all_samples(d, sweep=1))


def test_samples_do_not_depend_on_threads_or_chunking(tmp_path):
    map_path, _ = image_set(tmp_path, count=7)
    serial = all_samples(reader(map_path, RANDOM_CHAIN, seed=1, num_threads=1, images_per_chunk=7))
    threaded = all_samples(reader(map_path, RANDOM_CHAIN, seed=1, num_threads=2, images_per_chunk=3))
    np.testing.assert_array_equal(serial, threaded)


def test_without_randomization_the_seed_does_not_matter(tmp_path):
    map_path, _ = image_set(tmp_path)
    a = all_samples(reader(map_path, RANDOM_CHAIN, seed=3, randomize=False))
    b = all_samples(reader(map_path, RANDOM_CHAIN, seed=4, randomize=False))
    np.testing.assert_array_equal(a, b)


def test_a_random_chain_makes_the_data_depend_on_the_sweep(tmp_path):
    map_path, _ = image_set(tmp_path, count=1)
    assert reader(map_path, RANDOM_CHAIN).sweep_dependent
    assert not reader(map_path, RANDOM_CHAIN, randomize=False).sweep_dependent
    assert not reader(map_path, [Crop("center", (0.5, 0.5)), Scale(4, 4, 3), Transpose()]).sweep_dependent


# ---- errors ------------------------------------------------------------------------------------

def _error(callable_) -> DataError:
    with pytest.raises(DataError) as info:
        callable_()
    assert info.value.exit_code == EXIT_DATA
    return info.value


def test_a_missing_image_names_the_map_line_and_the_path(tmp_path):
    map_path, _ = image_set(tmp_path, count=3)
    (tmp_path / "img2.png").unlink()
    err = _error(lambda: all_samples(reader(map_path, [Scale(4, 4, 3)], num_threads=2)))
    assert (err.position.file, err.position.line) == (map_path, 3)
    assert "img2.png" in err.message


def test_of_several_bad_images_the_first_in_map_order_is_reported(tmp_path):
    map_path, _ = image_set(tmp_path, count=6)
    for i in (2, 4):
        (tmp_path / f"img{i}.png").unlink()
    for _ in range(3):
        assert _error(lambda: all_samples(reader(map_path, num_threads=3))).position.line == 3


def test_a_corrupt_png_names_the_map_line_and_the_path(tmp_path):
    map_path, _ = image_set(tmp_path, count=3)
    data = (tmp_path / "img1.png").read_bytes()
    (tmp_path / "img1.png").write_bytes(data[:len(data) // 2])
    err = _error(lambda: all_samples(reader(map_path, [Scale(4, 4, 3)])))
    assert (err.position.line, "img1.png" in err.message) == (2, True)
    assert "cannot decode" in err.message


def test_a_map_line_without_a_tab_is_a_data_error_at_its_line(tmp_path):
    image_set(tmp_path, count=2)
    (tmp_path / "bad.txt").write_text("img0.png\t0\nimg1.png 1\n")
    err = _error(lambda: reader(str(tmp_path / "bad.txt")))
    assert (err.position.file, err.position.line) == (str(tmp_path / "bad.txt"), 2)


def test_a_label_that_is_not_a_whole_number_is_a_data_error_at_its_column(tmp_path):
    image_set(tmp_path, count=2)
    (tmp_path / "bad.txt").write_text("img0.png\t0\nimg1.png\tcat\n")
    err = _error(lambda: reader(str(tmp_path / "bad.txt")))
    assert (err.position.line, err.position.col) == (2, 10)
    assert "'cat'" in err.message


def test_a_label_not_below_label_dim_is_a_data_error(tmp_path):
    map_path, _ = image_set(tmp_path, count=3)
    err = _error(lambda: reader(map_path, label_dim=2))
    assert err.position.line == 3 and "labelDim = 2" in err.message


def test_a_missing_zip_member_is_a_data_error_with_a_suggestion(tmp_path):
    image_set(tmp_path, count=1)
    with zipfile.ZipFile(tmp_path / "a.zip", "w", compression=zipfile.ZIP_STORED) as archive:
        archive.write(tmp_path / "img0.png", "imgs/img0.png")
    (tmp_path / "zipmap.txt").write_text("a.zip@/imgs/img0.png\t0\na.zip@/imgs/img1.png\t1\n")
    err = _error(lambda: all_samples(reader(str(tmp_path / "zipmap.txt"))))
    assert err.position.line == 2 and "no member 'imgs/img1.png'" in err.message
    assert "imgs/img0.png" in err.hint


def test_a_missing_map_file_is_a_data_error(tmp_path):
    err = _error(lambda: reader(str(tmp_path / "nope.txt")))
    assert "cannot open the map file" in err.message


def test_repeated_sequence_keys_are_a_data_error(tmp_path):
    image_set(tmp_path, count=2)
    (tmp_path / "keyed.txt").write_text("4\timg0.png\t0\n4\timg1.png\t1\n")
    assert _error(lambda: reader(str(tmp_path / "keyed.txt"))).position.line == 2


def test_an_unknown_transform_type_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean 'Scale'"):
        parse_transform(settings_of.transform({"type": "Scael"}), ".")


def test_an_unknown_transform_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean 'sideRatio'"):
        parse_transform(settings_of.transform({"type": "Crop", "sideRatoi": 0.5}), ".")


def test_an_image_of_another_size_without_a_final_scale_is_a_data_error(tmp_path):
    save_png(tmp_path / "a.png", rgb_image(1, 8, 8))
    save_png(tmp_path / "b.png", rgb_image(2, 9, 8))
    (tmp_path / "map.txt").write_text("a.png\t0\nb.png\t0\n")
    err = _error(lambda: reader(str(tmp_path / "map.txt")).sample(1))
    assert err.position.line == 2 and "Scale" in err.hint


# ---- per-sequence reading through the minibatch source -----------------------------------------

class ChunkWise:
    """An image deserializer without `read_sequences`: the source falls back to reading whole chunks."""

    def __init__(self, inner: ImageDeserializer):
        self.inner, self.description = inner, inner.description

    def __getattr__(self, name):
        if name == "read_sequences":
            raise AttributeError(name)
        return getattr(self.inner, name)


class WatchedImages(ImageDeserializer):
    """Counts the decodes of each image and the decoded images still alive in the data it handed out."""

    def __init__(self, *args, **options):
        super().__init__(*args, **options)
        self.decodes: Counter = Counter()
        self.peak_held = 0
        self._handed_out: list = []
        self._lock = threading.Lock()

    def _decode(self, entry: int) -> np.ndarray:
        with self._lock:
            self.decodes[entry] += 1
        return super()._decode(entry)

    def read_chunk(self, chunk: int, sweep: int = 0):
        return self._watch(super().read_chunk(chunk, sweep))

    def read_sequences(self, chunks, positions, sweep: int = 0):
        return self._watch(super().read_sequences(chunks, positions, sweep))

    def held(self) -> int:
        return sum(len(data.valid) for data in (ref() for ref in self._handed_out) if data is not None)

    def _watch(self, data):
        self._handed_out.append(weakref.ref(data))
        self.peak_held = max(self.peak_held, self.held())
        return data


def read_epochs(src: MinibatchSource, sizes: list[int], epochs: int) -> list[tuple]:
    """(epoch, keys, features, labels, end_of_epoch) of every minibatch of `epochs` epochs, sizes in turn."""
    out = []
    for _ in range(epochs):
        while True:
            mb = src.next_minibatch(sizes[len(out) % len(sizes)])
            out.append((mb.epoch, mb.keys, mb["features"].to_dense_batch(), mb["labels"].to_dense_batch(),
                        mb.end_of_epoch))
            if mb.end_of_epoch:
                break
    return out


@pytest.mark.parametrize("options", [
    {"seed": 5},                                           # one window: the whole data set
    {"seed": 2, "randomization_window": 2, "epoch_size": 23},
    {"randomize": False, "epoch_size": 17},
])
def test_reading_per_sequence_gives_the_minibatches_of_reading_whole_chunks(tmp_path, options):
    map_path, _ = image_set(tmp_path, count=40)

    def source(per_sequence: bool) -> MinibatchSource:
        d = reader(map_path, RANDOM_CHAIN, seed=options.get("seed", 0), randomize=options.get("randomize", True),
                   num_threads=2, images_per_chunk=6)
        return MinibatchSource([d if per_sequence else ChunkWise(d)], **options)

    lazy, whole = read_epochs(source(True), [7, 3, 11], 4), read_epochs(source(False), [7, 3, 11], 4)
    assert len(lazy) == len(whole) >= 8
    for (e1, k1, x1, y1, end1), (e2, k2, x2, y2, end2) in zip(lazy, whole):
        assert (e1, k1, end1) == (e2, k2, end2)
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_a_sweep_decodes_each_image_once_and_holds_only_the_minibatch(tmp_path):
    for i in range(300):
        save_png(tmp_path / f"t{i}.png", rgb_image(i, 4, 4))
    (tmp_path / "map.txt").write_text("".join(f"t{i}.png\t{i % 3}\n" for i in range(300)))
    chain = [Crop("randomside", (0.5, 1.0), hflip=True), Scale(4, 4, 3), Transpose()]

    def sweeps(per_sequence: bool, count: int) -> WatchedImages:
        d = WatchedImages(str(tmp_path / "map.txt"), chain, 3, seed=1, num_threads=1, images_per_chunk=16)
        src = MinibatchSource([d if per_sequence else ChunkWise(d)], seed=1)   # window: the whole data set
        for _ in range(count):
            while not src.next_minibatch(10).end_of_epoch:
                pass
        return d

    lazy = sweeps(True, 2)
    assert set(lazy.decodes) == set(range(300)) and set(lazy.decodes.values()) == {2}
    assert lazy.peak_held <= 2 * 10
    # What the per-sequence path avoids: whole chunks are cached for the window, i.e. every image.
    assert sweeps(False, 1).peak_held == 300


def test_through_the_source_a_missing_image_names_its_map_line_and_path(tmp_path):
    map_path, _ = image_set(tmp_path, count=12)
    (tmp_path / "img7.png").unlink()
    src = MinibatchSource([reader(map_path, [Scale(4, 4, 3)], num_threads=2)], seed=3)
    err = _error(lambda: [src.next_minibatch(4) for _ in range(3)])
    assert (err.position.file, err.position.line) == (map_path, 8)
    assert "img7.png" in err.message


def test_through_the_source_a_corrupt_image_names_its_map_line_and_path(tmp_path):
    map_path, _ = image_set(tmp_path, count=12)
    data = (tmp_path / "img4.png").read_bytes()
    (tmp_path / "img4.png").write_bytes(data[:len(data) // 2])
    src = MinibatchSource([reader(map_path, [Scale(4, 4, 3)])], randomize=False)
    src.next_minibatch(4)                               # images 0-3 only: img4 is not decoded yet
    err = _error(lambda: src.next_minibatch(4))
    assert (err.position.line, "img4.png" in err.message, "cannot decode" in err.message) == (5, True, True)


def test_of_several_bad_images_in_a_minibatch_the_first_in_map_order_is_reported(tmp_path):
    map_path, _ = image_set(tmp_path, count=12)
    for i in (9, 3):
        (tmp_path / f"img{i}.png").unlink()
    for threads in (1, 3):
        src = MinibatchSource([reader(map_path, num_threads=threads)], seed=4)
        assert _error(lambda: src.next_minibatch(12)).position.line == 4


def test_a_minibatch_that_failed_is_read_again_on_retry(tmp_path):
    map_path, _ = image_set(tmp_path, count=8)
    reference = MinibatchSource([reader(map_path)], seed=6)
    expected = [reference.next_minibatch(3).keys for _ in range(3)]
    failing = next(i for i, keys in enumerate(expected) if 5 in keys)
    data = (tmp_path / "img5.png").read_bytes()
    (tmp_path / "img5.png").unlink()
    src = MinibatchSource([reader(map_path)], seed=6)
    assert [src.next_minibatch(3).keys for _ in range(failing)] == expected[:failing]
    _error(lambda: src.next_minibatch(3))
    (tmp_path / "img5.png").write_bytes(data)
    assert src.next_minibatch(3).keys == expected[failing]


# ---- config blocks and the factory -------------------------------------------------------------

def test_the_legacy_image_reader_block_builds_a_source(tmp_path):
    image_set(tmp_path, count=6)
    cfg = {"readerType": "ImageReader", "file": "map.txt", "randomize": False,
           "features": {"width": 8, "height": 6, "channels": 3, "cropType": "Center", "cropRatio": 0.75},
           "labels": {"labelDim": 3}}
    src = create_source(settings_of.reader(cfg), str(tmp_path))
    assert src.stream_infos() == {"features": (3 * 6 * 8, False), "labels": (3, False)}
    mb = src.next_minibatch(4)
    assert mb["features"].to_dense_batch().shape == (4, 3, 6, 8)     # the legacy reader delivers C×H×W
    np.testing.assert_array_equal(mb["labels"].to_dense_batch().argmax(axis=1), [0, 1, 2, 0])


def test_the_composite_deserializers_form_builds_a_source(tmp_path):
    image_set(tmp_path, count=6)
    write_mean_file(str(tmp_path / "mean.xml"), np.full((4, 4, 3), 100, np.float32))
    transforms = [{"type": "Crop", "cropType": "RandomSide", "sideRatio": "0.5:1.0", "jitterType": "UniRatio"},
                  {"type": "Scale", "width": 4, "height": 4, "channels": 3, "interpolations": "cubic:linear"},
                  {"type": "Color", "brightnessRadius": 0.2, "contrastRadius": 0.2, "saturationRadius": 0.2},
                  {"type": "Mean", "meanFile": "mean.xml"}, {"type": "Transpose"}]
    cfg = {"randomizationSeed": 2, "deserializers": [{
        "type": "ImageDeserializer", "module": "ImageReader", "file": "map.txt",
        "input": {"image": {"transforms": transforms}, "label": {"labelDim": 3}}}]}
    src = create_source(settings_of.reader(cfg), str(tmp_path), streams_wanted={"image": (3, 4, 4), "label": 3})
    mb = src.next_minibatch(6)
    x = mb["image"].to_dense_batch()
    assert x.shape == (6, 3, 4, 4) and x.min() >= -100 and x.max() <= 155
    assert mb["label"].to_dense_batch().sum() == 6


def test_legacy_width_height_channels_must_agree_with_its_transforms(tmp_path):
    image_set(tmp_path, count=1)
    cfg = settings_of.deserializer({"file": "map.txt", "features": {"width": 8, "height": 8, "channels": 3,
                                                                    "transforms": [{"type": "Scale", "width": 4,
                                                                                    "height": 4, "channels": 3}]},
                                    "labels": {"labelDim": 3}})
    with pytest.raises(ConfigError, match="declare"):
        build_image_deserializer(cfg, str(tmp_path), np.float32)


def test_a_transform_chain_the_reader_cannot_run_is_reported_at_the_stream(tmp_path):
    image_set(tmp_path, count=2)
    cfg = {"deserializers": [{"type": "ImageDeserializer", "file": "map.txt", "input": {
        "features": {"transforms": [{"type": "Transpose"}, {"type": "Scale", "width": 4, "height": 4,
                                                            "channels": 3}]},
        "labels": {"labelDim": 3}}}]}
    with pytest.raises(ConfigError, match="Transpose must be the last") as err:
        create_source(settings_of.reader(cfg), str(tmp_path))
    assert err.value.span is not None and err.value.key.endswith("input.features.transforms")


def test_an_image_reader_needs_a_label_stream(tmp_path):
    image_set(tmp_path, count=1)
    cfg = settings_of.deserializer({"file": "map.txt", "input": {"features": {}}})
    with pytest.raises(ConfigError, match="one image stream and one label stream"):
        build_image_deserializer(cfg, str(tmp_path), np.float32)


def test_a_net_file_with_image_readers_validates_and_builds(tmp_path):
    from netlang.compiler.graph import load_config

    image_set(tmp_path, count=4)
    (tmp_path / "img.net").write_text("""
command = train
train = {
    action = "train" ; modelPath = "m.dnn"
    network = { f = Input{8:8:3} }
    SGD = { minibatchSize = 4 ; learningRatesPerMB = 0.1 ; maxEpochs = 1 }
    reader = { randomize = false ; deserializers = ( {
        type = "ImageDeserializer" ; module = "ImageReader" ; file = "map.txt"
        input = {
            features = { transforms = (
                { type = "Crop" ; cropType = "RandomSide" ; sideRatio = 0.5:1.0 ; jitterType = "UniRatio" } :
                { type = "Scale" ; width = 8 ; height = 8 ; channels = 3 ; interpolations = "cubic:linear" } :
                { type = "Transpose" } ) }
            labels = { labelDim = 3 }
        } } ) }
    cvReader = { readerType = "ImageReader" ; file = "map.txt"
        features = { width = 8 ; height = 8 ; channels = 3 ; cropType = "Random" ; cropRatio = 0.8 }
        labels = { labelDim = 3 } }
}
""")
    action = load_config(str(tmp_path / "img.net")).action("train")
    for block in (action.reader, action.cvReader):
        src = create_source(reader_settings(block), str(tmp_path))
        assert src.next_minibatch(4)["features"].to_dense_batch().shape == (4, 3, 8, 8)
