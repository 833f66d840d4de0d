"""Gradient caching: the gradient of a whole batch in the memory of a slice.

A contrastive loss needs every embedding of the batch at once, but not
every activation that made them (Gao, Zhang, Han and Callan, "Scaling Deep
Contrastive Learning Batch Size under Memory Limited Setup", 2021):

1. embed the batch `slice_size` pairs at a time, with no tape, keeping
   only the embeddings;
2. take the loss over the whole batch (its cross-replica gather included)
   and its gradient with respect to every embedding, `slice_size` anchors
   at a time against all candidates, so that no [B, B] matrix is held;
3. run each slice forward again under a tape and back-propagate its share
   of those embedding gradients into the weights, summing over slices.

The loss sees the same negatives and the weights get the same gradient as
with the whole batch at once (to float32 rounding), for one more forward
pass. Both passes must compute the same embeddings, so the second replays
the random state of the first: the layers' seed generators (dropout,
random crops and flips) are set back before it and advance as they did.
Batch norm in training mode normalizes each slice by its own statistics,
as it does on each replica; its moving statistics are set back too, so
they take one update a slice, not two.

The slices run one after another in a `tf.while_loop`, so memory holds one
slice's activations whatever the batch, and the graph does not grow with
the number of slices.
"""

import keras
import tensorflow as tf

from vse_tf import compat
from vse_tf import losses


def loss_and_gradients(model, pixels, tokens, image_ids, slice_size):
    """(loss, gradients of `model.trainable_weights`) of the whole batch,
    as `DualEncoder` computes them in one pass, with each tower run
    `slice_size` pairs at a time (`slice_size` divides the batch)."""
    towers = ((model.image_tower, pixels), (model.text_encoder, tokens))
    state = forward_state(model)
    before = [tf.identity(tf.convert_to_tensor(v)) for v in state]
    embeddings = [embed(tower, x, slice_size) for tower, x in towers]
    loss, embedding_gradients, direct_gradients = loss_gradients(
        model, *embeddings, image_ids, slice_size
    )
    for variable, value in zip(state, before):
        variable.assign(value)
    gradients = dict(
        zip(map(id, model.temperature_weights()), direct_gradients)
    )
    for (tower, x), upstream in zip(towers, embedding_gradients):
        weights = tower.trainable_weights
        gradients.update(
            zip(map(id, weights), backpropagate(tower, x, upstream, slice_size))
        )
    return loss, [gradients.get(id(w)) for w in model.trainable_weights]


def loss_gradients(model, image, text, image_ids, block_size):
    """(loss, [its gradients with respect to image and text], [those of
    `model.temperature_weights()`]), the gradients of the loss scaled for
    the optimizer.

    A loss of `vse_tf.losses` is taken `block_size` anchor pairs at a
    time against all candidates (a pair's loss needs its own row and the
    candidates only), so that it holds [block_size, B] scores, not
    [B, B]; the candidates' gradients are summed over blocks and over
    replicas, as the gradient of the candidates' gather would. Any other
    loss is taken whole.
    """
    if not hasattr(model.loss, "anchor_losses"):
        return _whole_loss_gradients(model, image, text, image_ids)
    # The loss's float32 (its `inputs` cast them); the gradients go back
    # to the towers' dtype at the end, as a cast's gradient would.
    anchors, _ = model.loss.inputs(image_ids, {"image": image, "text": text})
    candidates, offset = losses.gather_pairs(anchors)
    block_gradients, count = _block_gradients(
        model, anchors, candidates, offset, block_size
    )
    # The first block outside the loop: it shows which temperature weights
    # the loss reads (the hinge ignores it: no gradient, as without blocks).
    loss, image_grad, text_grad, candidate_grads, direct_grads = (
        block_gradients(0)
    )
    connected = [j for j, g in enumerate(direct_grads) if g is not None]

    def next_block(i, total, image_rows, text_rows, candidate_sums, sums):
        value, image_grad, text_grad, candidate_grads, direct_grads = (
            block_gradients(i)
        )
        return (
            total + value,
            image_rows.write(i, image_grad),
            text_rows.write(i, text_grad),
            [a + g for a, g in zip(candidate_sums, candidate_grads)],
            [a + direct_grads[j] for a, j in zip(sums, connected)],
        )

    loss, image_rows, text_rows, candidate_sums, sums = _after_the_first(
        count,
        next_block,
        (
            loss,
            _rows(image_grad, count),
            _rows(text_grad, count),
            candidate_grads,
            [direct_grads[j] for j in connected],
        ),
    )
    direct_gradients = _placed(sums, connected, len(direct_grads))
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        candidate_sums = context.all_reduce("sum", candidate_sums)
    local = slice(offset, offset + tf.shape(anchors.ids)[0])
    gradients = [
        tf.cast(_merged(own.stack()) + as_candidate[local], embeddings.dtype)
        for own, as_candidate, embeddings in zip(
            (image_rows, text_rows), candidate_sums, (image, text)
        )
    ]
    return loss, gradients, direct_gradients


def _whole_loss_gradients(model, image, text, image_ids):
    """`loss_gradients` for a loss that is not a `CrossModalLoss`."""
    direct = model.temperature_weights()
    with tf.GradientTape() as tape:
        tape.watch([image, text])
        loss, scaled_loss = model.batch_loss(image, text, image_ids)
    *gradients, direct_gradients = tape.gradient(
        scaled_loss, [image, text, direct]
    )
    return loss, gradients, direct_gradients


def _block_gradients(model, anchors, candidates, offset, block_size):
    """(a function of a block's index giving its share of the loss and
    that share's gradients with respect to the block's image and text
    rows, the candidates' images and texts, and the temperature weights;
    the number of blocks)."""
    objective = model.loss
    local_size = tf.shape(anchors.ids)[0]
    factor = objective.global_batch_factor(
        local_size, tf.shape(candidates.ids)[0]
    )
    blocks, count = _sliced(anchors, block_size)
    watched = [candidates.images, candidates.texts]
    direct = model.temperature_weights()

    def block_gradients(i):
        block = losses.Pairs(*_take(tuple(blocks), i))
        with tf.GradientTape() as tape:
            tape.watch([block.images, block.texts, *watched])
            _, temperature = objective.inputs(
                block.ids, model.loss_outputs(block.images, block.texts)
            )
            anchor_losses = objective.anchor_losses(
                block,
                losses.Pairs(*watched, candidates.ids),
                offset + i * block_size,
                temperature,
            )
            value = objective.reduce(
                tf.reduce_sum(anchor_losses) * factor, local_size
            )
            scaled = model.optimizer.scale_loss(value)
        return value, *tape.gradient(
            scaled, [block.images, block.texts, watched, direct]
        )

    return block_gradients, count


def forward_state(model):
    """The variables a training-mode forward pass changes: the layers'
    seed generators and the moving statistics of batch norm layers that
    train."""
    state, seen = [], set()
    for layer in compat.all_layers(model):
        variables = [
            generator.state for generator in compat.seed_generators(layer)
        ]
        if (
            isinstance(layer, keras.layers.BatchNormalization)
            and layer.trainable
        ):
            variables += [layer.moving_mean, layer.moving_variance]
        for variable in variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                state.append(variable)
    return state


def batch_norm_layers(model):
    """The names of the batch norm layers that normalize by the batch's
    statistics in training: with slices, by each slice's."""
    return [
        layer.name
        for layer in compat.all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        and layer.trainable
    ]


def embed(tower, inputs, slice_size):
    """The tower's training-mode outputs for `inputs`, computed a slice at
    a time, with no tape."""
    slices, count = _sliced(inputs, slice_size)

    def outputs_of(i):
        return tower(_take(slices, i), training=True)

    (outputs,) = _after_the_first(
        count,
        lambda i, outputs: (outputs.write(i, outputs_of(i)),),
        (_rows(outputs_of(0), count),),
    )
    return _merged(outputs.stack())


def backpropagate(tower, inputs, upstream, slice_size):
    """The gradients of the tower's trainable weights when its outputs for
    `inputs` receive `upstream`, one slice at a time; None for a weight the
    outputs do not depend on."""
    slices, count = _sliced(inputs, slice_size)
    upstream_slices, _ = _sliced(upstream, slice_size)
    weights = tower.trainable_weights

    def slice_gradients(i):
        with tf.GradientTape() as tape:
            outputs = tower(_take(slices, i), training=True)
        return tape.gradient(
            outputs, weights, output_gradients=_take(upstream_slices, i)
        )

    # The first slice outside the loop: its gradients show which weights
    # have one, and an embedding table's arrive as rows, summed here into
    # the dense table (as `compat.sum_repeated_rows` would sum them).
    first = slice_gradients(0)
    connected = [j for j, gradient in enumerate(first) if gradient is not None]

    def next_slice(i, sums):
        gradients = slice_gradients(i)
        return (
            [
                total + tf.convert_to_tensor(gradients[j])
                for total, j in zip(sums, connected)
            ],
        )

    (sums,) = _after_the_first(
        count,
        next_slice,
        ([tf.convert_to_tensor(first[j]) for j in connected],),
    )
    return _placed(sums, connected, len(weights))


def _after_the_first(count, step, carried):
    """`carried` after `step(i, *carried)` (which returns the next
    `carried`) for i = 1 to count - 1, one slice after the other: slice 0
    is done outside the loop, where its results show what the loop
    carries."""
    return tf.while_loop(
        lambda i, *_: i < count,
        lambda i, *carried: (i + 1, *step(i, *carried)),
        (tf.constant(1), *carried),
        parallel_iterations=1,
    )[1:]


def _rows(first, count):
    """An array of `count` slices' rows, slice 0's `first` written."""
    return tf.TensorArray(
        first.dtype, size=count, element_shape=first.shape
    ).write(0, first)


def _placed(values, places, length):
    """A list of `length`, `values` at `places` and None elsewhere."""
    placed = [None] * length
    for place, value in zip(places, values):
        placed[place] = value
    return placed


def _sliced(inputs, slice_size):
    """`inputs` (a tensor or a structure of them) as [slices, slice_size,
    ...], and the number of slices."""

    def split(x):
        return tf.reshape(x, [-1, slice_size, *_dims(x)[1:]])

    slices = tf.nest.map_structure(split, inputs)
    return slices, tf.shape(tf.nest.flatten(slices)[0])[0]


def _dims(x):
    """x's shape, static where it is known."""
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(x.shape)]


def _take(slices, i):
    return tf.nest.map_structure(lambda x: tf.gather(x, i), slices)


def _merged(stacked):
    """[slices, slice_size, ...] back to [batch, ...]."""
    return tf.reshape(stacked, [-1, *_dims(stacked)[2:]])
