"""A GRU that skips the padding of short captions on CPUs.

Keras runs a masked GRU over every time step for every caption, so a batch
padded to its longest caption pays for the padding: with VSE++'s captions
of 8 to 20 words, about a third of the recurrent work. PyTorch's packed
sequences (VSE++'s `pack_padded_sequence`) skip it, and so does this layer:
the captions are sorted longest first, so at step t the captions still
running are the first n_t rows, and only those rows are computed. The input
projections of all steps are one matrix product before the loop.

Same weights, same results, same checkpoints as `keras.layers.GRU`. Where
a GPU is visible, Keras's cuDNN kernel (which packs too) runs instead.
"""

import keras
import tensorflow as tf

from vse_tf import compat


@keras.saving.register_keras_serializable(package="vse_tf")
class PackedGRU(keras.layers.GRU):
    """`keras.layers.GRU` whose masked CPU loop runs only the unpadded
    steps of each sequence.

    Taken on a right-padded mask (a prefix of True per sequence, as
    `Embedding(mask_zero=True)` gives for padded token ids), with the
    default activations, reset_after, no dropout, no return_sequences and
    no go_backwards, outside XLA; any other use is Keras's own GRU.
    """

    def _packable(self, mask):
        cell = self.cell
        return (
            mask is not None
            and not self.return_sequences
            and not self.go_backwards
            and not self.dropout
            and not self.recurrent_dropout
            and cell.reset_after
            and cell.use_bias
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
            and not tf.config.list_logical_devices("GPU")
            # XLA needs static shapes: the masked loop of Keras.
            and not compat.in_xla_context()
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        state = (
            initial_state[0]
            if isinstance(initial_state, (list, tuple))
            else initial_state
        )
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if not self._packable(mask):
            return super().inner_loop(
                sequences, initial_state, mask, training=training
            )
        dtype = sequences.dtype
        last = packed_gru(
            sequences,
            tf.reduce_sum(tf.cast(mask, tf.int32), axis=1),
            state,
            tf.cast(self.cell.kernel, dtype),
            tf.cast(self.cell.recurrent_kernel, dtype),
            tf.cast(self.cell.bias, dtype),
        )
        return last, last[:, None], [last]


def packed_gru(sequences, lengths, state, kernel, recurrent_kernel, bias):
    """The final state of a GRU (Keras's reset_after convention: the reset
    gate multiplies the recurrent projection, bias included) run over the
    first `lengths[i]` steps of each sequence.

    Args:
      sequences: [B, T, F].
      lengths: [B] int32, each in [0, T].
      state: [B, U], the initial state.
      kernel: [F, 3U]; recurrent_kernel: [U, 3U]; bias: [2, 3U] (input and
        recurrent), gates in Keras's order z, r, h.
    """
    # Longest first: the sequences still running at step t are the rows
    # [0, running[t]).
    order = tf.argsort(lengths, direction="DESCENDING", stable=True)
    running = tf.reduce_sum(
        tf.cast(
            lengths[None, :] > tf.range(tf.shape(sequences)[1])[:, None],
            tf.int32,
        ),
        axis=1,
    )
    final = _packed_loop(
        tf.gather(sequences, order),
        running,
        tf.gather(state, order),
        tf.convert_to_tensor(kernel),
        tf.convert_to_tensor(recurrent_kernel),
        tf.convert_to_tensor(bias),
    )
    return tf.gather(final, tf.math.invert_permutation(order))


def _steps_array(dtype, size):
    # A [B, width] tensor a step: n_t running rows, then zeros. Read twice
    # (by the backward loop, then stacked), so kept after a read.
    return tf.TensorArray(dtype, size=size, clear_after_read=False)


def _padded(x, total):
    return tf.pad(x, [[0, total - tf.shape(x)[0]], [0, 0]])


@tf.custom_gradient
def _packed_loop(sequences, running, state, kernel, recurrent_kernel, bias):
    """The GRU over sequences sorted longest first; running[t] of them are
    still running at step t.

    The gradient is written out (`_packed_loop_gradient`): the backward
    loop computes only the state's gradient step by step; the weights'
    gradients are then single matrix products over the running rows of all
    steps, padding excluded. (The loop's automatic gradient, one small
    product a step, was slower than Keras's unpacked loop.)
    """
    batch = tf.shape(sequences)[0]
    steps = tf.reduce_sum(tf.cast(running > 0, tf.int32))
    # Every step's input projection in one product: [steps, B, 3U].
    inputs = tf.einsum("btf,fg->tbg", sequences[:, :steps], kernel) + bias[0]

    def step(t, h, saved):
        n = running[t]
        updated, parts = _gru_cell(
            inputs[t, :n], h[:n], recurrent_kernel, bias[1]
        )
        saved = [
            array.write(t, _padded(value, batch))
            for array, value in zip(saved, parts)
        ]
        return (
            t + 1,
            tf.ensure_shape(tf.concat([updated, h[n:]], axis=0), h.shape),
            saved,
        )

    _, final, saved = tf.while_loop(
        lambda t, h, saved: t < steps,
        step,
        (
            tf.constant(0),
            state,
            [_steps_array(sequences.dtype, steps) for _ in range(5)],
        ),
    )

    def gradient(d_final):
        d_final = tf.convert_to_tensor(d_final)  # a gather's IndexedSlices
        return _packed_loop_gradient(
            d_final, sequences, running, steps, saved, kernel, recurrent_kernel
        )

    return final, gradient


def _gru_cell(x, h, recurrent_kernel, recurrent_bias):
    """One step of Keras's GRU (reset_after) on the running rows: their
    input projection `x` and state `h`. Returns the new state, and what
    its gradient needs: (h, z, r, candidate, h_h)."""
    x_z, x_r, x_h = tf.split(x, 3, axis=-1)
    h_z, h_r, h_h = tf.split(
        tf.matmul(h, recurrent_kernel) + recurrent_bias, 3, axis=-1
    )
    z = tf.sigmoid(x_z + h_z)
    r = tf.sigmoid(x_r + h_r)
    candidate = tf.tanh(x_h + r * h_h)
    return z * h + (1.0 - z) * candidate, (h, z, r, candidate, h_h)


def _gru_cell_gradient(d_h, saved, recurrent_kernel):
    """The gradient of `_gru_cell` from that of its new state `d_h`: the
    previous state's, and those of the input projection and of the
    recurrent projection's gates."""
    h, z, r, candidate, h_h = saved
    d_candidate = d_h * (1.0 - z) * (1.0 - candidate * candidate)
    d_z = d_h * (h - candidate) * z * (1.0 - z)
    d_r = d_candidate * h_h * r * (1.0 - r)
    d_gates_inner = tf.concat([d_z, d_r, d_candidate * r], axis=-1)
    d_previous = d_h * z + tf.matmul(
        d_gates_inner, recurrent_kernel, transpose_b=True
    )
    d_gates_input = tf.concat([d_z, d_r, d_candidate], axis=-1)
    return d_previous, d_gates_input, d_gates_inner


def _packed_loop_gradient(
    d_final, sequences, running, steps, saved, kernel, recurrent_kernel
):
    """`_packed_loop`'s gradients, from that of its final state and the
    steps' values it `saved`."""
    batch = tf.shape(sequences)[0]

    def back(t, d_h, d_inputs, d_inner):
        n = running[t]
        d_previous, d_gates_input, d_gates_inner = _gru_cell_gradient(
            d_h[:n], [array.read(t)[:n] for array in saved], recurrent_kernel
        )
        return (
            t - 1,
            tf.ensure_shape(
                tf.concat([d_previous, d_h[n:]], axis=0), d_h.shape
            ),
            d_inputs.write(t, _padded(d_gates_input, batch)),
            d_inner.write(t, _padded(d_gates_inner, batch)),
        )

    _, d_state, d_inputs, d_inner = tf.while_loop(
        lambda t, *_: t >= 0,
        back,
        (
            steps - 1,
            d_final,
            _steps_array(sequences.dtype, steps),
            _steps_array(sequences.dtype, steps),
        ),
    )
    # The running rows of all steps, (t, b) each, padding left out.
    positions = tf.where(tf.range(batch)[None, :] < running[:steps, None])
    d_inputs, d_inner, previous = (
        tf.gather_nd(array.stack(), positions)
        for array in (d_inputs, d_inner, saved[0])
    )
    rows_in = tf.gather_nd(sequences, tf.reverse(positions, [1]))
    d_sequences = tf.scatter_nd(
        tf.reverse(positions, [1]),
        tf.matmul(d_inputs, kernel, transpose_b=True),
        tf.shape(sequences, out_type=tf.int64),
    )
    return (
        d_sequences,
        None,
        d_state,
        tf.matmul(rows_in, d_inputs, transpose_a=True),
        tf.matmul(previous, d_inner, transpose_a=True),
        tf.stack(
            [
                tf.reduce_sum(d_inputs, axis=0),
                tf.reduce_sum(d_inner, axis=0),
            ]
        ),
    )
