"""Batch objectives for visual-semantic embeddings.

Every loss here takes `loss(image_ids, {"image": x, "text": y})`: L2-normalized
image embeddings x [B, D], caption embeddings y [B, D] (row i of both is one
image-caption pair) and the integer image id of each pair [B]. Similarity
s_ij = x_i . y_j. Negatives of an anchor come only from the other modality,
and a candidate whose image id equals the anchor's (another caption of the
same image in this batch) is never a negative when `mask_same_image=True`.

Each loss returns one value per anchor pair, i2t_weight * l_i(image->text) +
t2i_weight * l_i(text->image), and Keras's reduction makes the batch's value:
"sum_over_batch_size" (the mean over image anchors + the mean over caption
anchors: the authors' ConVSE and ConVSE++, `.mean()`) or "sum" (the sum of
both directions over the batch: VSE++'s `ContrastiveLoss`, `cost_s.sum() +
cost_im.sum()`, the default of `HingeLoss`). The choice is not cosmetic:
under a gradient clip the sum takes steps B times larger before clipping.

Under `tf.distribute` with R replicas each replica scores its local anchors
against the candidates of *all* replicas (`all_gather`, differentiable). A
replica's sum is its share of the global sum; its mean, which Keras divides
by the local batch b and scales by 1/R, is first multiplied by R b / B (B the
global batch, so 1 when the replicas' batches are even), so that it is its
share of the mean over the global batch. Either way the per-replica values
and gradients add up to the single-device loss on the global batch, uneven
batches (an epoch's last) included.

Image ids arrive as float32 (Keras casts `y_true` to the loss dtype), which is
exact for ids below 2**24.

With `projection_heads=K` the embeddings are K unit vectors joined and scaled
by 1/sqrt(K) (towers with K projection heads), so that x . y is the mean of
the K heads' cosines, a score-level ensemble. Each head's pair is then scored
on its own cosines and the loss is the mean of the K heads' losses: each head
learns as a model of its own would on the same batches, not as part of one
wider head.
"""

import math
import typing

import gin
import keras
import tensorflow as tf

from vse_tf import errors


def gather_across_replicas(local):
    """Returns (global tensor, row offset of this replica's rows in it)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return local, 0
    gathered = context.all_gather(local, axis=0)
    # Batches may be uneven across replicas (the last batch of an epoch), so
    # the offset is the number of rows held by the replicas before this one.
    sizes = context.all_gather(tf.shape(local)[:1], axis=0)
    offset = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
    return gathered, offset


class Pairs(typing.NamedTuple):
    """Image-caption pairs as a loss sees them: image embeddings [b, D],
    caption embeddings [b, D] and image ids [b], float32."""

    images: tf.Tensor
    texts: tf.Tensor
    ids: tf.Tensor


def gather_pairs(pairs):
    """(the `Pairs` of all replicas, the row of this replica's first)."""
    images, offset = gather_across_replicas(pairs.images)
    texts, _ = gather_across_replicas(pairs.texts)
    ids, _ = gather_across_replicas(pairs.ids)
    return Pairs(images, texts, ids), offset


class CrossModalLoss(keras.losses.Loss):
    """The base of every loss here, and of a new one.

    It gathers the candidates of all replicas, masks the pairs of one image,
    splits the projection heads, and scores both directions; a subclass gives
    only the rule of one direction, `direction_loss`, e.g. a margin over the
    mean negative:

        class MeanNegativeLoss(CrossModalLoss):
          def direction_loss(self, scores, positive_scores, negative,
                             temperature):
            mean = tf.reduce_sum(tf.where(negative, scores, 0.), 1) / (
                tf.reduce_sum(tf.cast(negative, tf.float32), 1))
            return tf.nn.relu(0.2 + mean - positive_scores)
    """

    def __init__(
        self,
        temperature=0.1,
        i2t_weight=1.0,
        t2i_weight=1.0,
        mask_same_image=True,
        projection_heads=1,
        name=None,
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        errors.check_number(
            f"{type(self).__name__}.temperature",
            temperature,
            minimum=0,
            above=True,
        )
        self.temperature = temperature
        self.i2t_weight = i2t_weight
        self.t2i_weight = t2i_weight
        self.mask_same_image = mask_same_image
        errors.check_number(
            f"{type(self).__name__}.projection_heads",
            projection_heads,
            minimum=1,
            integer=True,
        )
        self.projection_heads = projection_heads

    def call(self, y_true, y_pred):
        anchors, temperature = self.inputs(y_true, y_pred)
        candidates, offset = gather_pairs(anchors)
        return self.anchor_losses(
            anchors, candidates, offset, temperature
        ) * self.global_batch_factor(
            tf.shape(anchors.ids)[0], tf.shape(candidates.ids)[0]
        )

    def inputs(self, y_true, y_pred):
        """(the batch's `Pairs`, the temperature), float32."""
        # Logits and reductions stay in float32 under mixed precision.
        pairs = Pairs(
            tf.cast(y_pred["image"], tf.float32),
            tf.cast(y_pred["text"], tf.float32),
            tf.reshape(tf.cast(y_true, tf.float32), [-1]),
        )
        temperature = y_pred.get("temperature", self.temperature)
        return pairs, tf.cast(temperature, tf.float32)

    def anchor_losses(self, anchors, candidates, offset, temperature):
        """[b] the losses of b anchor `Pairs` against all candidate `Pairs`,
        the anchors being the candidates' rows from `offset` on. A pair's
        loss needs its own row and the candidates only, so anchors may be
        scored a block at a time (`vse_tf.models.gradient_cache`)."""
        positive = tf.one_hot(
            offset + tf.range(tf.shape(anchors.ids)[0]),
            tf.shape(candidates.ids)[0],
            on_value=True,
            off_value=False,
            dtype=tf.bool,
        )
        if self.mask_same_image:
            negative = tf.not_equal(
                anchors.ids[:, None], candidates.ids[None, :]
            )
        else:
            negative = tf.logical_not(positive)

        heads = self.projection_heads
        losses = []
        for part in zip(
            *(
                tf.split(x * math.sqrt(heads), heads, axis=1)
                for x in (
                    anchors.images,
                    anchors.texts,
                    candidates.images,
                    candidates.texts,
                )
            )
        ):
            losses.append(self._both_directions(*part, negative, temperature))
        return tf.add_n(losses) / heads

    def reduce(self, anchor_sum, local_size):
        """What Keras's reduction makes of a replica's `local_size` anchor
        losses (each times `global_batch_factor`) summing to `anchor_sum`:
        the sum itself, or its mean scaled by 1/replicas; `__call__`'s
        value, for anchors summed a block at a time."""
        if self.reduction == "sum":
            return anchor_sum
        if self.reduction != "sum_over_batch_size":
            raise ValueError(
                f"reduction {self.reduction!r}: blocks of anchors need "
                "'sum' or 'sum_over_batch_size'"
            )
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return anchor_sum / tf.cast(local_size * replicas, tf.float32)

    def global_batch_factor(self, local_size, global_size):
        """The factor that turns Keras's mean over this replica's anchors,
        scaled by 1/R, into its share of the mean over the global batch: R b /
        B, 1 unless the replicas' batches are uneven."""
        context = tf.distribute.get_replica_context()
        if self.reduction != "sum_over_batch_size" or context is None:
            return 1.0
        return tf.cast(
            local_size * context.num_replicas_in_sync, tf.float32
        ) / tf.cast(global_size, tf.float32)

    def _both_directions(
        self, image, text, all_images, all_texts, negative, temperature
    ):
        positive_scores = tf.reduce_sum(image * text, axis=1)
        i2t = self.direction_loss(
            tf.matmul(image, all_texts, transpose_b=True),
            positive_scores,
            negative,
            temperature,
        )
        t2i = self.direction_loss(
            tf.matmul(text, all_images, transpose_b=True),
            positive_scores,
            negative,
            temperature,
        )
        return self.i2t_weight * i2t + self.t2i_weight * t2i

    def direction_loss(self, scores, positive_scores, negative, temperature):
        """Per-anchor loss of one direction.

        Args:
          scores: [b, B] similarities of b local anchors to B global candidates.
          positive_scores: [b] similarity of each anchor to its own pair.
          negative: [b, B] bool, True where a candidate is a negative.
          temperature: scalar float32.
        """
        raise NotImplementedError

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "i2t_weight": self.i2t_weight,
            "t2i_weight": self.t2i_weight,
            "mask_same_image": self.mask_same_image,
            "projection_heads": self.projection_heads,
        }


@gin.configurable
@keras.saving.register_keras_serializable(package="vse_tf")
class AllNegativesLoss(CrossModalLoss):
    """Normalized cross-entropy over all cross-modal negatives (ConVSE).

        l_i = -log( exp(s_ii/t) / (exp(s_ii/t) + sum_{j in N(i)} exp(s_ij/t)) )
            = logsumexp({0} U {(s_ij - s_ii)/t : j in N(i)})

    for image anchors over caption candidates and for caption anchors over image
    candidates. Its gradient weighs every violation s_ij - s_ii by its softmax
    probability: the expected violation.
    """

    def direction_loss(self, scores, positive_scores, negative, temperature):
        # log(1 + sum_j exp((s_ij - s_ii)/t)): scored relative to the positive,
        # which keeps float32 precision when the positive dominates.
        violations = (scores - positive_scores[:, None]) / temperature
        candidates = tf.where(negative, violations, float("-inf"))
        return tf.reduce_logsumexp(
            tf.concat(
                [tf.zeros_like(positive_scores)[:, None], candidates], axis=1
            ),
            axis=1,
        )


@gin.configurable
@keras.saving.register_keras_serializable(package="vse_tf")
class HardestNegativeLoss(CrossModalLoss):
    """The positive against the hardest cross-modal negative (ConVSE++).

        l_i = max(0, -log( exp(s_ii/t) / exp((max_{j in N(i)} s_ij + m)/t) ))
            = max(0, (m + max_{j in N(i)} s_ij - s_ii) / t)

    With `smooth=True` the positive stays in the denominator:
    l_i = softplus((m + max_j s_ij - s_ii) / t). An anchor without negatives
    contributes 0.
    """

    def __init__(self, temperature=0.1, margin=0.2, smooth=False, **kwargs):
        super().__init__(temperature=temperature, **kwargs)
        self.margin = errors.check_number(
            "HardestNegativeLoss.margin", margin, minimum=0
        )
        self.smooth = smooth

    def direction_loss(self, scores, positive_scores, negative, temperature):
        hardest = tf.reduce_max(
            tf.where(negative, scores, float("-inf")), axis=1
        )
        violation = (self.margin + hardest - positive_scores) / temperature
        if self.smooth:
            return tf.nn.softplus(violation)
        return tf.nn.relu(violation)

    def get_config(self):
        return {
            **super().get_config(),
            "margin": self.margin,
            "smooth": self.smooth,
        }


@gin.configurable
@keras.saving.register_keras_serializable(package="vse_tf")
class HingeLoss(CrossModalLoss):
    """The VSE++ (Faghri et al., 2018) ranking hinge with margin a.

        VSE0  (max_violation=False): l_i = sum_{j in N(i)} [a - s_ii + s_ij]+
        VSE++ (max_violation=True):  l_i = max_{j in N(i)} [a - s_ii + s_ij]+

    Reduced as VSE++ reduces it: summed over the batch, both directions
    (`reduction="sum"`); "sum_over_batch_size" gives the mean instead. The
    temperature plays no part; it is accepted (and ignored) so that every
    loss takes the same model outputs.
    """

    def __init__(
        self, margin=0.2, max_violation=False, reduction="sum", **kwargs
    ):
        super().__init__(reduction=reduction, **kwargs)
        self.margin = errors.check_number("HingeLoss.margin", margin, minimum=0)
        self.max_violation = max_violation

    def direction_loss(self, scores, positive_scores, negative, temperature):
        del temperature
        costs = tf.where(
            negative,
            tf.nn.relu(self.margin - positive_scores[:, None] + scores),
            0.0,
        )
        if self.max_violation:
            return tf.reduce_max(costs, axis=1)
        return tf.reduce_sum(costs, axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "margin": self.margin,
            "max_violation": self.max_violation,
        }
