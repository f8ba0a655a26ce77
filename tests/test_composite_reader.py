"""The composite reader of Fast R-CNN: two CTF files (regions, per-region labels) and an image map
file, none with sequence keys, joined by sequence index (reference §5.5)."""
from __future__ import annotations

import numpy as np
import pytest
import settings_of
from PIL import Image

from netlang.errors import DataError
from netlang.readers.factory import create_source

COUNT = 7


def detection_files(tmp_path, label_lines: int = COUNT):
    """Image i is filled with the value 10·i; its regions are `i i i i`, its label one-hot at i % 3."""
    lines = []
    for i in range(COUNT):
        Image.fromarray(np.full((4, 4, 3), 10 * i, dtype=np.uint8)).save(tmp_path / f"img{i}.png")
        lines.append(f"img{i}.png\t0")
    (tmp_path / "map.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "rois.txt").write_text("".join(f"|rois {i} {i} {i} {i}\n" for i in range(COUNT)))
    (tmp_path / "labels.txt").write_text("".join(f"|roiLabels {' '.join('1' if c == i % 3 else '0' for c in range(3))}\n"
                                                 for i in range(label_lines)))


def composite(randomize: bool):
    return settings_of.reader(f"""
        randomize = {'true' if randomize else 'false'}
        deserializers = (
            {{ type = "CNTKTextFormatDeserializer" ; module = "CNTKTextFormatReader" ; file = "rois.txt"
              input = {{ rois = {{ dim = 4 ; format = "dense" }} }} }} :
            {{ type = "CNTKTextFormatDeserializer" ; module = "CNTKTextFormatReader" ; file = "labels.txt"
              input = {{ roiLabels = {{ dim = 3 ; format = "dense" }} }} }} :
            {{ type = "ImageDeserializer" ; module = "ImageReader" ; file = "map.txt"
              input = {{ features = {{ transforms = ( {{ type = "Scale" ; width = 4 ; height = 4 ; channels = 3 }} :
                                                     {{ type = "Transpose" }} ) }}
                        ignored = {{ labelDim = 1 }} }} }})""")


@pytest.mark.parametrize("randomize", [False, True])
def test_ctf_ctf_and_image_are_joined_by_sequence_index(tmp_path, randomize):
    detection_files(tmp_path)
    source = create_source(composite(randomize), str(tmp_path))
    minibatch = source.next_minibatch(COUNT)
    images = minibatch["features"].to_dense_batch()[:, 0, 0, 0] / 10
    rois = minibatch["rois"].to_dense_batch()[:, 0]
    labels = minibatch["roiLabels"].to_dense_batch().argmax(axis=1)
    assert sorted(images.tolist()) == list(range(COUNT))
    np.testing.assert_array_equal(rois, images)
    np.testing.assert_array_equal(labels, images % 3)


def test_files_joined_by_index_with_different_counts_are_an_error_naming_each(tmp_path):
    detection_files(tmp_path, label_lines=COUNT - 1)
    with pytest.raises(DataError, match=r"different numbers of sequences \(.*rois.txt: 7, .*labels.txt: 6, "
                                        r"image map file .*map.txt: 7\)") as info:
        create_source(composite(False), str(tmp_path))
    assert "labels.txt" in str(info.value).split(":")[0]          # the position is the short file
