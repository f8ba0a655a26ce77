"""CrossEntropyWithSoftmax and ClassificationError along a class axis (CNTK's `axis = 1`).

Fast R-CNN labels every region of an image: labels and scores are `K:R` (K classes, R regions), and
`axis = 1` makes each of the R columns a distribution of its own. The registry's gradient checks
cover the backward (tests/test_op_registry.py); these tests pin the values.
"""
from __future__ import annotations

import numpy as np
import pytest

from netlang.api import load_text
from netlang.errors import NetlangError

NETWORK = """
    labels = Input {4:3}
    z = Input {4:3}
    ce = CrossEntropyWithSoftmax (labels, z, axis = 1)
    errs = ClassificationError (labels, z, axis = 1)
    ceWhole = CrossEntropyWithSoftmax (labels, z)
    criterionNodes = (ce) ; evaluationNodes = (errs)
"""


def batch(seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(2, 3, 4))                  # run-time (N, R, K) for BS 4:3
    classes = rng.integers(0, 4, (2, 3))
    return np.eye(4)[classes], z, classes


def log_softmax(z, axis):
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def test_the_criterion_is_one_number_summed_over_regions_and_samples():
    runner = load_text(NETWORK)
    assert runner.node("ce").shape == (1,) and runner.node("errs").shape == (1,)
    labels, z, _ = batch()
    got = runner.forward({"labels": labels, "z": z}, ["ce"])["ce"]
    want = -(labels * log_softmax(z, -1)).sum()
    np.testing.assert_allclose(got.reshape(()), want, rtol=1e-6)


def test_axis_zero_is_one_distribution_over_the_whole_sample():
    runner = load_text(NETWORK)
    labels, z, _ = batch()
    got = runner.forward({"labels": labels, "z": z}, ["ceWhole"])["ceWhole"]
    flat = z.reshape(2, -1)
    want = -(labels.reshape(2, -1) * log_softmax(flat, -1)).sum()
    np.testing.assert_allclose(got.reshape(()), want, rtol=1e-6)


def test_classification_error_counts_the_wrong_regions():
    runner = load_text(NETWORK)
    labels, z, classes = batch(3)
    got = runner.forward({"labels": labels, "z": z}, ["errs"])["errs"]
    assert float(got.reshape(())) == float((z.argmax(-1) != classes).sum())


def test_the_class_axis_may_be_any_axis():
    runner = load_text("""
        labels = Input {3:4}
        z = Input {3:4}
        ce = CrossEntropyWithSoftmax (labels, z, axis = 2)""")
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 4, 3))                  # classes along BS axis 2 = run-time axis 1
    labels = np.eye(4)[rng.integers(0, 4, (2, 3))].transpose(0, 2, 1)
    got = runner.forward({"labels": labels, "z": z}, ["ce"])["ce"]
    np.testing.assert_allclose(got.reshape(()), -(labels * log_softmax(z, 1)).sum(), rtol=1e-6)


def test_an_axis_beyond_the_rank_is_refused_at_its_line():
    with pytest.raises(NetlangError, match="axis 3 is not an axis of"):
        load_text("l = Input {4:3}\nz = Input {4:3}\nce = CrossEntropyWithSoftmax (l, z, axis = 3)")
