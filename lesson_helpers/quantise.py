"""Bias correction before full-integer (int8) conversion (episode 4).

LiteRT's converter stores each convolution's and dense layer's weights as 8-bit integers, one scale per
output channel: every weight moves to the nearest of 255 levels (-127 to 127 steps) between minus and plus
the largest weight of its channel. The weights are rounded once, so every picture meets the same errors;
where a layer's inputs are mostly positive (after a ReLU), those errors do not cancel out, and the layer's
output channels move by almost the same amount for every picture: a *shift*, which later layers carry
along. *Bias correction* (the empirical variant in Nagel et al. 2019, "Data-free quantization through
weight equalization and bias correction"; also Finkelstein et al. 2019) measures that shift on a few
pictures and subtracts it from the layer's bias before the conversion. The converter then rounds the
weights as before, and the shifts cancel out on average.

:func:`correct_bias` does this for every ``Conv2D``, ``DepthwiseConv2D`` and ``Dense`` layer of a Keras
model (models inside models included), from the average input of each layer on the given pictures, all
measured in one pass of the float model. A layer without a bias of its own (MobileNetV2's convolutions)
has its shift subtracted from the ``beta`` of the ``BatchNormalization`` layer that follows it.
:func:`rounded_copy` rounds the weights in Keras as the converter will, to look at what rounding does
without converting.

The correction is for full-integer conversion, which rounds every weight. Dynamic-range conversion leaves
small layers (MobileNetV2's first ones) in float: a corrected copy converted that way is worse than no
correction. The same holds for layers kept in float on purpose: name them in ``keep_float``.
"""

import numpy as np

WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense")  # layers whose kernels the converter quantises per channel


def round_like_int8(kernel, channel_axis):
    """``kernel`` with each output channel rounded to 8-bit integers, symmetric, scale = max |w| / 127
    (what LiteRT's converter does to the weights of a convolution or a dense layer)."""
    kernel = np.asarray(kernel)
    others = tuple(axis for axis in range(kernel.ndim) if axis != channel_axis % kernel.ndim)
    scale = np.abs(kernel).max(axis=others, keepdims=True) / 127
    scale = np.where(scale == 0, 1, scale)
    return (np.clip(np.round(kernel / scale), -127, 127) * scale).astype(kernel.dtype)


def _kind(layer):
    """'Conv2D', 'DepthwiseConv2D', 'Dense', or None for a layer without weights the converter rounds.
    Other layers with a kernel (Conv1D, SeparableConv2D, ...) are refused rather than left out silently."""
    kind = next((kind for kind in WEIGHTED if type(layer).__name__ == kind), None)
    if kind is None and getattr(layer, "kernel", None) is not None and not getattr(layer, "layers", None):
        raise ValueError(f"layer {layer.name}: {type(layer).__name__} layers are not supported here "
                         f"(only {', '.join(WEIGHTED)})")
    return kind


def _channel_axis(layer):
    """The output-channel axis of a layer's kernel: (h, w, in, out) for Conv2D, (h, w, channels, 1) for
    DepthwiseConv2D (channel multiplier 1, as in MobileNetV2), (in, out) for Dense."""
    kind = _kind(layer)
    if kind == "DepthwiseConv2D":
        if layer.depth_multiplier != 1:
            raise ValueError(f"layer {layer.name}: only depth_multiplier 1 is supported here")
        return 2
    return -1


def _owners(model):
    """(layer, the model it sits in) for every layer, models inside models opened up, in order."""
    for layer in model.layers:
        yield layer, model
        if hasattr(layer, "layers") and layer.layers:
            yield from _owners(layer)


def _names(argument, what):
    if isinstance(argument, str):
        raise TypeError(f"{what} takes a list of layer names, not one string: {what}=[{argument!r}]")
    return set(argument)


def _weighted(model, keep_float=(), only=None):
    """(layer, owner) for the layers whose weights the converter rounds, less those in ``keep_float``,
    and only those in ``only`` if given. Unknown names are an error: a typo must not pass silently."""
    keep_float = _names(keep_float, "keep_float")
    known = {layer.name for layer, _ in _owners(model)}
    for names, what in [(keep_float, "keep_float"), (_names(only or (), "only"), "only")]:
        if names - known:
            raise ValueError(f"{what} names layers the model does not have: {sorted(names - known)}")
    return [(layer, owner) for layer, owner in _owners(model)
            if _kind(layer) and layer.name not in keep_float and (only is None or layer.name in only)]


def rounded_copy(model, only=None, keep_float=()):
    """A copy of ``model`` with the kernels of its weighted layers rounded as int8 (:func:`round_like_int8`):
    all of them, or those named in ``only``, except those named in ``keep_float``."""
    copy = _copy(model)
    for layer, _ in _weighted(copy, keep_float, only):
        weights = layer.get_weights()
        weights[0] = round_like_int8(weights[0], _channel_axis(layer))
        layer.set_weights(weights)
    return copy


def _copy(model):
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _mean_inputs(model, pictures, layers, batch_size):
    """The input of each layer averaged over all the times it ran (one array per layer, without the batch
    axis), from one pass of the float model in batches (memory holds one batch's activations only). Each
    layer's ``call`` records its input on the way, wherever the layer sits in models inside models."""
    import keras

    sums = {id(layer): 0.0 for layer in layers}
    counts = {id(layer): 0 for layer in layers}

    def recording(layer, call):
        def call_and_record(inputs, *args, **kwargs):
            sums[id(layer)] = sums[id(layer)] + keras.ops.convert_to_numpy(keras.ops.sum(inputs, axis=0))
            counts[id(layer)] += int(inputs.shape[0])
            return call(inputs, *args, **kwargs)
        return call_and_record

    before = {id(layer): layer.__dict__.get("call") for layer in layers}  # an instance's own call, if any
    for layer in layers:
        layer.call = recording(layer, layer.call)
    try:
        for start in range(0, len(pictures), batch_size):
            model(np.asarray(pictures[start:start + batch_size], dtype="float32"), training=False)
    finally:
        for layer in layers:
            del layer.call
            if before[id(layer)] is not None:
                layer.call = before[id(layer)]
    missing = [layer.name for layer in layers if not counts[id(layer)]]
    if missing:
        raise ValueError(f"{model.name}: layers {missing} did not run when the model ran")
    return [sums[id(layer)] / counts[id(layer)] for layer in layers]


def _following_batch_norm(layer, owner):
    """The BatchNormalization layer that takes ``layer``'s output, in the model that holds both."""
    import keras

    for candidate in owner.layers:
        if isinstance(candidate, keras.layers.BatchNormalization):
            try:
                if candidate.input is layer.output:
                    return candidate
            except (AttributeError, ValueError):  # a layer used more than once, or never called
                continue
    return None


def correct_bias(model, pictures, keep_float=(), batch_size=20):
    """A copy of ``model`` whose biases cancel, on average over ``pictures``, the shift that rounding each
    layer's weights to int8 causes (see the module's docstring). ``keep_float``: names of layers that
    will stay in float (selective quantisation): they are left as they are. Convert the copy to full
    integer (int8), not the original; the copy's own float outputs are slightly off, by design."""
    import keras

    corrected = _copy(model)
    layers = _weighted(corrected, keep_float)
    if not layers:
        raise ValueError(f"{model.name}: no Conv2D, DepthwiseConv2D or Dense layer to correct")
    means = _mean_inputs(corrected, pictures, [layer for layer, _ in layers], batch_size)
    for (layer, owner), mean_input in zip(layers, means):
        weights = layer.get_weights()
        shift = _mean_output(layer, round_like_int8(weights[0], _channel_axis(layer)) - weights[0], mean_input)
        if layer.use_bias:  # the bias comes before the layer's activation, as the shift does
            weights[1] = weights[1] - shift
            layer.set_weights(weights)
            continue
        if layer.activation is not keras.activations.linear:
            raise ValueError(f"layer {layer.name} has no bias and an activation of its own: its shift cannot be "
                             "corrected after it (name it in keep_float to leave it in float)")
        norm = _following_batch_norm(layer, owner)
        if norm is None or not norm.center or norm.axis not in (-1, [-1], len(layer.output.shape) - 1,
                                                                [len(layer.output.shape) - 1]):
            raise ValueError(f"layer {layer.name} has no bias and no BatchNormalization with a beta (over its "
                             "last axis) after it: its shift cannot be corrected (name it in keep_float to "
                             "leave it in float)")
        values = dict(zip(["gamma"] * norm.scale + ["beta", "moving_mean", "moving_variance"], norm.get_weights()))
        gain = values.get("gamma", 1.0) / np.sqrt(values["moving_variance"] + norm.epsilon)
        values["beta"] = values["beta"] - gain * shift  # BatchNormalization(x + shift) = BatchNormalization(x) + gain * shift
        norm.set_weights(list(values.values()))
    return corrected


def _mean_output(layer, kernel, mean_input):
    """The output of ``layer``'s linear part with ``kernel`` (no bias, no activation) for the average input,
    averaged over positions: since the layer is linear, the average of its outputs."""
    import keras

    kind = _kind(layer)
    if kind == "Dense":
        flat = np.asarray(mean_input).reshape(-1, kernel.shape[0]).mean(axis=0)
        return flat @ kernel
    if getattr(layer, "data_format", "channels_last") != "channels_last" or getattr(layer, "groups", 1) != 1:
        raise ValueError(f"layer {layer.name}: bias correction supports channels_last, ungrouped convolutions only")
    convolve = keras.ops.conv if kind == "Conv2D" else keras.ops.depthwise_conv
    out = convolve(mean_input[np.newaxis], kernel, strides=layer.strides, padding=layer.padding,
                   dilation_rate=layer.dilation_rate)
    return keras.ops.convert_to_numpy(keras.ops.mean(out, axis=(0, 1, 2)))
