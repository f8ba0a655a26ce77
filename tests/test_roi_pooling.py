"""ROIPooling against a direct NumPy reference (one loop per region, bin, channel), and its convention.

The registry's own checks (tests/test_op_registry.py) run the op's shape test and float64 gradient
check; here the values and the gradient routing are compared with a loop written from the
documented convention (netlang/ops/roi.py): regions x1 y1 x2 y2 in input-image pixels, rounded
after scaling, corners inclusive, bins floor/ceil, clipped to the map, empty bins 0.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from netlang.api import load_text
from netlang.ops import registry
from netlang.ops.registry import OpContext
from netlang.runtime.backend import NumpyBackend


def reference(maps, rois, grid_w, grid_h, scale, gy=None):
    """(pooled (B, R, C, h, w), gradient of sum(pooled · gy) w.r.t. maps) by direct loops."""
    batch, channels, height, width = maps.shape
    regions = rois.shape[1]
    out = np.zeros((batch, regions, channels, grid_h, grid_w))
    grad = np.zeros(maps.shape)
    for b in range(batch):
        for r in range(regions):
            x1, y1, x2, y2 = rois[b, r]
            left, top = math.floor(x1 * scale + 0.5), math.floor(y1 * scale + 0.5)
            right, bottom = math.floor(x2 * scale + 0.5), math.floor(y2 * scale + 0.5)
            roi_w, roi_h = max(right - left + 1, 1), max(bottom - top + 1, 1)
            for ph in range(grid_h):
                h0 = min(max(math.floor(ph * roi_h / grid_h) + top, 0), height)
                h1 = min(max(math.ceil((ph + 1) * roi_h / grid_h) + top, 0), height)
                for pw in range(grid_w):
                    w0 = min(max(math.floor(pw * roi_w / grid_w) + left, 0), width)
                    w1 = min(max(math.ceil((pw + 1) * roi_w / grid_w) + left, 0), width)
                    if h1 <= h0 or w1 <= w0:
                        continue
                    for c in range(channels):
                        window = maps[b, c, h0:h1, w0:w1]
                        out[b, r, c, ph, pw] = window.max()
                        i, j = np.unravel_index(np.argmax(window), window.shape)   # first maximum, row-major
                        if gy is not None:
                            grad[b, c, h0 + i, w0 + j] += gy[b, r, c, ph, pw]
    return out, grad


def run_op(maps, rois, attrs, gy):
    """The op's forward and backward through the registry, as the executor drives them."""
    op = registry.get("ROIPooling")
    ctx = OpContext(backend=NumpyBackend(np.float64), dyn=[1, 1], out_dyn=1)
    y = registry.apply_forward(op, ctx, [maps, rois], attrs, 4)
    grads = registry.apply_backward(op, ctx, [maps, rois], y, gy, attrs, 4)
    return y, grads


def random_boxes(rng, batch, regions, size):
    corners = rng.uniform(-3, size + 3, (batch, regions, 2, 2))
    low, high = corners.min(axis=2), corners.max(axis=2)
    return np.concatenate([low, high], axis=-1)          # x1 y1 x2 y2


@pytest.mark.parametrize("grid,scale", [((2, 2), 1.0), ((3, 2), 0.5), ((4, 4), 0.25), ((7, 5), 0.125)])
def test_forward_and_backward_match_the_reference(grid, scale):
    rng = np.random.default_rng(7)
    maps = rng.normal(size=(3, 4, 9, 11))
    rois = random_boxes(rng, 3, 6, 11 / scale)
    gy = rng.normal(size=(3, 6, 4, grid[1], grid[0]))
    attrs = {"roiOutputShape": grid, "spatialScale": scale}
    y, (g_maps, g_rois) = run_op(maps, rois, attrs, gy)
    want, want_grad = reference(maps, rois, grid[0], grid[1], scale, gy)
    np.testing.assert_allclose(y, want, rtol=0, atol=0)
    np.testing.assert_allclose(g_maps, want_grad, rtol=1e-12, atol=1e-12)
    assert g_rois is None


def test_a_region_is_split_into_bins_of_the_grid():
    maps = np.arange(16.0).reshape(1, 1, 4, 4)                      # value = 4·y + x
    rois = np.array([[[0, 0, 3, 3], [1, 0, 2, 3]]], dtype=float)
    y, _ = run_op(maps, rois, {"roiOutputShape": (2, 2), "spatialScale": 1.0}, np.ones((1, 2, 1, 2, 2)))
    np.testing.assert_array_equal(y[0, 0, 0], [[5, 7], [13, 15]])   # the four quadrants' maxima
    np.testing.assert_array_equal(y[0, 1, 0], [[5, 6], [13, 14]])   # columns 1 and 2 only


def test_coordinates_are_scaled_onto_the_feature_map_and_rounded():
    maps = np.arange(16.0).reshape(1, 1, 4, 4)
    # Pixels 5..10 of a 16-pixel image at scale 1/4: cells round(1.25)=1 to round(2.5)=3.
    rois = np.array([[[5, 5, 10, 10]]], dtype=float)
    y, _ = run_op(maps, rois, {"roiOutputShape": (1, 1), "spatialScale": 0.25}, np.ones((1, 1, 1, 1, 1)))
    assert y[0, 0, 0, 0, 0] == 15.0


def test_a_degenerate_box_pools_one_cell():
    maps = np.arange(16.0).reshape(1, 1, 4, 4)
    rois = np.array([[[2, 1, 0, 0]]], dtype=float)                  # x2 < x1, y2 < y1: one cell at (x=2, y=1)
    y, _ = run_op(maps, rois, {"roiOutputShape": (2, 2), "spatialScale": 1.0}, np.ones((1, 1, 1, 2, 2)))
    np.testing.assert_array_equal(y[0, 0, 0], [[6, 6], [6, 6]])


def test_bins_outside_the_map_are_zero_and_get_no_gradient():
    maps = np.full((1, 1, 4, 4), -5.0)
    rois = np.array([[[10, 10, 20, 20]]], dtype=float)
    y, (g_maps, _) = run_op(maps, rois, {"roiOutputShape": (2, 2), "spatialScale": 1.0}, np.ones((1, 1, 1, 2, 2)))
    assert not y.any() and not g_maps.any()


def test_the_gradient_goes_to_the_first_maximum_of_a_bin():
    maps = np.zeros((1, 1, 2, 2))
    rois = np.array([[[0, 0, 1, 1]]], dtype=float)
    _, (g_maps, _) = run_op(maps, rois, {"roiOutputShape": (1, 1), "spatialScale": 1.0}, np.ones((1, 1, 1, 1, 1)))
    np.testing.assert_array_equal(g_maps[0, 0], [[1, 0], [0, 0]])


def test_a_network_pools_regions_of_a_convolution_and_trains_through_it():
    runner = load_text("""
        features = Input {8:8:1}
        rois = Input {4:2}
        labels = Input {3:2}
        conv = ConvolutionalLayer {2, (3:3), pad=true, activation=ReLU} (features)
        pooled = ROIPooling (conv, rois, (2:2), spatialScale=1)
        W = ParameterTensor {(3:2:2:2), init='uniform'}
        z = Times (W, pooled, outputRank=1)
        ce = CrossEntropyWithSoftmax (labels, z, axis=1)
        criterionNodes = (ce)""")
    assert runner.node("pooled").shape == (2, 2, 2, 2) and runner.node("z").shape == (3, 2)
    rng = np.random.default_rng(0)
    feeds = {"features": rng.uniform(0, 1, (2, 1, 8, 8)),
             "rois": np.array([[[0, 0, 3, 3], [4, 4, 7, 7]]] * 2, dtype=float),
             "labels": np.eye(3)[[[0, 2], [1, 0]]]}
    grads = runner.gradients(feeds, "ce", ["conv.W"])
    assert np.abs(grads["conv.W"]).sum() > 0
