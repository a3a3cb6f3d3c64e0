"""lesson_helpers.quantise: rounding as LiteRT's converter rounds, and bias correction (episode 4).

The models here are small and made up, with weights chosen so that rounding them to int8 shifts the
outputs: a channel whose many small weights all round down, and a BatchNormalization layer that
magnifies the channel (a small moving variance), as in MobileNetV2's first depthwise layer.
"""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from lesson_helpers.quantise import correct_bias, round_like_int8, rounded_copy  # noqa: E402


def test_round_like_int8_is_symmetric_per_channel_with_127_levels_each_side():
    kernel = np.array([[0.5, -0.003], [1.27, 0.002], [-0.013, 0.0]], dtype="float32")  # channels are columns
    rounded = round_like_int8(kernel, channel_axis=-1)
    assert rounded.dtype == kernel.dtype
    np.testing.assert_allclose(rounded[:, 0], [0.5, 1.27, -0.01], atol=1e-7)  # step 1.27 / 127 = 0.01
    step = 0.003 / 127  # the second channel has its own, finer step: 0.002 is 84.7 steps, rounded to 85
    np.testing.assert_allclose(rounded[:, 1], [-127 * step, 85 * step, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(round_like_int8(rounded, -1), rounded)  # already on the levels
    np.testing.assert_array_equal(round_like_int8(np.zeros((2, 2), "float32"), -1), 0)  # an all-zero channel


def small_net(seed=0):
    """Rescaling, a functional part (conv, depthwise conv, 1x1 conv, each without bias + BatchNormalization),
    pooling and a dense head in a Sequential of its own: nested as episode 3's door is. The depthwise layer's
    eight small weights per channel all round to 0, and its BatchNormalization magnifies what they did."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input(shape=(12, 12, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_BN")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="depthwise_BN")(x)
    x = keras.layers.Conv2D(4, 1, use_bias=False, name="project")(x)
    x = keras.layers.BatchNormalization(name="project_BN")(x)
    base = keras.Model(inputs, x, name="base")
    model = keras.Sequential([keras.Input(shape=(12, 12, 3)), keras.layers.Rescaling(1 / 127.5, offset=-1), base,
                              keras.layers.GlobalAveragePooling2D(),
                              keras.Sequential([keras.layers.Dense(1, name="logit")], name="head")], name="door")
    base.get_layer("stem").set_weights([rng.normal(0, 0.5, (3, 3, 3, 6)).astype("float32")])
    depthwise = np.full((3, 3, 6, 1), 0.003, "float32")  # below half a step (1 / 127 / 2)...
    depthwise[1, 1, :, 0] = 1.0                           # ...of a channel whose largest weight is 1
    base.get_layer("depthwise").set_weights([depthwise])
    base.get_layer("project").set_weights([np.full((1, 1, 6, 4), 0.5, "float32")])
    model.get_layer("head").get_layer("logit").set_weights([np.ones((4, 1), "float32"), np.zeros(1, "float32")])
    for name, channels in [("stem_BN", 6), ("depthwise_BN", 6), ("project_BN", 4)]:
        variance = np.full(channels, 1e-3 if name == "depthwise_BN" else 1.0, "float32")  # magnifies the shift
        base.get_layer(name).set_weights([np.ones(channels, "float32"), rng.normal(0, 0.1, channels).astype("float32"),
                                          rng.normal(0, 0.1, channels).astype("float32"), variance])
    return model


def pictures(n=40, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (n, 12, 12, 3)).astype("float32")


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))[:, 0]


def test_correct_bias_cancels_the_shift_that_rounding_causes():
    model = small_net()
    before = [w.copy() for w in model.get_weights()]
    x, others = pictures(), pictures(seed=2)
    shift = np.mean(outputs(rounded_copy(model), others) - outputs(model, others))
    corrected = correct_bias(model, x)
    corrected_shift = np.mean(outputs(rounded_copy(corrected), others) - outputs(model, others))
    assert abs(shift) > 0.05, f"the test net should shift when rounded, shifted {shift:.4f}"
    assert abs(corrected_shift) < 0.1 * abs(shift), f"shift {shift:.4f} -> {corrected_shift:.4f} after correction"
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)  # the float model is left as it was
    # Only biases and betas change; the kernels stay float (the converter rounds them).
    changed = {layer.name for layer in _all(corrected) for old, new in
               zip(_weights_of(model, layer.name), layer.get_weights()) if not np.array_equal(old, new)}
    assert changed <= {"stem_BN", "depthwise_BN", "project_BN", "logit"}, changed
    assert "depthwise_BN" in changed


def test_models_inside_a_functional_model_are_corrected_too():
    """As in lesson_helpers.night's quick door: a functional model calling a whole base model as one layer."""
    door = small_net()
    rescale, base, pool, head = door.layers
    inputs = keras.Input(shape=(12, 12, 3))
    model = keras.Model(inputs, head(pool(base(rescale(inputs)))), name="quick_door")
    others = pictures(seed=2)
    shift = np.mean(outputs(rounded_copy(model), others) - outputs(model, others))
    corrected_shift = np.mean(outputs(rounded_copy(correct_bias(model, pictures())), others) - outputs(model, others))
    assert abs(shift) > 0.05 and abs(corrected_shift) < 0.1 * abs(shift), (shift, corrected_shift)
    assert "call" not in vars(base.get_layer("depthwise"))  # the recording is gone after the pass


def test_rounded_copy_rounds_only_what_it_is_asked_to():
    model = small_net()
    copy = rounded_copy(model, only=["depthwise"])
    for layer in _all(copy):
        for old, new in zip(_weights_of(model, layer.name), layer.get_weights()):
            assert np.array_equal(old, new) == (layer.name != "depthwise"), layer.name
    kept = rounded_copy(model, keep_float=["depthwise"])
    np.testing.assert_array_equal(_weights_of(kept, "depthwise")[0], _weights_of(model, "depthwise")[0])
    assert not np.array_equal(_weights_of(kept, "stem")[0], _weights_of(model, "stem")[0])


def test_layers_kept_in_float_are_not_corrected():
    model = small_net()
    corrected = correct_bias(model, pictures(), keep_float=["depthwise"])
    np.testing.assert_array_equal(_weights_of(corrected, "depthwise_BN")[1], _weights_of(model, "depthwise_BN")[1])
    with pytest.raises(ValueError, match=r"keep_float names layers the model does not have: \['dephtwise'\]"):
        correct_bias(model, pictures(), keep_float=["dephtwise"])


def test_what_cannot_be_corrected_is_a_clear_error():
    x = pictures(4)[:, :8, :8]
    inputs = keras.Input(shape=(8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, use_bias=False, name="bare")(inputs))
    with pytest.raises(ValueError, match="layer bare has no bias and no BatchNormalization .* keep_float"):
        correct_bias(model, x)
    inner = keras.layers.Conv2D(2, 3, use_bias=False, activation="relu", name="relu_inside")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inner))
    with pytest.raises(ValueError, match="layer relu_inside has no bias and an activation of its own"):
        correct_bias(model, x)
    model = keras.Model(inputs, keras.layers.Conv1D(2, 3, name="one_d")(keras.layers.Reshape((64, 3))(inputs)))
    with pytest.raises(ValueError, match="layer one_d: Conv1D layers are not supported here"):
        correct_bias(model, x)
    assert "call" not in vars(model.get_layer("one_d"))


def test_names_are_checked():
    model = small_net()
    with pytest.raises(ValueError, match=r"only names layers the model does not have: \['depthwsie'\]"):
        rounded_copy(model, only=["depthwsie"])
    with pytest.raises(TypeError, match=r"keep_float takes a list of layer names, not one string: keep_float=\['stem'\]"):
        correct_bias(model, pictures(), keep_float="stem")


def test_a_layer_run_twice_is_averaged_over_both_runs():
    """A layer shared by two branches sees two inputs per picture: its average input counts both."""
    inputs = keras.Input(shape=(4,))
    shared = keras.layers.Dense(2, name="shared")
    double = keras.layers.Rescaling(2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Add()([shared(inputs), shared(double)]))
    shared.set_weights([np.array([[1.0, 0.003]] * 3 + [[1.0, 1.0]], "float32"), np.zeros(2, "float32")])
    x = np.ones((10, 4), "float32")
    corrected = correct_bias(model, x)
    # Average input 1.5 per feature (1 and 2). The second output's three small weights (0.003, below half its step
    # of 1/127) round to 0: a shift of 3 * 1.5 * -0.003, which the bias makes up for; the first output's are exact.
    np.testing.assert_allclose(corrected.get_layer("shared").get_weights()[1], [0.0, 0.0135], atol=1e-6)


def test_rounding_is_the_converters(tmp_path):
    """The int8 weights in a LiteRT file, turned back into floats, are round_like_int8 of the Keras weights."""
    rng = np.random.default_rng(3)
    inputs = keras.Input(shape=(8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")
    dense = keras.layers.Dense(3, name="dense")
    x = depthwise(keras.layers.ReLU()(conv(inputs)))
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(x)))
    conv.set_weights([rng.normal(0, 1, (3, 3, 3, 4)).astype("float32") * [0.01, 0.1, 1, 10],
                      np.zeros(4, "float32")])
    depthwise.set_weights([rng.normal(0, 1, (3, 3, 4, 1)).astype("float32"), np.zeros(4, "float32")])
    dense.set_weights([rng.normal(0, 1, (4, 3)).astype("float32") * [0.01, 1, 100], np.zeros(3, "float32")])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, 8, 8, 3)).astype("float32")] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path = tmp_path / "net.tflite"
    path.write_bytes(converter.convert())
    interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    found = {}
    for detail in interpreter.get_tensor_details():
        params = detail["quantization_parameters"]
        if detail["dtype"] == np.int8 and tuple(detail["shape"]) in {(4, 3, 3, 3), (1, 3, 3, 4), (3, 4)}:
            values = interpreter.get_tensor(detail["index"]).astype("float32")
            axis = params["quantized_dimension"]
            scales = params["scales"].reshape([-1 if i == axis else 1 for i in range(values.ndim)])
            found[tuple(detail["shape"])] = values * scales
    assert set(found) == {(4, 3, 3, 3), (1, 3, 3, 4), (3, 4)}, f"int8 weights not found: {sorted(found)}"
    expected_conv = round_like_int8(conv.get_weights()[0], -1).transpose(3, 0, 1, 2)      # LiteRT: out, h, w, in
    expected_depthwise = round_like_int8(depthwise.get_weights()[0], 2).transpose(3, 0, 1, 2)  # 1, h, w, channels
    np.testing.assert_allclose(found[(4, 3, 3, 3)], expected_conv, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(found[(1, 3, 3, 4)], expected_depthwise, rtol=1e-5, atol=1e-7)
    expected_dense = round_like_int8(dense.get_weights()[0], -1).T  # LiteRT: out, in; one scale per output
    np.testing.assert_allclose(found[(3, 4)], expected_dense, rtol=1e-5, atol=1e-7)


def _all(model):
    """The layers of a model, those of the models inside it included (but not those models themselves)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all(layer)
        else:
            yield layer


def _weights_of(model, name):
    return next(layer for layer in _all(model) if layer.name == name).get_weights()
