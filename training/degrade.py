"""Named, seeded, camera-like corruptions of whole photos, for evaluation off the clean set.

``agecheck evaluate --degrade NAME`` applies one of these to each photo *before* the face is
detected, so detection, alignment and cropping meet the corruption as they would at a till.
Each photo draws its own strength from a generator seeded by the run's seed and the photo's
file name: the same command gives the same pixels on any machine, whatever the file order.

Sizes are relative to the photo (labelled photos are face-centred, the face about half of
the shorter side), so a 224 px APPA-REAL photo and a 200 px UTKFace chip are degraded alike.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import cv2
import numpy as np

Degrade = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _side(rgb: np.ndarray) -> int:
    return min(rgb.shape[:2])


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float pixel values rounded and clipped to uint8."""
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def downscale(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shorter side down to 48-96 px and back: a face half the photo ends 24-48 px wide."""
    h, w = rgb.shape[:2]
    scale = rng.uniform(48, 96) / _side(rgb)
    if scale >= 1:
        return rgb.copy()
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def blur(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Out of focus: Gaussian sigma 0.6-1.5% of the shorter side (1.3-3.4 px at 224 px)."""
    sigma = rng.uniform(0.006, 0.015) * _side(rgb)
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma)


def motion_blur(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A customer moving: a line kernel 2-5% of the shorter side long, at a random angle."""
    length = max(3, int(round(rng.uniform(0.02, 0.05) * _side(rgb))) | 1)
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    return cv2.filter2D(rgb, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def jpeg(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Heavy compression: JPEG quality 10-30."""
    quality = int(rng.integers(10, 31))
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def noise(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise: Gaussian, sigma 8-20 grey levels in brightness plus a third in colour."""
    sigma = rng.uniform(8, 20)
    luma = rng.normal(0, sigma, rgb.shape[:2] + (1,))
    chroma = rng.normal(0, sigma / 3, rgb.shape)
    return to_uint8(rgb.astype(np.float32) + luma + chroma)


def grey(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black-and-white: luma in all three channels."""
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)


def colour_cast(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Wrong white balance: each channel's gain 0.7-1.3, mean gain 1."""
    gains = rng.uniform(0.7, 1.3, 3)
    return to_uint8(rgb.astype(np.float32) * (gains / gains.mean()))


def low_light(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dark shop: gamma 1.4-2.0, gain 0.35-0.6, and the noise a dark sensor adds (sigma 3-7)."""
    x = (rgb.astype(np.float32) / 255) ** rng.uniform(1.4, 2.0) * rng.uniform(0.35, 0.6) * 255
    return to_uint8(x + rng.normal(0, rng.uniform(3, 7), rgb.shape[:2] + (1,)))


def overexposed(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Window light behind the till: gain 1.5-2.1, highlights clipped."""
    return to_uint8(rgb.astype(np.float32) * rng.uniform(1.5, 2.1))


def old_print(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An old photo: faded contrast, sepia or cold tint, soft focus and film grain."""
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    fade = rng.uniform(0.55, 0.8)
    base = rng.uniform(0.08, 0.2)
    tint = np.array([1.08, 0.93, 0.72]) ** rng.uniform(-0.5, 1.3)
    x = (base + fade * luma)[:, :, None] * tint * 255
    x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigmaX=max(0.3, 0.003 * _side(rgb)))
    return to_uint8(x + _grain(rgb, rng))


def _grain(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 1) film grain: brightness noise clumped by a 0.7 px Gaussian, 10-25 grey levels before clumping."""
    grain = cv2.GaussianBlur(rng.normal(0, 1, rgb.shape[:2]).astype(np.float32), (0, 0), sigmaX=0.7)
    return grain[:, :, None] * rng.uniform(10, 25)


def film_grain(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Film grain alone: the grain of `old_print` without its fading, tint or soft focus."""
    return to_uint8(rgb.astype(np.float32) + _grain(rgb, rng))


def sharpen(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A camera or phone that oversharpens: unsharp mask, amount 1-2.5, radius 0.5-1.2% of the side."""
    x = rgb.astype(np.float32)
    soft = cv2.GaussianBlur(x, (0, 0), sigmaX=rng.uniform(0.005, 0.012) * _side(rgb))
    return to_uint8(x + rng.uniform(1.0, 2.5) * (x - soft))


def local_contrast(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Local contrast raised, as photo apps' "clarity" does: CLAHE on lightness, clip limit 2-4, 8x8 tiles."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=rng.uniform(2.0, 4.0), tileGridSize=(8, 8))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def rotate(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A tilted head or camera: 10-25 degrees either way about the centre, edges replicated."""
    h, w = rgb.shape[:2]
    angle = rng.uniform(10, 25) * rng.choice([-1, 1])
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    return cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def camera(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random mix per photo, in the order a camera applies them.

    Light (low light, overexposure, colour cast or none), then optics (blur, motion blur,
    downscale or none), then sensor noise (half the photos), then JPEG (half the photos).
    """
    light = [low_light, overexposed, colour_cast, None][rng.integers(4)]
    optics = [blur, motion_blur, downscale, None][rng.integers(4)]
    for step in (light, optics, noise if rng.random() < 0.5 else None, jpeg if rng.random() < 0.5 else None):
        if step is not None:
            rgb = step(rgb, rng)
    return rgb


DEGRADATIONS: dict[str, Degrade] = {
    "downscale": downscale,
    "blur": blur,
    "motion_blur": motion_blur,
    "jpeg": jpeg,
    "noise": noise,
    "grey": grey,
    "colour_cast": colour_cast,
    "low_light": low_light,
    "overexposed": overexposed,
    "old_print": old_print,
    "film_grain": film_grain,
    "sharpen": sharpen,
    "local_contrast": local_contrast,
    "rotate": rotate,
    "camera": camera,
}


def degrade(rgb: np.ndarray, name: str, seed: int, key: str) -> np.ndarray:
    """Apply degradation ``name`` to ``rgb``, drawn from a generator seeded by ``seed`` and ``key``.

    Args:
        rgb: (H, W, 3) uint8 photo.
        name: one of `DEGRADATIONS`.
        seed: the evaluation's seed.
        key: what identifies the photo (its file name), so each photo has its own draw.

    Returns:
        A new (H, W, 3) uint8 image.

    Raises:
        ValueError: for an unknown name or an image that is not (H, W, 3) uint8.
    """
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; expected one of {', '.join(DEGRADATIONS)}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return np.ascontiguousarray(DEGRADATIONS[name](rgb, rng))
