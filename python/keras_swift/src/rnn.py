"""Recurrent loops: the generic ``rnn`` (an eager time loop the tape records
through) and the fused ``lstm``/``gru`` engine ops, which Keras's LSTM and GRU
layers try first (as they try cuDNN on TensorFlow). A configuration the fused
ops do not cover raises ``NotImplementedError`` and Keras falls back to ``rnn``."""

from keras.src import activations
from keras.src import tree
from keras_swift.src.core import cast
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.engine import _C
from keras_swift.src.engine import op
from keras_swift.src.ops import numpy as knp


def rnn(
    step_function,
    inputs,
    initial_states,
    go_backwards=False,
    mask=None,
    constants=None,
    unroll=False,
    input_length=None,
    time_major=False,
    zero_output_for_mask=False,
    return_all_outputs=True,
):
    def swap_batch_timestep(x):
        axes = list(range(x.ndim))
        axes[0], axes[1] = 1, 0
        return op("transpose", x, perm=axes)

    inputs = tree.map_structure(convert_to_tensor, inputs)
    if not time_major:
        inputs = tree.map_structure(swap_batch_timestep, inputs)
    flat_inputs = tree.flatten(inputs)
    time_steps = flat_inputs[0].shape[0]

    if mask is not None:
        mask = cast(mask, "bool")
        if mask.ndim == 2:
            mask = knp.expand_dims(mask, -1)
        if not time_major:
            mask = swap_batch_timestep(mask)
    constants = list(constants or [])

    def expand_mask(mask_t, target):
        # (batch, 1) -> broadcastable against target (batch, ...)
        while mask_t.ndim < target.ndim:
            mask_t = knp.expand_dims(mask_t, -1)
        return op("broadcast_to", mask_t, shape=list(target.shape))

    states = tuple(initial_states)
    outputs = []
    prev_output = None
    steps = range(time_steps - 1, -1, -1) if go_backwards else range(time_steps)
    for t in steps:
        inp = tree.pack_sequence_as(inputs, [x[t] for x in flat_inputs])
        output, new_states = step_function(inp, tuple(states) + tuple(constants))
        if mask is not None:
            mask_t = mask[t]
            if prev_output is None:
                prev_output = knp.zeros_like(output)
            if zero_output_for_mask:
                fallback = knp.zeros_like(output)
            else:
                fallback = prev_output
            output = op("where", expand_mask(mask_t, output), output, fallback)
            flat_states = tree.flatten(states)
            flat_new = tree.flatten(new_states)
            flat_final = [
                op("where", expand_mask(mask_t, ns), ns, s)
                for s, ns in zip(flat_states, flat_new)
            ]
            new_states = tree.pack_sequence_as(new_states, flat_final)
            prev_output = output
        states = new_states
        if return_all_outputs or not outputs:
            outputs.append(output)
        else:
            outputs[0] = output

    last_output = outputs[-1]
    stacked = knp.stack(outputs)
    if not time_major:
        stacked = swap_batch_timestep(stacked)
    return last_output, stacked, states


def lstm(
    inputs,
    initial_state_h,
    initial_state_c,
    mask,
    kernel,
    recurrent_kernel,
    bias,
    activation,
    recurrent_activation,
    return_sequences=False,
    go_backwards=False,
    unroll=False,
    time_major=False,
):
    return _fused(
        "lstm", inputs, [initial_state_h, initial_state_c], mask, kernel, recurrent_kernel, bias,
        activation, recurrent_activation, return_sequences, go_backwards, time_major,
    )


def _fused(name, inputs, states, mask, kernel, recurrent_kernel, bias,
           activation, recurrent_activation, return_sequences, go_backwards,
           time_major):
    """Run the engine's fused `name` layer and return what Keras's rnn.lstm and
    rnn.gru return: the last output, the outputs (every step's, batch-major
    unless time_major, or the last one alone) and the final states; raise
    ``NotImplementedError`` (Keras then runs the generic loop) for what it
    does not compute: a mask (the loop's masked semantics stay with it), an
    activation other than tanh with sigmoid gates, mixed dtypes or one other
    than float32/float64 (mixed precision keeps float32 kernels beside float16
    inputs), and nested tapes: the fused backward pass is a kernel, so jvp and
    create_graph, which differentiate it again, need the loop's ops."""
    if (
        _C.tape_depth() > 1
        or mask is not None
        or activation is not activations.tanh
        or recurrent_activation is not activations.sigmoid
    ):
        raise NotImplementedError
    tensors = [
        convert_to_tensor(t)
        for t in [inputs, *states, kernel, recurrent_kernel]
        + ([] if bias is None else [bias])
    ]
    dtype = tensors[0].dtype
    if dtype not in ("float32", "float64") or any(t.dtype != dtype for t in tensors):
        raise NotImplementedError
    if time_major:
        tensors[0] = op("transpose", tensors[0], perm=[1, 0, 2])
    outputs, *final = op(name, *tensors, go_backwards=bool(go_backwards))
    h = final[0]
    if not return_sequences:
        outputs = knp.expand_dims(h, 0 if time_major else 1)
    elif time_major:
        outputs = op("transpose", outputs, perm=[1, 0, 2])
    return h, outputs, final


def gru(
    inputs,
    initial_state,
    mask,
    kernel,
    recurrent_kernel,
    bias,
    activation,
    recurrent_activation,
    return_sequences=False,
    go_backwards=False,
    unroll=False,
    time_major=False,
    reset_after=True,
):
    # The fused op computes reset_after cells (Keras 3's default, cuDNN's form);
    # otherwise as for lstm.
    if not reset_after:
        raise NotImplementedError
    return _fused(
        "gru", inputs, [initial_state], mask, kernel, recurrent_kernel, bias,
        activation, recurrent_activation, return_sequences, go_backwards, time_major,
    )


def bidirectional_lstm(*args, **kwargs):
    raise NotImplementedError


def bidirectional_gru(*args, **kwargs):
    raise NotImplementedError


def cudnn_ok(*args, **kwargs):
    return False
