"""The original notebooks' regressor: ResNet50 -> global average pooling -> Dense(1, ReLU)."""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, ops

from edge_app.errors import AgecheckError
from training.metrics import KEY_ADULT_FROM_YEARS, KEY_TEEN_YEARS, teens_and_adults

# ResNet50's ImageNet preprocessing ("caffe" mode): RGB -> BGR, minus the ImageNet BGR means.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="agecheck")
class ResNetPreprocess(layers.Layer):
    """ResNet50's input preprocessing inside the model, so the ``.tflite`` takes uint8 RGB."""

    def call(self, inputs):  # noqa: D102
        # A gather, not ops.flip: the int8 REVERSE_V2 that flip becomes in TFLite put ~46
        # quantisation steps of error on every pixel (TFLite's QuantizationDebugger), which
        # cost the exported model ~0.75 years of MAE; GATHER is exact in int8.
        bgr = ops.take(ops.cast(inputs, self.compute_dtype), [2, 1, 0], axis=-1)
        return bgr - ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype=self.compute_dtype)


def _backbone(input_size: int, weights: str) -> keras.Model:
    if weights == "none":
        keras_weights = None
    elif weights == "imagenet":
        keras_weights = "imagenet"
    else:
        if not Path(weights).is_file():
            raise AgecheckError(f"--weights {weights}: no such file; expected imagenet, none or a path")
        keras_weights = weights
    try:
        return keras.applications.ResNet50(
            include_top=False, weights=keras_weights, input_shape=(input_size, input_size, 3)
        )
    except Exception as error:  # Keras raises bare Exception for failed downloads
        if weights == "imagenet":
            raise AgecheckError(
                f"could not get ImageNet weights for ResNet50 ({type(error).__name__}: {error}); "
                "on a machine without internet pass --weights PATH (a local Keras ResNet50 "
                "'notop' weights file) or --weights none to train from scratch"
            ) from None
        raise AgecheckError(f"--weights {weights} could not be loaded into ResNet50: {error}") from None


def check_weights(weights: str, input_size: int) -> None:
    """Fail now, not after an hour of cropping, if the backbone weights cannot be had.

    ``imagenet`` is downloaded into Keras' cache (a later build reuses it); a path is loaded.

    Raises:
        AgecheckError: if the weights cannot be had.
    """
    if weights != "none":
        _backbone(max(input_size, 32), weights)


REGRESSOR_NAME = "resnet50_age_regressor"


def load_regressor(path: str | Path) -> keras.Model:
    """An earlier run's regressor to fine-tune, at whatever input side it was trained.

    ``path`` is a run's ``model.keras`` or an exported ``.tflite`` (the float regressor is
    rebuilt from its int8 weights, batch normalisations folded and frozen:
    `training.from_tflite`), so that a shipped model whose run is gone can still be tuned.
    ResNet50 and the global pooling are fully convolutional, so its weights also start a
    fine-tune at another ``--image-size`` (its ``input_shape`` says which side it had).

    Raises:
        AgecheckError: if the file is missing or is not a model of this project.
    """
    if not Path(path).is_file():
        raise AgecheckError(f"--init-model {path}: no such file; expected an earlier run's model.keras or a .tflite")
    if Path(path).suffix == ".tflite":
        from training.from_tflite import regressor_from_tflite

        return regressor_from_tflite(path)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises ValueError, OSError or zipfile errors here
        raise AgecheckError(f"--init-model {path} could not be loaded as a Keras model: {error}") from None
    shape = tuple(model.input_shape[1:])
    if model.name != REGRESSOR_NAME or len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3:
        raise AgecheckError(f"--init-model {path} is a Keras model {model.name!r} taking {shape}; expected this "
                            f"project's {REGRESSOR_NAME!r} taking square RGB images (a run's model.keras)")
    return model


def build_model(
    input_size: int,
    weights: str = "imagenet",
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-4,
    initial_age_years: float = 0.0,
) -> keras.Model:
    """A compiled ResNet50 age regressor.

    Args:
        input_size: side of the square uint8 RGB input in pixels (>= 32).
        weights: ``imagenet``, ``none`` (from scratch) or the path of a ResNet50 notop weights file.
        learning_rate: Adam's learning rate or schedule.
        initial_age_years: starting bias of the output unit. Starting at the training mean
            instead of 0 saves the first epoch from learning the mean age alone.

    Returns:
        A model compiled with MSE loss, Adam and the MAE metric.

    Raises:
        ValueError: if ``input_size`` < 32 (ResNet50 downsamples 32x).
        AgecheckError: if the weights cannot be had.
    """
    if input_size < 32:
        raise ValueError(f"input_size must be >= 32 for ResNet50, got {input_size}")
    backbone = _backbone(input_size, weights)
    inputs = keras.Input((input_size, input_size, 3), name="rgb_uint8_values")
    x = ResNetPreprocess(name="resnet_preprocess")(inputs)
    # The whole network trains end to end, as in the original notebooks.
    x = backbone(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    # float32 output even under mixed precision: the loss and the exported age need it.
    outputs = layers.Dense(
        1, activation="relu", dtype="float32", name="age_years",
        bias_initializer=keras.initializers.Constant(initial_age_years),
    )(x)
    model = keras.Model(inputs, outputs, name=REGRESSOR_NAME)
    compile_model(model, learning_rate)
    return model


# The smallest true gap between the key figure's groups: a 17-year-old and a 25-year-old are
# 7 years (and a day) apart.
KEY_RANK_GAP_YEARS = float(KEY_ADULT_FROM_YEARS - KEY_TEEN_YEARS[1])


def key_rank_term(true_years, estimate_years):
    """Per sample: the batch's 13-17s read too close to (or above) its adults 25+.

    Each (teenager, adult) pair of the batch costs ``relu(teen - adult + 7)^2`` years²: nothing
    once the teenager's estimate is `KEY_RANK_GAP_YEARS` below the adult's, as their true ages
    are at least. The product's key figure asks exactly this ordering; the squared error sees
    each face alone. Each sample carries half the cost of its pairs, scaled so that the
    batch's mean of the term is the mean cost per pair (0 where the batch lacks either group),
    so sample weights apply as to the squared error.

    Args:
        true_years: (B,) labels.
        estimate_years: (B,) estimates.
    """
    teen, adult = (ops.cast(group, "float32") for group in teens_and_adults(true_years))  # on tensors too
    pairs = teen[:, None] * adult[None, :]
    cost = pairs * ops.square(ops.relu(estimate_years[:, None] - estimate_years[None, :] + KEY_RANK_GAP_YEARS))
    batch = ops.cast(ops.shape(true_years)[0], "float32")
    return batch * (ops.sum(cost, axis=1) + ops.sum(cost, axis=0)) / (2.0 * ops.maximum(ops.sum(pairs), 1.0))


def age_loss(consistency: float = 0.0, rank_weight: float = 0.0):
    """The training loss, per sample: squared error, the notebooks' recipe, plus two options.

    ``consistency`` > 0: the trainer estimates two augmented views of each crop, (B, 2); each
    view's squared error is averaged and ``consistency`` times the squared gap between the two
    estimates added: texture, light and glasses that differ between the views must not change
    the age. ``rank_weight`` > 0 adds that much of `key_rank_term` on the (views' mean)
    estimate. With neither, plain ``"mse"``.
    """
    if consistency == 0 and rank_weight == 0:
        return "mse"

    def loss(y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.reshape(ops.cast(y_true, "float32"), (-1, 1))
        per_sample = ops.mean(ops.square(y_pred - y_true), axis=-1)
        if consistency > 0:
            per_sample = per_sample + consistency * ops.square(y_pred[:, 0] - y_pred[:, 1])
        if rank_weight > 0:
            per_sample = per_sample + rank_weight * key_rank_term(y_true[:, 0], ops.mean(y_pred, axis=-1))
        return per_sample

    return loss


# Weight decay leaves these alone: shrinking a batch norm's scale and shift or a bias does
# not simplify the model, it only moves its working point.
NOT_DECAYED = ("bias", "gamma", "beta")


def compile_model(
    model: keras.Model, learning_rate, consistency: float = 0.0, weight_decay: float = 0.0, rank_weight: float = 0.0
) -> None:
    """MSE loss, Adam, MAE metric: the original notebooks' recipe.

    With ``consistency`` > 0 the model estimates two views (`age_loss`); its MAE is the mean
    over both. ``rank_weight`` > 0 adds `key_rank_term` to the loss. With ``weight_decay`` > 0
    the optimizer is AdamW: each step shrinks every kernel by ``learning_rate *
    weight_decay`` of itself, apart from the gradient (decoupled), and leaves `NOT_DECAYED`
    variables alone.
    """
    loss = age_loss(consistency, rank_weight)
    if weight_decay > 0:
        optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
        optimizer.exclude_from_weight_decay(var_names=list(NOT_DECAYED))
    else:
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    model.compile(optimizer=optimizer, loss=loss, metrics=["mae"])


def mirror_averaged(regressor: keras.Model) -> keras.Model:
    """The regressor's mean over each crop and its mirror image, as one model to export.

    Faces are near-symmetric; the two estimates err partly independently, so their mean is
    closer (validation MAE 6.25 -> 6.11, 13-17 flagged at 10% of 25+ 68% -> 71% for the
    2026-11-26 model; `docs/MODEL.md`). The mirror is a gather along the width, exact in int8
    (a flip would become REVERSE_V2, see `ResNetPreprocess`). Costs a second pass per face.
    """
    size = int(regressor.input_shape[1])
    inputs = keras.Input((size, size, 3), name="rgb_uint8_values")
    mirrored = layers.Lambda(lambda x: ops.take(x, list(range(size - 1, -1, -1)), axis=2), name="mirror")(inputs)
    both = layers.Average(name="mean_of_crop_and_mirror")([regressor(inputs), regressor(mirrored)])
    return keras.Model(inputs, both, name=f"{regressor.name}_mirror_averaged")
