"""Data preparation: IDX files, MNIST/Fashion-MNIST to CTF + PNG, the synthetic set, `netlang data`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from netlang.cli import main
from netlang.datasets.idx import read_idx, write_idx
from netlang.datasets.mnist import prepare_mnist
from netlang.datasets.synthetic import prepare_synthetic
from netlang.errors import EXIT_DATA, DataError
from netlang.readers.ctf import CtfDeserializer, CtfStream

MNIST_STREAMS = [CtfStream("features", 784), CtfStream("labels", 10)]


def shared_data_dir() -> Path | None:
    for candidate in (os.environ.get("NETLANG_DATA"), Path(__file__).resolve().parents[1] / "../shared/data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate).resolve()
    return None


def fake_mnist(directory: Path, train: int = 12, test: int = 5, compress: bool = True):
    """A tiny MNIST-layout IDX set; returns {split: (images, labels)}."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    splits = {}
    for split, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        images[:, :4] = 0                      # short and long numbers both appear
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(str(directory / f"{split}-images-idx3-ubyte{suffix}"), images, compress=compress)
        write_idx(str(directory / f"{split}-labels-idx1-ubyte{suffix}"), labels, compress=compress)
        splits[split] = (images, labels)
    return splits


def reference_line(image: np.ndarray, label: int) -> str:
    one_hot = " ".join("1" if k == label else "0" for k in range(10))
    return f"|labels {one_hot} |features " + " ".join(str(int(v)) for v in image.ravel())


# ---- IDX ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trips(tmp_path, compress):
    array = np.arange(60, dtype=np.int32).reshape(3, 4, 5) - 7
    write_idx(str(tmp_path / "a.idx"), array, compress=compress)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "a.idx")), array)


def test_a_truncated_idx_file_is_a_data_error(tmp_path):
    write_idx(str(tmp_path / "a.idx"), np.zeros((4, 3), np.uint8))
    (tmp_path / "a.idx").write_bytes((tmp_path / "a.idx").read_bytes()[:-2])
    with pytest.raises(DataError, match="header promises 12"):
        read_idx(str(tmp_path / "a.idx"))


def test_a_file_that_is_not_idx_is_a_data_error(tmp_path):
    (tmp_path / "a.idx").write_text("hello")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(str(tmp_path / "a.idx"))


# ---- MNIST preparation -------------------------------------------------------------------------

def test_mnist_ctf_lines_are_one_hot_labels_then_pixels(tmp_path):
    splits = fake_mnist(tmp_path / "src")
    prepare_mnist(str(tmp_path / "src"), str(tmp_path / "out"), pngs=False)
    for split, name in (("train", "Train-28x28_cntk_text.txt"), ("t10k", "Test-28x28_cntk_text.txt")):
        images, labels = splits[split]
        lines = (tmp_path / "out" / name).read_text().splitlines()
        assert lines == [reference_line(im, lab) for im, lab in zip(images, labels)]


def test_prepared_mnist_reads_back_through_the_ctf_reader(tmp_path):
    splits = fake_mnist(tmp_path / "src", compress=False)
    prepare_mnist(str(tmp_path / "src"), str(tmp_path / "out"), pngs=False)
    d = CtfDeserializer(str(tmp_path / "out" / "Test-28x28_cntk_text.txt"), MNIST_STREAMS)
    data = d.read_chunk(0)
    images, labels = splits["t10k"]
    np.testing.assert_array_equal(data.streams["features"].values, images.reshape(len(images), -1))
    np.testing.assert_array_equal(data.streams["labels"].values.argmax(axis=1), labels)


def test_mnist_pngs_and_map_files_match_the_images(tmp_path):
    from PIL import Image

    splits = fake_mnist(tmp_path / "src")
    prepare_mnist(str(tmp_path / "src"), str(tmp_path / "out"))
    entries = [line.split("\t") for line in (tmp_path / "out" / "test_map.txt").read_text().splitlines()]
    images, labels = splits["t10k"]
    assert [int(label) for _, label in entries] == labels.tolist()
    for (rel, _), image in zip(entries, images):
        assert not os.path.isabs(rel)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / rel)), image)
    assert len((tmp_path / "out" / "train_map.txt").read_text().splitlines()) == 12


def test_missing_idx_files_are_a_data_error_and_nothing_is_written(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        prepare_mnist(str(tmp_path / "src"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def _check_real_split(source: Path, out: Path, count: int) -> None:
    images = read_idx(str(source / "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(str(source / "t10k-labels-idx1-ubyte.gz"))
    with open(out / "Test-28x28_cntk_text.txt") as fh:
        lines = fh.read().splitlines()
    assert len(lines) == count
    for i in (0, 1234, count - 1):
        assert lines[i] == reference_line(images[i], int(labels[i]))


@pytest.mark.parametrize("dataset", ["mnist", pytest.param("fashion-mnist", marks=pytest.mark.slow)])
def test_real_dataset_preparation(tmp_path, dataset):
    data = shared_data_dir()
    if data is None or not (data / dataset).is_dir():
        pytest.skip(f"no {dataset} IDX files (set NETLANG_DATA)")
    counts = prepare_mnist(str(data / dataset), str(tmp_path), pngs=False)
    assert counts == {"Train-28x28_cntk_text.txt": 60000, "Test-28x28_cntk_text.txt": 10000}
    _check_real_split(data / dataset, tmp_path, 10000)


@pytest.mark.slow
def test_real_mnist_with_pngs(tmp_path):
    data = shared_data_dir()
    if data is None or not (data / "mnist").is_dir():
        pytest.skip("no MNIST IDX files (set NETLANG_DATA)")
    prepare_mnist(str(data / "mnist"), str(tmp_path))
    assert len((tmp_path / "train_map.txt").read_text().splitlines()) == 60000
    assert len(list((tmp_path / "test").iterdir())) == 10000


# ---- synthetic ---------------------------------------------------------------------------------

def test_synthetic_data_is_the_same_for_the_same_seed(tmp_path):
    prepare_synthetic(str(tmp_path / "a"), seed=5, classes=4, dim=6, samples=300)
    prepare_synthetic(str(tmp_path / "b"), seed=5, classes=4, dim=6, samples=300)
    for name in ("Train_cntk_text.txt", "Test_cntk_text.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_synthetic_data_differs_across_seeds(tmp_path):
    prepare_synthetic(str(tmp_path / "a"), seed=1, samples=300)
    prepare_synthetic(str(tmp_path / "b"), seed=2, samples=300)
    first, second = (tmp_path / "a" / "Train_cntk_text.txt"), (tmp_path / "b" / "Train_cntk_text.txt")
    assert first.read_bytes() != second.read_bytes()


def test_synthetic_data_reads_as_ctf_with_the_requested_shape(tmp_path):
    prepare_synthetic(str(tmp_path), seed=0, classes=5, dim=7, samples=400)
    d = CtfDeserializer(str(tmp_path / "Train_cntk_text.txt"), [CtfStream("features", 7), CtfStream("labels", 5)])
    labels = d.read_chunk(0).streams["labels"].values
    assert labels.shape == (400, 5) and (labels.sum(axis=1) == 1).all()
    assert len(np.unique(labels.argmax(axis=1))) == 5


def test_synthetic_classes_are_learnable(tmp_path):
    prepare_synthetic(str(tmp_path), seed=0, classes=3, dim=2, samples=1500)
    streams = [CtfStream("features", 2), CtfStream("labels", 3)]

    def load(name):
        data = CtfDeserializer(str(tmp_path / name), streams).read_chunk(0).streams
        return data["features"].values, data["labels"].values.argmax(axis=1)

    x, y = load("Train_cntk_text.txt")
    centroids = np.stack([x[y == k].mean(axis=0) for k in range(3)])
    tx, ty = load("Test_cntk_text.txt")
    predicted = np.argmin(((tx[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert 0.6 < (predicted == ty).mean() < 1.0     # learnable, not trivial


# ---- the command -------------------------------------------------------------------------------

def test_data_prepare_synthetic_command_writes_the_files(tmp_path, capsys):
    code = main(["data", "prepare", "synthetic", "--out", str(tmp_path), "--seed", "3", "--classes", "4",
                 "--dim", "5", "--samples", "200"])
    assert code == 0
    first = (tmp_path / "Train_cntk_text.txt").read_text().splitlines()[0]
    assert first.startswith("|features ") and len(first.split("|labels ")[1].split()) == 4
    assert "Train_cntk_text.txt" in capsys.readouterr().out


def test_data_prepare_mnist_command_on_fake_idx_files(tmp_path):
    fake_mnist(tmp_path / "src")
    assert main(["data", "prepare", "fashion-mnist", "--source", str(tmp_path / "src"),
                 "--out", str(tmp_path / "out"), "--no-png"]) == 0
    assert (tmp_path / "out" / "Train-28x28_cntk_text.txt").exists()
    assert not (tmp_path / "out" / "train_map.txt").exists()


def test_data_prepare_mnist_command_without_source_files_exits_65(tmp_path):
    assert main(["data", "prepare", "mnist", "--source", str(tmp_path), "--out", str(tmp_path / "o")]) == EXIT_DATA
