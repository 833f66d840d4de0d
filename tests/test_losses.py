"""Losses against a NumPy reference written here, values and gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vse_tf import errors
from vse_tf import losses


def _unit(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_per_anchor(
    kind,
    x,
    y,
    ids,
    temperature=0.1,
    margin=0.2,
    mask_same_image=True,
    smooth=False,
):
    """Loop-by-loop transcription of the formulas in vse_tf/losses.py's
    docstrings (the paper's ConVSE and ConVSE++, VSE++'s hinges), float64."""
    n = len(ids)
    s = x @ y.T
    total = np.zeros(n)
    for direction in ("i2t", "t2i"):
        scores = s if direction == "i2t" else s.T
        for i in range(n):
            pos = scores[i, i]
            negs = [
                scores[i, j]
                for j in range(n)
                if j != i and (not mask_same_image or ids[j] != ids[i])
            ]
            if kind == "all":
                denom = np.exp(pos / temperature) + sum(
                    np.exp(v / temperature) for v in negs
                )
                total[i] += -np.log(np.exp(pos / temperature) / denom)
            elif kind == "hardest":
                if not negs:
                    continue
                v = (margin + max(negs) - pos) / temperature
                total[i] += np.log1p(np.exp(v)) if smooth else max(0.0, v)
            elif kind == "vse0":
                total[i] += sum(max(0.0, margin - pos + v) for v in negs)
            elif kind == "vse++":
                total[i] += max(
                    [max(0.0, margin - pos + v) for v in negs] + [0.0]
                )
    return total


def make_loss(
    kind, temperature=0.1, margin=0.2, mask_same_image=True, smooth=False
):
    if kind == "all":
        return losses.AllNegativesLoss(
            temperature=temperature, mask_same_image=mask_same_image
        )
    if kind == "hardest":
        return losses.HardestNegativeLoss(
            temperature=temperature,
            margin=margin,
            smooth=smooth,
            mask_same_image=mask_same_image,
        )
    return losses.HingeLoss(
        margin=margin,
        max_violation=kind == "vse++",
        mask_same_image=mask_same_image,
    )


KINDS = ["all", "hardest", "vse0", "vse++"]


def reference_value(kind, per_anchor):
    """The batch's value: the authors' mean for ConVSE and ConVSE++,
    VSE++'s sum over the batch (cost_s.sum() + cost_im.sum()) for the
    hinges."""
    return (
        per_anchor.sum() if kind in ("vse0", "vse++") else (per_anchor.mean())
    )


# Pairs 0/3 and 2/5/6 share an image: captions of one image in one batch.
IDS = np.array([7, 11, 3, 7, 20, 3, 3, 42])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "temperature,margin", [(0.1, 0.2), (0.05, 0.5), (1.0, 0.0)]
)
@pytest.mark.parametrize("mask_same_image", [True, False])
def test_value_matches_numpy_reference(
    kind, temperature, margin, mask_same_image
):
    rng = np.random.default_rng(0)
    x, y = _unit(rng, 8, 16), _unit(rng, 8, 16)
    expected = reference_value(
        kind,
        reference_per_anchor(
            kind, x, y, IDS, temperature, margin, mask_same_image
        ),
    )
    loss = make_loss(kind, temperature, margin, mask_same_image)
    value = loss(
        IDS, {"image": x.astype(np.float32), "text": y.astype(np.float32)}
    )
    np.testing.assert_allclose(float(value), expected, rtol=1e-5, atol=1e-5)


def test_smooth_hardest_negative_is_softplus():
    rng = np.random.default_rng(1)
    x, y = _unit(rng, 8, 16), _unit(rng, 8, 16)
    expected = reference_per_anchor("hardest", x, y, IDS, smooth=True).mean()
    value = make_loss("hardest", smooth=True)(
        IDS, {"image": x.astype(np.float32), "text": y.astype(np.float32)}
    )
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_matches_finite_differences_of_reference(kind):
    rng = np.random.default_rng(2)
    x, y = _unit(rng, 8, 6), _unit(rng, 8, 6)
    # Temperature 0.5 keeps the hinge kinks away from the probe points.
    loss = make_loss(kind, temperature=0.5)
    tx, ty = tf.constant(x, tf.float32), tf.constant(y, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([tx, ty])
        value = loss(IDS, {"image": tx, "text": ty})
    gx, gy = tape.gradient(value, [tx, ty])

    def f(x_, y_):
        return reference_value(
            kind, reference_per_anchor(kind, x_, y_, IDS, temperature=0.5)
        )

    eps = 1e-6
    for array, grad, which in ((x, gx, 0), (y, gy, 1)):
        numeric = np.zeros_like(array)
        for index in np.ndindex(*array.shape):
            plus, minus = array.copy(), array.copy()
            plus[index] += eps
            minus[index] -= eps
            args_p = (plus, y) if which == 0 else (x, plus)
            args_m = (minus, y) if which == 0 else (x, minus)
            numeric[index] = (f(*args_p) - f(*args_m)) / (2 * eps)
        np.testing.assert_allclose(grad.numpy(), numeric, atol=2e-4)


def test_duplicate_captions_of_one_image_are_not_negatives():
    # Two identical pairs of one image: with the mask, each is the other's
    # positive-like twin and must not be pushed away.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    y = x.copy()
    ids = np.array([5, 5, 9])
    masked = losses.HardestNegativeLoss(margin=0.2)(
        ids, {"image": x, "text": y}
    )
    unmasked = losses.HardestNegativeLoss(margin=0.2, mask_same_image=False)(
        ids, {"image": x, "text": y}
    )
    # Masked: every hardest negative scores 0 against positives of 1, so the
    # margin 0.2 is met. Unmasked: the twin scores 1 = the positive, so the
    # violation is 0.2 / 0.1 = 2 for the four twin anchors out of six.
    assert float(masked) == pytest.approx(0.0)
    assert float(unmasked) == pytest.approx(2 * (2 + 2) / 3)


def test_hand_computed_all_negatives_value():
    # Two orthogonal pairs: s_ii = 1, s_ij = 0. Each anchor:
    # -log(e^10 / (e^10 + e^0)) = log(1 + e^-10); both directions.
    x = np.eye(2, dtype=np.float32)
    value = losses.AllNegativesLoss(temperature=0.1)(
        np.array([0, 1]), {"image": x, "text": x}
    )
    # float32 resolves log(1 + 4.5e-5) to about 1e-3 of itself.
    assert float(value) == pytest.approx(2 * np.log1p(np.exp(-10.0)), rel=1e-3)


def test_direction_weights_and_sum_reduction():
    rng = np.random.default_rng(3)
    x, y = _unit(rng, 8, 16), _unit(rng, 8, 16)
    # Each direction's per-anchor terms by hand, from the similarity rows
    # (image anchors) and columns (caption anchors).
    s = x @ y.T / 0.1
    halves = []
    for scores in (s, s.T):
        halves.append(
            np.array(
                [
                    np.log(
                        np.exp(
                            scores[
                                i,
                                [
                                    j
                                    for j in range(8)
                                    if j == i or IDS[j] != IDS[i]
                                ],
                            ]
                        ).sum()
                    )
                    - scores[i, i]
                    for i in range(8)
                ]
            )
        )
    inputs = {"image": x.astype(np.float32), "text": y.astype(np.float32)}
    loss = losses.AllNegativesLoss(
        i2t_weight=2.0, t2i_weight=0.5, reduction="sum"
    )
    np.testing.assert_allclose(
        float(loss(IDS, inputs)),
        np.sum(2.0 * halves[0] + 0.5 * halves[1]),
        rtol=1e-5,
    )
    i2t_only = losses.AllNegativesLoss(t2i_weight=0.0)
    np.testing.assert_allclose(
        float(i2t_only(IDS, inputs)), halves[0].mean(), rtol=1e-5
    )


@pytest.mark.parametrize("max_violation", [False, True])
def test_hinge_losses_sum_over_the_batch_as_vse_pp_does(max_violation):
    # VSE++'s ContrastiveLoss, written out as it is in PyTorch:
    # cost_s = (margin + scores - d1).clamp(min=0) with the diagonal
    # masked, max or sum over captions; cost_im the same over images;
    # cost_s.sum() + cost_im.sum(). One image per pair, so no id mask.
    rng = np.random.default_rng(4)
    x, y = _unit(rng, 6, 5), _unit(rng, 6, 5)
    scores = x @ y.T
    diagonal = np.diag(scores)
    cost_s = np.maximum(0.2 + scores - diagonal[:, None], 0)
    cost_im = np.maximum(0.2 + scores - diagonal[None, :], 0)
    np.fill_diagonal(cost_s, 0)
    np.fill_diagonal(cost_im, 0)
    if max_violation:
        expected = cost_s.max(axis=1).sum() + cost_im.max(axis=0).sum()
    else:
        expected = cost_s.sum() + cost_im.sum()
    loss = losses.HingeLoss(margin=0.2, max_violation=max_violation)
    value = loss(
        np.arange(6),
        {"image": x.astype(np.float32), "text": y.astype(np.float32)},
    )
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    assert loss.reduction == "sum"


def test_learned_temperature_in_outputs_overrides_fixed_one():
    rng = np.random.default_rng(4)
    x, y = _unit(rng, 8, 16), _unit(rng, 8, 16)
    expected = reference_per_anchor("all", x, y, IDS, temperature=0.3).mean()
    value = losses.AllNegativesLoss(temperature=0.1)(
        IDS,
        {
            "image": x.astype(np.float32),
            "text": y.astype(np.float32),
            "temperature": np.float32(0.3),
        },
    )
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_float16_inputs_are_scored_in_float32():
    rng = np.random.default_rng(5)
    x, y = _unit(rng, 8, 16), _unit(rng, 8, 16)
    loss = losses.AllNegativesLoss(temperature=0.05)
    value = loss(
        IDS,
        {
            "image": tf.constant(x, tf.float16),
            "text": tf.constant(y, tf.float16),
        },
    )
    assert value.dtype == tf.float32
    expected = reference_per_anchor(
        "all",
        x.astype(np.float16).astype(float),
        y.astype(np.float16).astype(float),
        IDS,
        temperature=0.05,
    ).mean()
    np.testing.assert_allclose(float(value), expected, rtol=1e-4)


@pytest.mark.parametrize(
    "loss",
    [
        losses.AllNegativesLoss(temperature=0.07, i2t_weight=0.5),
        losses.HardestNegativeLoss(
            margin=0.3, smooth=True, mask_same_image=False
        ),
        losses.HingeLoss(margin=0.1, max_violation=True, reduction="sum"),
    ],
)
def test_serialization_round_trip(loss):
    import keras

    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()


def test_nonpositive_temperature_is_rejected():
    with pytest.raises(ValueError, match="temperature"):
        losses.AllNegativesLoss(temperature=0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_projection_heads_average_each_heads_own_loss(kind):
    # Three heads' unit embeddings, joined and scaled by 1/sqrt(3) as the
    # towers join them: the loss is the mean of the three heads' losses,
    # each on its own cosines (not one loss on the mean cosine).
    rng = np.random.default_rng(1)
    heads = [(_unit(rng, 8, 4), _unit(rng, 8, 4)) for _ in range(3)]
    expected = np.mean(
        [
            reference_value(kind, reference_per_anchor(kind, x, y, IDS))
            for x, y in heads
        ]
    )
    x = np.concatenate([x for x, _ in heads], axis=1) / np.sqrt(3)
    y = np.concatenate([y for _, y in heads], axis=1) / np.sqrt(3)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    loss = make_loss(kind)
    loss.projection_heads = 3
    value = loss(
        IDS, {"image": x.astype(np.float32), "text": y.astype(np.float32)}
    )
    np.testing.assert_allclose(float(value), expected, rtol=1e-5, atol=1e-5)
    # One head on the joined embedding is another loss.
    one = make_loss(kind)(
        IDS, {"image": x.astype(np.float32), "text": y.astype(np.float32)}
    )
    assert abs(float(one) - expected) > 1e-3


def test_projection_heads_must_be_positive():
    with pytest.raises(ValueError, match="projection_heads"):
        losses.AllNegativesLoss(projection_heads=0)


def test_towers_and_loss_must_agree_on_projection_heads():
    from vse_tf.modeling import building
    from vse_tf.models import dual_encoder
    from vse_tf.models import pretrained_towers
    from vse_tf.models import towers

    def tower(heads):
        head = pretrained_towers.projection_head(
            6, 0, 4, projection_heads=heads
        )
        features = keras.Input((6,))
        return towers.Tower(
            features, head(features), head=head, projection_heads=heads
        )

    def model(heads):
        return dual_encoder.DualEncoder(tower(heads), tower(heads))

    building.check_projection_heads(
        model(2), losses.AllNegativesLoss(projection_heads=2)
    )
    assert model(2).image_tower.output_shape == (None, 8)
    with pytest.raises(errors.UserError, match="projection_heads"):
        building.check_projection_heads(model(2), losses.AllNegativesLoss())


def test_a_new_loss_needs_only_its_direction_rule():
    # The extension point of the docstring of CrossModalLoss: a margin over
    # the mean negative, against a NumPy reference of both directions.
    class MeanNegativeLoss(losses.CrossModalLoss):
        def direction_loss(
            self, scores, positive_scores, negative, temperature
        ):
            mean = tf.reduce_sum(tf.where(negative, scores, 0.0), 1) / (
                tf.reduce_sum(tf.cast(negative, tf.float32), 1)
            )
            return tf.nn.relu(0.2 + mean - positive_scores)

    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.standard_normal((6, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    ids = np.array([0, 0, 1, 2, 3, 3], np.float32)  # two images twice
    scores = x @ y.T
    negative = ids[:, None] != ids[None, :]
    positive = np.diag(scores)

    def direction(s):
        mean = (s * negative).sum(1) / negative.sum(1)
        return np.maximum(0.0, 0.2 + mean - positive)

    expected = (direction(scores) + direction(scores.T)).mean()
    value = MeanNegativeLoss()(ids, {"image": x, "text": y})
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
