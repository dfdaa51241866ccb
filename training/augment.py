"""Camera-like augmentation as one Keras layer, written in ``keras.ops`` for any backend.

The shipped model read *texture* as age: noise and JPEG blocks made faces older, blur and
downscaling younger, local contrast (CLAHE) much older. Training on clean aligned chips
never showed it otherwise. `CameraAugment` shows it, on the fly and on the accelerator,
the corruptions of a till camera and of old photos, each sample drawing its own:

- geometry: mirror, roll, zoom and shift of the crop (from a stored crop with context);
- light and colour: exposure (gamma and gain), contrast, colour cast (white balance),
  saturation down to grey, faded tinted prints;
- texture, both ways: blur and sharpening, local-contrast boost and flattening, CLAHE-like
  equalisation (by spread at three scales, or by rank), motion blur, downscaling, sensor
  noise, film grain, JPEG blocks (an 8x8 DCT quantiser).

`SyntheticGlasses`, before it on ``--glasses-share`` of the crops (0.25 by default), draws spectacles on
the eyes: the shipped model reads glasses as age (`bench/glasses.py`). `SyntheticMask`, beside it on
``--mask-share`` of the crops (off by default), draws a face mask: the shipped model reads a masked
teenager far older (`bench/glasses.py --draw mask`). `BorderFill`, first of
all on ``--border-fill`` of the crops (off by default), puts varied content where a crop's
framing left its photo: the shipped model reads UTKFace's replicated chip edges (`bench/crop_border.py`).

Written in ``keras.ops`` so that the same layer runs in ``tf.data`` on a CPU and inside the
jitted train step of the JAX or PyTorch backend on a GPU machine without TensorFlow. At
inference (``training=False``) it only cuts the crop's centre, so a model evaluated with it
sees exactly the card's framing.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

# ITU-R BT.601 RGB -> YCbCr (JPEG's), and the JPEG standard's quantisation tables (Annex K).
_RGB_TO_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                       np.float32)
_JPEG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float32).reshape(8, 8)
_JPEG_CHROMA = np.full((8, 8), 99, np.float32)
_JPEG_CHROMA[:4, :4] = np.array([17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 99, 47, 66, 99, 99]).reshape(4, 4)
GREY_WEIGHTS = (0.299, 0.587, 0.114)
CLEAN_SHARE = 0.2  # samples left without photometric corruption
# Neighbourhoods of the CLAHE-like equalisation (Gaussian sigma, crop pixels). A model trained
# with 4 px alone still reads CLAHE's small tiles on UTKFace's chips as +5 years
# (`bench/texture.py`, docs/MODEL.md "Texture").
EQUALISE_SCALES_PX = (1.2, 2.0, 4.0)
# Half-widths of the rank (histogram) equalisation's window, crop pixels: CLAHE maps each
# pixel through its tile's histogram, which a spread-scaling equalisation only imitates.
RANK_HALF_WINDOWS_PX = (4, 8)
# Where the eyes sit around the squared BlazeFace box (eyes levelled), as offsets from its
# centre in box sides: the mean over 299 training photos, spread 0.02-0.03
# (`python bench/glasses.py --measure-eyes`). Right eye (image left) first.
EYES_IN_BOX = ((-0.183, -0.161), (0.213, -0.161))


def dct_matrix(n: int = 8) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``D @ block @ D.T`` are a block's coefficients."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    d = np.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.astype(np.float32)


def gaussian_kernel(sigma_px: float) -> np.ndarray:
    """(k, k, 3, 1) depthwise Gaussian kernel, k = 2 * ceil(3 sigma) + 1."""
    radius = max(1, math.ceil(3 * sigma_px))
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    g = np.exp(-(t**2) / (2 * sigma_px**2))
    k2 = np.outer(g, g) / np.outer(g, g).sum()
    return np.repeat(k2[:, :, None, None], 3, axis=2).astype(np.float32)


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """(k, k, 3, 1) line kernel of ``length`` pixels at ``angle_deg``."""
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    for t in np.linspace(-c, c, 4 * length):
        x = int(round(c + t * math.cos(math.radians(angle_deg))))
        y = int(round(c + t * math.sin(math.radians(angle_deg))))
        k[y, x] = 1
    k /= k.sum()
    return np.repeat(k[:, :, None, None], 3, axis=2)


def jpeg_tables(quality: np.ndarray) -> np.ndarray:
    """Libjpeg's quality scaling of the standard tables: (..., 3, 8, 8) for Y, Cb, Cr."""
    quality = np.asarray(quality, np.float32)
    scale = np.where(quality < 50, 5000 / quality, 200 - 2 * quality)[..., None, None, None]
    base = np.stack([_JPEG_LUMA, _JPEG_CHROMA, _JPEG_CHROMA])
    return np.clip(np.floor((base * scale + 50) / 100), 1, 255)


@keras.saving.register_keras_serializable(package="agecheck")
class CameraAugment(layers.Layer):
    """Random camera-like corruption of face crops; the crop's centre at inference.

    Args:
        output_size: side of the output crops (the model's input) in pixels.
        context: how much wider than the card's framing the stored crops are (1.25: the
            stored crop's central 80% is the framing). Room for roll, zoom and shift.
        strength: 0 turns every corruption off (geometry too), 1 is the default mix.
        seed: seeds the layer's random stream.

    Input: (B, S, S, 3) RGB values 0-255, S = the stored crop's side. Output: (B,
    output_size, output_size, 3) float32 values 0-255.
    """

    def __init__(self, output_size: int, context: float = 1.25, strength: float = 1.0, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # pixel arithmetic stays float32 under mixed precision
        super().__init__(**kwargs)
        if output_size < 16 or output_size % 8:
            raise ValueError(f"output_size must be a multiple of 8 and >= 16, got {output_size}")
        if not 1.0 <= context <= 2.0:
            raise ValueError(f"context must be in [1, 2], got {context}")
        if not 0.0 <= strength <= 2.0:
            raise ValueError(f"strength must be in [0, 2], got {strength}")
        self.output_size = int(output_size)
        self.context = float(context)
        self.strength = float(strength)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._blur = {s: gaussian_kernel(s) for s in (0.7, 1.2, 2.0, 3.0, 4.0)}
        self._motion = [motion_kernel(7, a) for a in (0, 45, 90, 135)]
        self._dct = dct_matrix()
        self._quality_levels = np.array([15, 25, 35, 50, 70], np.float32)
        self._jpeg = jpeg_tables(self._quality_levels)

    def get_config(self) -> dict:  # noqa: D102
        return super().get_config() | {
            "output_size": self.output_size, "context": self.context, "strength": self.strength, "seed": self.seed,
        }

    def compute_output_shape(self, input_shape):  # noqa: D102
        return (input_shape[0], self.output_size, self.output_size, 3)

    # -- helpers -------------------------------------------------------------------------
    def _uniform(self, batch, lo, hi, channels=1):
        return keras.random.uniform((batch, 1, 1, channels), lo, hi, seed=self.seed_generator)

    def _chance(self, batch, p):
        return ops.cast(self._uniform(batch, 0.0, 1.0) < p * self.strength, "float32")

    def _choose(self, batch, options):
        """Per sample, one of ``options`` (each (B, H, W, C)), uniformly."""
        pick = keras.random.randint((batch,), 0, len(options), seed=self.seed_generator)
        onehot = ops.reshape(ops.one_hot(pick, len(options)), (batch, 1, 1, 1, len(options)))
        return ops.sum(ops.stack(options, axis=-1) * onehot, axis=-1)

    @staticmethod
    def _filter(x, kernel):
        """Depthwise filtering with reflected borders (no dark rims)."""
        r = kernel.shape[0] // 2
        padded = ops.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="reflect")
        return ops.depthwise_conv(padded, ops.convert_to_tensor(kernel), strides=1, padding="valid")

    @staticmethod
    def _grey(x):
        return ops.sum(x * ops.convert_to_tensor(np.array(GREY_WEIGHTS, np.float32)), axis=-1, keepdims=True)

    def _equalise(self, x, target, clip, scale_px=4.0):
        """CLAHE-like local equalisation of lightness over a Gaussian neighbourhood of ``scale_px``.

        Its local spread is raised towards ``target`` grey levels, by at most ``clip`` times,
        so flat areas (skin) gain the most; colour and the local mean are kept.
        """
        luma = ops.repeat(self._grey(x), 3, axis=-1)
        mean = self._filter(luma, self._blur[scale_px])
        spread = ops.sqrt(self._filter(ops.square(luma - mean), self._blur[scale_px]) + 1.0)
        return x + (ops.clip(target / spread, 1.0, clip) - 1.0) * (luma - mean)

    def _rank_equalise(self, x, half_px, amount):
        """Histogram equalisation of lightness over a window of 2 ``half_px`` + 1 pixels, as CLAHE does per tile.

        Each pixel's lightness moves ``amount`` of the way towards its rank among its
        neighbours (sampled every 2 px, soft-counted) times 255: flat skin's small differences
        spread over the whole range, as CLAHE spreads a narrow tile histogram. Colour is kept.
        """
        size = self.output_size
        luma = self._grey(x)
        padded = ops.pad(luma, [[0, 0], [half_px, half_px], [half_px, half_px], [0, 0]], mode="reflect")
        offsets = range(0, 2 * half_px + 1, 2)
        rank = sum(ops.sigmoid((luma - padded[:, dy : dy + size, dx : dx + size, :]) * 0.5)
                   for dy in offsets for dx in offsets)
        return x + amount * (rank * (255.0 / len(offsets) ** 2) - luma)

    def _centre(self, x):
        size = ops.shape(x)[1]
        framed = size / self.context
        if abs(framed - self.output_size) < 1e-6 and (size - self.output_size) % 2 == 0:
            o = (size - self.output_size) // 2
            return x[:, o : o + self.output_size, o : o + self.output_size, :]
        o = int(round((size - framed) / 2))
        side = int(round(framed))
        return ops.image.resize(x[:, o : o + side, o : o + side, :], (self.output_size, self.output_size),
                                interpolation="bilinear", antialias=True)

    # -- the corruptions ---------------------------------------------------------------
    def _geometry(self, x):
        batch, size = ops.shape(x)[0], ops.shape(x)[1]
        s = self.strength
        angle = ops.reshape(self._uniform(batch, -12.0 * s, 12.0 * s), (batch,)) * (math.pi / 180)
        zoom = ops.exp(ops.reshape(self._uniform(batch, -0.12 * s, 0.12 * s), (batch,)))
        shift = ops.reshape(self._uniform(batch, -0.06 * s, 0.06 * s, 2), (batch, 2)) * (size / self.context)
        flip = ops.where(ops.reshape(self._uniform(batch, 0.0, 1.0), (batch,)) < 0.5 * min(s, 1.0), -1.0, 1.0)
        k = (size / self.context) / self.output_size / zoom  # input pixels per output pixel
        cos, sin = ops.cos(angle) * k, ops.sin(angle) * k
        half_out, centre_in = (self.output_size - 1) / 2, (size - 1) / 2
        a0, a1 = cos * flip, -sin
        b0, b1 = sin * flip, cos
        a2 = centre_in + shift[:, 0] - (a0 + a1) * half_out
        b2 = centre_in + shift[:, 1] - (b0 + b1) * half_out
        zeros = ops.zeros_like(a0)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        moved = ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="nearest")
        return moved[:, : self.output_size, : self.output_size, :]

    def _light_and_colour(self, x):
        batch = ops.shape(x)[0]
        x = x / 255.0
        # exposure: gamma (crushed or lifted shadows) and gain (dark shop, blown window light)
        gamma = ops.exp(self._uniform(batch, -0.35, 0.35))
        gain = ops.exp(self._uniform(batch, -0.55, 0.35))
        x = ops.clip(ops.power(ops.clip(x, 1e-4, 1.0), gamma) * gain, 0.0, 1.0)
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        x = mean + (x - mean) * ops.exp(self._uniform(batch, -0.3, 0.25))
        # white balance: a cast per channel
        cast = ops.exp(keras.random.normal((batch, 1, 1, 3), stddev=0.12, seed=self.seed_generator))
        x = x + self._chance(batch, 0.5) * (x * cast - x)
        # saturation, down to grey
        grey = self._grey(x)
        saturation = ops.where(self._uniform(batch, 0.0, 1.0) < 0.15 * self.strength, 0.0,
                               self._uniform(batch, 0.4, 1.5))
        x = x + self._chance(batch, 0.6) * (grey + saturation * (x - grey) - x)
        # an old print: faded, tinted sepia or cold, lifted blacks
        tint = ops.convert_to_tensor(np.array([[1.08, 0.93, 0.72]], np.float32)) ** self._uniform(batch, -0.6, 1.3)
        faded = 0.12 + 0.72 * self._grey(x) * tint
        x = x + self._chance(batch, 0.1) * (faded - x)
        return ops.clip(x, 0.0, 1.0) * 255.0

    def _texture(self, x):
        batch = ops.shape(x)[0]
        # local contrast, both ways (CLAHE-like boost, or flattening)
        base = self._filter(x, self._blur[4.0])
        amount = self._uniform(batch, -0.5, 1.2)
        x = x + self._chance(batch, 0.25) * amount * (x - base)
        # CLAHE: lightness equalised locally, flat skin's fine texture raised most (read as age).
        # Its tiles' size in the crop follows the photo's size against the face's (8x8 tiles:
        # about 7 px on a UTKFace chip's crop, about twice that on APPA-REAL's larger photos),
        # hence a neighbourhood per sample.
        target, clip = self._uniform(batch, 20.0, 50.0), self._uniform(batch, 2.0, 5.0)
        towards_rank = self._uniform(batch, 0.3, 0.7)
        equalised = self._choose(batch, [self._equalise(x, target, clip, s) for s in EQUALISE_SCALES_PX]
                                 + [self._rank_equalise(x, h, towards_rank) for h in RANK_HALF_WINDOWS_PX])
        x = x + self._chance(batch, 0.15) * (equalised - x)
        # focus: blur or sharpen by an unsharp mask at one of three scales
        blurred = self._choose(batch, [self._filter(x, self._blur[s]) for s in (0.7, 1.2, 2.0)])
        x = x + self._chance(batch, 0.35) * self._uniform(batch, -1.0, 1.5) * (x - blurred)
        # heavy defocus
        x = x + self._chance(batch, 0.07) * (self._filter(x, self._blur[3.0]) - x)
        # motion blur
        moved = self._choose(batch, [self._filter(x, k) for k in self._motion])
        x = x + self._chance(batch, 0.07) * (moved - x)
        # a distant face: down to 24-48 px and back
        size = self.output_size
        small = [ops.image.resize(ops.image.resize(x, (int(size * f), int(size * f)), antialias=True),
                                  (size, size), interpolation="bilinear") for f in (0.375, 0.5, 0.625, 0.75)]
        x = x + self._chance(batch, 0.2) * (self._choose(batch, small) - x)
        return ops.clip(x, 0.0, 255.0)

    def _noise(self, x):
        batch = ops.shape(x)[0]
        shape = ops.shape(x)
        luma = keras.random.normal((shape[0], shape[1], shape[2], 1), seed=self.seed_generator)
        chroma = keras.random.normal(shape, seed=self.seed_generator)
        sensor = (luma + 0.3 * chroma) * self._uniform(batch, 2.0, 10.0)
        x = x + self._chance(batch, 0.3) * sensor
        grain = self._filter(ops.repeat(keras.random.normal((shape[0], shape[1], shape[2], 1),
                                                            seed=self.seed_generator), 3, axis=-1),
                             self._blur[0.7]) * 2.0
        x = x + self._chance(batch, 0.1) * grain * self._uniform(batch, 4.0, 14.0)
        return ops.clip(x, 0.0, 255.0)

    def _jpeg_blocks(self, x):
        """JPEG's loss: YCbCr, 8x8 DCT, quantise at a per-sample quality, back."""
        batch, size = ops.shape(x)[0], self.output_size
        n = size // 8
        ycc = ops.matmul(x, ops.convert_to_tensor(_RGB_TO_YCC.T)) - ops.convert_to_tensor(
            np.array([128.0, 0.0, 0.0], np.float32))
        blocks = ops.transpose(ops.reshape(ycc, (batch, n, 8, n, 8, 3)), (0, 1, 3, 5, 2, 4))
        d = ops.convert_to_tensor(self._dct)
        coef = ops.einsum("ij,bxycjk,lk->bxycil", d, blocks, d)
        pick = keras.random.randint((batch,), 0, len(self._quality_levels), seed=self.seed_generator)
        tables = ops.take(ops.convert_to_tensor(self._jpeg), pick, axis=0)[:, None, None]  # (B,1,1,3,8,8)
        coef = ops.round(coef / tables) * tables
        blocks = ops.einsum("ji,bxycjk,kl->bxycil", d, coef, d)
        ycc = ops.reshape(ops.transpose(blocks, (0, 1, 4, 2, 5, 3)), (batch, size, size, 3))
        ycc = ycc + ops.convert_to_tensor(np.array([128.0, 0.0, 0.0], np.float32))
        rgb = ops.matmul(ycc, ops.convert_to_tensor(np.linalg.inv(_RGB_TO_YCC).T.astype(np.float32)))
        return x + self._chance(batch, 0.3) * (ops.clip(rgb, 0.0, 255.0) - x)

    def call(self, inputs, training=False):  # noqa: D102
        x = ops.cast(inputs, "float32")
        if not training or self.strength == 0:
            return self._centre(x)
        framed = self._geometry(x)
        x = self._light_and_colour(framed)
        x = self._texture(x)
        x = self._noise(x)
        x = self._jpeg_blocks(x)
        # A share of samples stays clean (framing only): clean photos must not get worse.
        corrupted = 1.0 - self._chance(ops.shape(x)[0], CLEAN_SHARE)
        return ops.clip(framed + corrupted * (x - framed), 0.0, 255.0)


class _DrawnOnTheFace(layers.Layer):
    """Base of the layers that draw something where the face of a stored crop is.

    The crops are eye-levelled and cut around BlazeFace's box, so the eyes sit where
    `EYES_IN_BOX` says; ``context`` and ``margin`` place them in the stored crop. Input and
    output: (B, S, S, 3) RGB values 0-255, float32; unchanged at inference or when
    ``share`` is 0.
    """

    drawn = "accessory"  # what the layer draws, for its errors

    def __init__(self, share: float, context: float = 1.25, margin: float = 0.1, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{self.drawn} share must be in [0, 1], got {share}")
        if not 1.0 <= context <= 2.0:
            raise ValueError(f"context must be in [1, 2], got {context}")
        if not 0.0 <= margin <= 2.0:
            raise ValueError(f"margin must be in [0, 2], got {margin}")
        self.share, self.context, self.margin, self.seed = float(share), float(context), float(margin), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def get_config(self) -> dict:  # noqa: D102
        return super().get_config() | {"share": self.share, "context": self.context, "margin": self.margin,
                                       "seed": self.seed}

    def compute_output_shape(self, input_shape):  # noqa: D102
        return input_shape

    def _uniform(self, batch, lo, hi, channels=1):
        return keras.random.uniform((batch, 1, 1, channels), lo, hi, seed=self.seed_generator)

    def call(self, inputs, training=False):  # noqa: D102
        x = ops.cast(inputs, "float32")
        if not training or self.share == 0:
            return x
        batch, size = ops.shape(x)[0], ops.shape(x)[1]
        grid = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5  # crop sides from the centre
        u = ops.reshape(ops.convert_to_tensor(grid), (1, 1, size, 1))
        v = ops.reshape(ops.convert_to_tensor(grid), (1, size, 1, 1))
        box_sides = (1 + 2 * self.margin) * self.context  # the stored crop's side in box sides
        (right_u, eye_v), (left_u, _) = ((a / box_sides, b / box_sides) for a, b in EYES_IN_BOX)
        eye_distance = left_u - right_u
        middle = (right_u + left_u) / 2 + self._uniform(batch, -0.01, 0.01)  # each face's own eyes
        eye_v = eye_v + self._uniform(batch, -0.015, 0.02)
        drawn = self._draw(x, u, v, middle, eye_v, eye_distance)
        chosen = ops.cast(self._uniform(batch, 0.0, 1.0) < self.share, "float32")
        return ops.clip(x + chosen * (drawn - x), 0.0, 255.0)

    def _draw(self, x, u, v, middle, eye_v, eye_distance):
        """``x`` (B, S, S, 3) with the thing drawn on every sample.

        ``u`` (1, 1, S, 1) and ``v`` (1, S, 1, 1) are the pixel centres, ``middle`` and
        ``eye_v`` (B, 1, 1, 1) the point between the eyes, ``eye_distance`` a scalar; all in
        crop sides from the crop's centre.
        """
        raise NotImplementedError


class SyntheticGlasses(_DrawnOnTheFace):
    """Random spectacles drawn over the eyes of stored, eye-levelled face crops.

    Glasses are the commonest thing a till camera sees that training photos of minors
    rarely show, and the shipped model reads them as age (`bench/glasses.py`). Each chosen
    sample gets two elliptical rims of a random size, thickness and colour (dark, or light
    metal), a bridge and temple arms, and sometimes tinted lenses. They are drawn on the
    stored crop, before `CameraAugment` moves it, so roll, zoom and shift move them too.

    Args:
        share: chance that a sample gets glasses while training (0 draws none).
        context: how much wider than the card's framing the stored crops are (as
            `CameraAugment`'s ``context``).
        margin: the card's crop margin around the squared box. With ``context`` it
            places the eyes (`EYES_IN_BOX`) in the stored crop.
        seed: seeds the layer's random stream.

    Input and output: (B, S, S, 3) RGB values 0-255, float32; unchanged at inference.
    """

    drawn = "glasses"

    def _draw(self, x, u, v, middle, eye_v, eye_distance):
        batch = ops.shape(x)[0]
        half_gap = eye_distance / 2 * self._uniform(batch, 0.95, 1.08)
        rx = eye_distance * self._uniform(batch, 0.36, 0.5)  # lens half-width
        ry = rx * self._uniform(batch, 0.55, 0.9)
        width = eye_distance * self._uniform(batch, 0.023, 0.068)  # rim thickness
        rims, lenses = 0.0, 0.0
        for centre_u in (middle - half_gap, middle + half_gap):
            r = ops.sqrt(((u - centre_u) / rx) ** 2 + ((v - eye_v) / ry) ** 2)  # 1 on the rim
            rims = ops.maximum(rims, ops.clip(1.5 - ops.abs(r - 1) * ry / width, 0.0, 1.0))
            lenses = ops.maximum(lenses, ops.cast(r < 1, "float32"))
        bar = ops.clip(1.5 - ops.abs(v - (eye_v - 0.35 * ry)) / width, 0.0, 1.0)
        outside = ops.abs(u - middle) - (half_gap + rx)  # temple arms, back to about the ears
        beside = ops.cast(outside > 0, "float32") * ops.cast(outside < eye_distance * 0.3, "float32")
        between = ops.cast(ops.abs(u - middle) < half_gap - rx * 0.9, "float32")  # the bridge
        frame = ops.maximum(rims, bar * ops.maximum(beside, between) * (1.0 - lenses))
        dark = self._uniform(batch, 5.0, 70.0) + self._uniform(batch, -10.0, 10.0, 3)
        metal = self._uniform(batch, 140.0, 210.0) + self._uniform(batch, -15.0, 15.0, 3)
        colour = ops.where(self._uniform(batch, 0.0, 1.0) < 0.7, dark, metal)
        tint = ops.where(self._uniform(batch, 0.0, 1.0) < 0.15, self._uniform(batch, 0.3, 0.75), 0.0)
        opacity = self._uniform(batch, 0.6, 1.0)
        drawn = x * (1.0 - lenses * tint)
        return drawn + frame * opacity * (colour - drawn)


class SyntheticMask(_DrawnOnTheFace):
    """Random face masks drawn over the nose, mouth and chin of stored, eye-levelled crops.

    A mask hides the half of the face a till sees best, and the shipped model reads the
    half it leaves as another age: with masks drawn on, validation 13-17s read 7.8 years
    older (`bench/glasses.py --draw mask`, docs/MODEL.md). Each chosen sample gets one opaque mask: an
    upper edge over the nose that rises to a point at its middle, a rounded lower part
    around the chin (an ellipse cut by that edge), a random width and height, a colour
    (surgical blue, white, black, grey or any), and a soft shading towards the chin. Drawn on
    the stored crop, before `CameraAugment` moves it.

    Args: as `SyntheticGlasses`. Input and output: (B, S, S, 3) RGB values 0-255, float32;
    unchanged at inference.
    """

    drawn = "mask"

    def _draw(self, x, u, v, middle, eye_v, eye_distance):
        batch = ops.shape(x)[0]
        top = eye_v + eye_distance * self._uniform(batch, 0.45, 0.75)  # the edge's point, on the nose
        edge = top + self._uniform(batch, 0.15, 0.4) * ops.abs(u - middle)  # falls towards the cheeks
        centre_v = top + eye_distance * self._uniform(batch, 0.35, 0.5)
        rx = eye_distance * self._uniform(batch, 0.95, 1.15)
        ry = eye_distance * self._uniform(batch, 0.95, 1.2)
        soft = 0.006  # edge width, crop sides
        r = ops.sqrt(((u - middle) / rx) ** 2 + ((v - centre_v) / ry) ** 2)
        cover = ops.clip((1.0 - r) * ry / soft + 0.5, 0.0, 1.0) * ops.clip((v - edge) / soft + 0.5, 0.0, 1.0)
        kind = self._uniform(batch, 0.0, 1.0)
        colour = self._uniform(batch, 20.0, 235.0, 3)  # any colour (the last fifth)
        colour = ops.where(kind < 0.8, self._uniform(batch, 100.0, 150.0) + self._uniform(batch, -5.0, 5.0, 3),
                           colour)  # grey
        colour = ops.where(kind < 0.6, self._uniform(batch, 10.0, 45.0) + self._uniform(batch, -5.0, 5.0, 3),
                           colour)  # black
        colour = ops.where(kind < 0.4, self._uniform(batch, 215.0, 250.0) + self._uniform(batch, -5.0, 5.0, 3),
                           colour)  # white
        surgical = ops.reshape(ops.convert_to_tensor(np.array([150.0, 190.0, 220.0], np.float32)), (1, 1, 1, 3))
        colour = ops.where(kind < 0.25, surgical + self._uniform(batch, -20.0, 20.0, 3), colour)
        shade = 1.0 - self._uniform(batch, 0.0, 0.2) * ops.clip((v - top) / (2.0 * eye_distance), 0.0, 1.0)
        return x + cover * (ops.clip(colour * shade, 0.0, 255.0) - x)


class BorderFill(layers.Layer):
    """Varied content where a stored crop's framing left its photo.

    Where the framing runs off a photo, crops are filled with the photo's replicated edge
    pixels. UTKFace's tight chips need that on a quarter of every framing, camera frames
    and the other sources almost never, and the shipped model learnt to read the streaks
    (`bench/crop_border.py`: set into a background instead, UTKFace's adults read a year
    younger). While training, on ``share`` of the samples, this replaces that outside by
    another sample's crop (the surroundings of another photo) or a smooth random colour
    field, so that the border stops telling the source.

    Args:
        share: chance that a sample's outside is filled while training (0: never).
        seed: seeds the layer's random stream.

    Input: (B, S, S, 4): RGB values 0-255 and, last, how much of each pixel lies inside the
    photo (0-255, from `training.pack.CropPack.inside`). Output: (B, S, S, 3) float32 RGB;
    at inference the RGB unchanged.
    """

    def __init__(self, share: float, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"border fill share must be in [0, 1], got {share}")
        self.share, self.seed = float(share), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def get_config(self) -> dict:  # noqa: D102
        return super().get_config() | {"share": self.share, "seed": self.seed}

    def compute_output_shape(self, input_shape):  # noqa: D102
        return (*input_shape[:-1], 3)

    def call(self, inputs, training=False):  # noqa: D102
        x = ops.cast(inputs[..., :3], "float32")
        if not training or self.share == 0:
            return x
        batch, size = ops.shape(x)[0], ops.shape(x)[1]
        outside = 1.0 - ops.cast(inputs[..., 3:], "float32") / 255.0
        other = ops.roll(x, 1, axis=0)  # another photo's crop: its own surroundings
        coarse = keras.random.uniform((batch, 3, 3, 3), 30.0, 220.0, seed=self.seed_generator)
        smooth = ops.image.resize(coarse, (size, size), interpolation="bilinear")
        pick = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator)
        fill = ops.where(pick < 0.6, other, smooth)
        chosen = ops.cast(keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator) < self.share, "float32")
        return x + chosen * outside * (fill - x)
