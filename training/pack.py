"""A crop pack: every training crop of a run, JPEG-encoded in one ``.npz``, with its labels.

Cropping needs MediaPipe and the photos; fitting needs neither. The pack is the hand-over
between the two, so that a run can be cropped on one machine and fitted on another (a GPU
machine without MediaPipe or TensorFlow), and a resumed run does not crop again. It is
derived from the datasets: keep it outside the project (the run folder), never commit it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

PACK_NAME = "crops.npz"
LABEL_FIELDS = ("age_years", "source", "split", "gender", "race", "file_name")


@dataclass
class CropPack:
    """Crops with a wider context than the model's framing, and their labels.

    Attributes:
        images: (n, S, S, 3) uint8 RGB crops; the central ``1 / meta["context"]`` of each
            side is the model card's framing.
        age_years, source, split, gender, race, file_name: (n,) labels, as in
            `training.data.LabelledImages`.
        meta: how the crops were made (size, context, crop settings, detector, canvas).
        inside: (n, S, S) uint8, how much of each pixel lies inside its photo (255: all of
            it; 0: the framing left the photo there and the crop holds replicated edge
            pixels), or None for packs cropped before it was recorded. Stored at a quarter
            of the side, one bit a pixel, and drawn back with soft edges.
    """

    images: np.ndarray
    age_years: np.ndarray
    source: np.ndarray
    split: np.ndarray
    gender: np.ndarray
    race: np.ndarray
    file_name: np.ndarray
    meta: dict = field(default_factory=dict)
    inside: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, mask: np.ndarray) -> CropPack:
        """The crops where ``mask`` (boolean or index array) selects."""
        return CropPack(self.images[mask], *(getattr(self, name)[mask] for name in LABEL_FIELDS), meta=self.meta,
                        inside=None if self.inside is None else self.inside[mask])


CODECS = {"jpg": cv2.IMWRITE_JPEG_QUALITY, "webp": cv2.IMWRITE_WEBP_QUALITY}
INSIDE_STEP = 4  # `CropPack.inside` is stored at 1/4 of the crop's side: 50 bytes a crop at 80 px


def _pack_inside(inside: np.ndarray) -> np.ndarray:
    side = max(1, inside.shape[1] // INSIDE_STEP)
    small = [cv2.resize(m, (side, side), interpolation=cv2.INTER_AREA) >= 128 for m in inside]
    return np.packbits(np.reshape(small, (len(inside), side * side)), axis=1)


def _unpack_inside(bits: np.ndarray, size: int) -> np.ndarray:
    side = max(1, size // INSIDE_STEP)
    small = np.unpackbits(bits, axis=1, count=side * side).reshape(-1, side, side) * np.uint8(255)
    return np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR) for m in small]).reshape(
        -1, size, size)


def save_pack(path: str | Path, pack: CropPack, codec: str = "jpg", quality: int = 93) -> Path:
    """Write ``pack`` atomically; returns the path.

    Args:
        path: the ``.npz`` to write.
        pack: the crops and labels.
        codec: ``jpg`` (80 px crops at q93: ~3 KB, 6x smaller than raw) or ``webp`` (q85:
            ~1.4 KB, for moving a pack through a size-limited channel).
        quality: the codec's quality, 1-100.
    """
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    path = Path(path)
    encoded = []
    for rgb in pack.images:
        ok, data = cv2.imencode(f".{codec}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [CODECS[codec], quality])
        if not ok:
            raise RuntimeError(f"{codec} encoding of a crop failed")
        encoded.append(data.reshape(-1))
    offsets = np.cumsum([0] + [len(e) for e in encoded]).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        jpeg=np.concatenate(encoded) if encoded else np.empty(0, np.uint8),
        offsets=offsets,
        meta=np.array(json.dumps(pack.meta | {"codec": codec, "quality": quality})),
        **{name: np.asarray(getattr(pack, name)) for name in LABEL_FIELDS},
        **({} if pack.inside is None else {"inside_bits": _pack_inside(pack.inside)}),
    )
    tmp.replace(path)
    return path


def read_pack_meta(path: str | Path) -> dict:
    """A pack's ``meta`` alone (how it was made, what each source held), without decoding its crops."""
    with np.load(path, allow_pickle=False) as stored:
        return json.loads(str(stored["meta"]))


def load_pack(path: str | Path) -> CropPack:
    """Read and decode a pack written by `save_pack`.

    Raises:
        FileNotFoundError: if there is no pack at ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no crop pack at {path}")
    stored = np.load(path, allow_pickle=False)
    jpeg, offsets = stored["jpeg"], stored["offsets"]
    meta = json.loads(str(stored["meta"]))
    size = int(meta["size"])
    images = np.empty((len(offsets) - 1, size, size, 3), np.uint8)
    for i in range(len(images)):
        bgr = cv2.imdecode(jpeg[offsets[i] : offsets[i + 1]], cv2.IMREAD_COLOR)
        images[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    inside = _unpack_inside(stored["inside_bits"], size) if "inside_bits" in stored.files else None
    return CropPack(images, *(stored[name] for name in LABEL_FIELDS), meta=meta, inside=inside)
