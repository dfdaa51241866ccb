"""Labelled face photos in three layouts, and the crops every training command uses.

Layouts, recognised by what the folder holds:

1. ``seeds``: ``labels.csv`` (``file_name,real_age``) and images in ``final_files/``.
2. ``appa-real``: ``train/ valid/ test/`` with ``gt_avg_{train,valid,test}.csv`` (its own split).
3. ``utkface``: images named ``AGE_GENDER_RACE_*.jpg`` (in the folder or its ``images/``);
   the age is the first number.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from edge_app.config import DetectorConfig
from edge_app.crop import CropSettings, crop_face_views, crop_faces
from edge_app.detect import FaceDetector
from edge_app.errors import AgecheckError
from edge_app.faces import Faces

log = logging.getLogger(__name__)

MAX_AGE_YEARS = 120
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
LAYOUTS_HELP = (
    "expected one of: (1) labels.csv (file_name,real_age) with images in final_files/; "
    "(2) APPA-REAL train/ valid/ test/ with gt_avg_train.csv, gt_avg_valid.csv, gt_avg_test.csv; "
    "(3) images named AGE_GENDER_RACE_*.jpg (UTKFace)"
)
APPA_SPLITS = {"train": "train", "valid": "val", "test": "test"}
GENDERS = {0: "male", 1: "female"}
RACES = {0: "white", 1: "black", 2: "asian", 3: "indian", 4: "other"}


class DataError(AgecheckError):
    """A dataset that cannot be read as any known layout, or a bad label."""


@dataclass
class LabelledImages:
    """Image paths with real ages and what else the layout tells.

    Attributes:
        layout: ``seeds``, ``appa-real`` or ``utkface``.
        paths: image files.
        age_years: (n,) float32 real ages.
        split: (n,) ``train``/``val``/``test`` from the layout, or ``""`` when it has none.
        gender: (n,) int, -1 where unknown (UTKFace: 0 male, 1 female).
        race: (n,) int, -1 where unknown (UTKFace: 0 white, 1 black, 2 asian, 3 indian, 4 other).
        source: (n,) name of the dataset each photo comes from (its folder's name).
    """

    root: Path
    layout: str
    paths: list[Path]
    age_years: np.ndarray
    split: np.ndarray
    gender: np.ndarray = field(default=None)  # type: ignore[assignment]
    race: np.ndarray = field(default=None)  # type: ignore[assignment]
    source: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.source is None:
            self.source = np.full(n, source_name(self.root))
        if self.gender is None:
            self.gender = np.full(n, -1, np.int64)
        if self.race is None:
            self.race = np.full(n, -1, np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> LabelledImages:
        """The images at ``indices``."""
        return LabelledImages(
            root=self.root,
            layout=self.layout,
            paths=[self.paths[i] for i in indices],
            age_years=self.age_years[indices],
            split=self.split[indices],
            gender=self.gender[indices],
            race=self.race[indices],
            source=self.source[indices],
        )

    @property
    def sources(self) -> list[str]:
        """Source names in order of first appearance."""
        return list(dict.fromkeys(self.source.tolist()))


def source_name(root: Path) -> str:
    """A dataset's name: its folder's, or the parent's for UTKFace's ``images/``."""
    return root.parent.name if root.name == "images" else root.name


def load_sources(
    data_dirs: list[str | Path], val_fraction: float, seed: int, max_images: int = 0
) -> LabelledImages:
    """Several labelled datasets as one, each split into train and validation on its own.

    ``split`` of the result is ``train``/``val`` (``test`` for a layout's own test part), so
    every source keeps a validation part that can be reported apart.

    Raises:
        DataError: as `load_labels`, or if two sources share a folder name.
    """
    parts = []
    for data_dir in data_dirs:
        images = load_labels(data_dir, max_images)
        train, val = split_indices(images, val_fraction, seed)
        split = np.full(len(images), "test", dtype="<U5")
        split[train], split[val] = "train", "val"
        images.split = split
        parts.append(images)
    names = [p.source[0] for p in parts if len(p)]
    if len(set(names)) != len(names):
        raise DataError(f"--data folders must have different names to be told apart, got {names}")
    if len(parts) == 1:
        return parts[0]
    return LabelledImages(
        root=Path(str(parts[0].root)),
        layout="+".join(p.layout for p in parts),
        paths=[path for p in parts for path in p.paths],
        age_years=np.concatenate([p.age_years for p in parts]),
        split=np.concatenate([p.split for p in parts]),
        gender=np.concatenate([p.gender for p in parts]),
        race=np.concatenate([p.race for p in parts]),
        source=np.concatenate([p.source for p in parts]),
    )


def _parse_age(text: str, where: str) -> float:
    try:
        age = float(text)
    except ValueError:
        raise DataError(f"{where}: age {text!r} is not a number; expected years in 0-{MAX_AGE_YEARS}") from None
    if not (0 <= age <= MAX_AGE_YEARS):
        raise DataError(f"{where}: age {text!r} is outside 0-{MAX_AGE_YEARS} years")
    return age


def _read_csv_labels(csv_path: Path, image_dir: Path) -> tuple[list[Path], list[float]]:
    with open(csv_path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        for need in ("file_name", "real_age"):
            if need not in columns:
                raise DataError(f"{csv_path}: missing column {need!r}; found columns {columns}")
        paths, ages = [], []
        for line, row in enumerate(reader, start=2):
            ages.append(_parse_age(row["real_age"].strip(), f"{csv_path} line {line}"))
            paths.append(image_dir / row["file_name"].strip())
    return paths, ages


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_labels(data_dir: str | Path, max_images: int = 0) -> LabelledImages:
    """Find the layout of ``data_dir`` and read its labels (only the first ``max_images`` if > 0).

    Raises:
        DataError: if the folder is missing, empty, matches no layout, or holds a bad label.
    """
    images = _load_labels(data_dir)
    return images.subset(np.arange(min(max_images, len(images)))) if max_images else images


def _load_labels(data_dir: str | Path) -> LabelledImages:
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder; {LAYOUTS_HELP}")
    if (root / "labels.csv").is_file() or (root / "final_files").is_dir():
        if not (root / "labels.csv").is_file():
            raise DataError(f"{root} has final_files/ but no labels.csv (file_name,real_age)")
        paths, ages = _read_csv_labels(root / "labels.csv", root / "final_files")
        if not (root / "final_files").is_dir():
            found = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())
            raise DataError(f"{root} has labels.csv but no final_files/ folder for its images"
                            + (f" (found {', '.join(found)})" if found else ""))
        return LabelledImages(root, "seeds", paths, np.array(ages, np.float32), np.full(len(paths), ""))
    if any((root / f"gt_avg_{name}.csv").is_file() for name in APPA_SPLITS):
        paths, ages, splits = [], [], []
        for name, split in APPA_SPLITS.items():
            csv_path = root / f"gt_avg_{name}.csv"
            if not csv_path.is_file():
                raise DataError(f"{root} looks like APPA-REAL but lacks {csv_path.name}")
            part_paths, part_ages = _read_csv_labels(csv_path, root / name)
            paths += part_paths
            ages += part_ages
            splits += [split] * len(part_paths)
        return LabelledImages(root, "appa-real", paths, np.array(ages, np.float32), np.array(splits))
    images = _image_files(root) or (_image_files(root / "images") if (root / "images").is_dir() else [])
    if not images:
        raise DataError(f"data folder {root} holds no labels and no images; {LAYOUTS_HELP}")
    ages, genders, races = [], [], []
    for path in images:
        fields = path.name.split("_")
        if len(fields) < 2 or not re.fullmatch(r"-?\d+(\.\d+)?", fields[0]):
            raise DataError(
                f"{path}: file name does not start with an age (AGE_GENDER_RACE_*.jpg); {LAYOUTS_HELP}"
            )
        ages.append(_parse_age(fields[0], str(path)))
        gender, race = utkface_labels(path.name)
        genders.append(gender)
        races.append(race)
    return LabelledImages(
        root, "utkface", images, np.array(ages, np.float32), np.full(len(images), ""),
        np.array(genders, np.int64), np.array(races, np.int64),
    )


def utkface_labels(file_name: str) -> tuple[int, int]:
    """``(gender, race)`` codes (`GENDERS`, `RACES`) of a UTKFace file name ``AGE_GENDER_RACE_*``; -1 where absent."""
    fields = file_name.split("_")
    gender = int(fields[1]) if len(fields) > 1 and fields[1] in ("0", "1") else -1
    race = int(fields[2]) if len(fields) > 3 and fields[2] in ("0", "1", "2", "3", "4") else -1
    return gender, race


def split_indices(
    images: LabelledImages, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices.

    The layout's own split wins (APPA-REAL: ``valid`` is validation, ``test`` is left out).
    Otherwise each file goes to validation by a hash of ``seed`` and its name, so the split
    does not depend on file order and ``agecheck evaluate --split val`` finds the same images.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if (images.split != "").any():
        return np.flatnonzero(images.split == "train"), np.flatnonzero(images.split == "val")
    buckets = np.array(
        [zlib.crc32(f"{seed}:{p.name}".encode()) % 10_000 for p in images.paths], np.int64
    )
    is_val = buckets < round(val_fraction * 10_000)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def select(images: LabelledImages, split: str, max_images: int, seed: int) -> LabelledImages:
    """``images`` of ``split`` (``all`` keeps every part), at most ``max_images`` per source.

    The sample (``max_images`` > 0) is drawn per source from a generator seeded by ``seed``
    and kept in file order.
    """
    if split != "all":
        images = images.subset(np.flatnonzero(images.split == split))
    if max_images:
        rng = np.random.default_rng(seed)
        keep = []
        for name in images.sources:
            members = np.flatnonzero(images.source == name)
            keep.append(np.sort(rng.choice(members, min(max_images, len(members)), replace=False)))
        images = images.subset(np.concatenate(keep))
    return images


@dataclass
class Crops:
    """Model inputs made from a `LabelledImages`.

    Attributes:
        images: (m, S, S, 3) uint8 RGB crops of the readable images (with `load_crops`'s
            ``with_inside``, a fourth channel: where each crop shows its photo).
        index: (m,) positions of those images in the source `LabelledImages`.
        unreadable: paths that could not be decoded (skipped).
        no_face: paths where no face was found (used whole, or skipped with ``require_face``).
    """

    images: np.ndarray
    index: np.ndarray
    unreadable: list[str]
    no_face: list[str]


def read_rgb(path: Path) -> np.ndarray | None:
    """The photo at ``path`` as (H, W, 3) uint8 RGB, or None where it cannot be decoded."""
    data = np.fromfile(path, np.uint8) if path.is_file() else np.empty(0, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def detect_in_photo(detector: FaceDetector, rgb: np.ndarray, canvas: float) -> Faces:
    """Faces of a close-up photo as the app's camera detector would frame them.

    The full-range BlazeFace the app runs is tuned for faces a few metres away and misses
    most close-ups (136 of 300 UTKFace chips); shrunk into a grey canvas ``canvas`` times
    its size it finds 300 of 300 (``bench/box_mapping.py``). Boxes and keypoints come back
    in the photo's pixels. ``canvas`` 1 detects on the photo itself.
    """
    if canvas <= 1:
        return detector.detect(rgb)
    height, width = rgb.shape[:2]
    top, left = int(height * (canvas - 1) / 2), int(width * (canvas - 1) / 2)
    big = np.full((int(height * canvas), int(width * canvas), 3), 128, np.uint8)
    big[top : top + height, left : left + width] = rgb
    faces = detector.detect(big)
    offset = np.array([left, top], np.float32)
    return Faces(
        xyxy=faces.xyxy - np.tile(offset, 2), confidence=faces.confidence, keypoints=faces.keypoints - offset
    )


def most_confident(faces: Faces) -> Faces | None:
    """The most confident of ``faces`` (the one face a labelled photo is taken to show); None if none."""
    return faces[int(np.argmax(faces.confidence))] if len(faces) else None


def iter_detected_faces(
    images: LabelledImages, detector_config: DetectorConfig, canvas: float
) -> Iterator[tuple[int, np.ndarray, Faces]]:
    """``(position, rgb, face)`` for each readable photo of ``images`` where a face is found.

    ``face`` is the most confident one, found as `detect_in_photo` finds it; photos that cannot
    be read or show no face are skipped. The benches that cut each face several ways start here.
    """
    with FaceDetector(detector_config, video=False) as detector:
        for position, path in enumerate(images.paths):
            rgb = read_rgb(path)
            face = most_confident(detect_in_photo(detector, rgb, canvas)) if rgb is not None else None
            if face is not None:
                yield position, rgb, face


def iter_face_crops(
    images: LabelledImages,
    size: int,
    crop: CropSettings,
    detector_config: DetectorConfig,
    require_face: bool = False,
    canvas: float = 1.0,
    degradation: tuple[str, int] | None = None,
    with_inside: bool = False,
    views: bool = False,
) -> Iterator[tuple[int, np.ndarray | None, str]]:
    """Yield ``(position, crop, status)``, status ``ok``, ``no_face`` or ``unreadable``.

    The face is found by the app's detector (see `detect_in_photo` for ``canvas``) and cut
    by the app's ``crop_faces``, so training crops look like live crops. The most confident
    face is used; photos with none are used whole (already-cropped datasets) unless
    ``require_face``. ``degradation`` (name, seed) corrupts each photo first
    (`training.degrade`), before detection, as a camera would. ``with_inside`` adds a fourth
    channel: 255 where the crop shows the photo, 0 where its framing left the photo.
    ``views``: each crop is (V, S, S, C), the face cut at every test-time view of ``crop``
    from its one detection, as the app cuts them (`crop_face_views`); a whole photo is the
    same in every view.
    """
    from training.degrade import degrade

    cut = crop if views else replace(crop, view_margins=())
    with FaceDetector(detector_config, video=False) as detector:
        for position, path in enumerate(images.paths):
            rgb = read_rgb(path)
            if rgb is None:
                yield position, None, "unreadable"
                continue
            if degradation is not None:
                rgb = degrade(rgb, degradation[0], degradation[1], path.name)
            best = most_confident(detect_in_photo(detector, rgb, canvas))
            if best is not None:
                faces = crop_face_views(rgb, best.xyxy, size, cut, best.keypoints)[0]
                if with_inside:
                    faces = with_channel(faces, [inside_photo(rgb.shape, best, size, view) for view in cut.views])
                yield position, faces if views else faces[0], "ok"
            elif require_face:
                yield position, None, "no_face"
            else:
                whole = np.array([[0, 0, rgb.shape[1], rgb.shape[0]]], np.float32)
                face = crop_faces(rgb, whole, size, CropSettings(0.0, crop.pad))[0]
                if with_inside:
                    face = with_channel(face, np.full(face.shape[:2], 255, np.uint8))
                yield position, np.stack([face] * len(cut.views)) if views else face, "no_face"


def with_channel(face: np.ndarray, inside) -> np.ndarray:
    """``face`` (..., S, S, 3) with ``inside`` (..., S, S) as a fourth channel."""
    return np.concatenate([face, np.asarray(inside, np.uint8)[..., None]], axis=-1)


def inside_photo(shape: tuple[int, ...], face: Faces, size: int, crop: CropSettings) -> np.ndarray:
    """(size, size) uint8: 255 where ``face``'s crop from a photo of ``shape`` shows the photo, 0 beyond it.

    The same `crop_faces` geometry cuts a white photo padded with black.
    """
    white = np.full((shape[0], shape[1], 3), 255, np.uint8)
    settings = CropSettings(crop.margin, "constant", crop.align)
    return crop_faces(white, face.xyxy, size, settings, face.keypoints)[0, :, :, 0]


def load_crops(
    images: LabelledImages,
    size: int,
    crop: CropSettings,
    detector_config: DetectorConfig,
    cache_dir: Path | None = None,
    require_face: bool = False,
    progress: bool = False,
    canvas: float = 1.0,
    degradation: tuple[str, int] | None = None,
    with_inside: bool = False,
    views: bool = False,
) -> Crops:
    """Decode, detect and crop every image once, keeping uint8 crops in memory.

    With ``cache_dir`` the crops are saved there (never inside the project: they are
    derived from the dataset) and reused when the same images and settings come again.
    ``with_inside``: see `iter_face_crops` (the crops then have four channels). ``views``:
    the images are (m, V, S, S, C), every test-time view of ``crop`` (`load_view_crops`).
    """
    settings = (size, crop if views else replace(crop, view_margins=()), detector_config, require_face, canvas,
                degradation)
    marks = (*(("inside",) if with_inside else ()), *(("views",) if views else ()))
    key = hashlib.sha256(repr((*settings, *marks, [str(p) for p in images.paths])).encode()).hexdigest()[:16]
    cache = cache_dir / f"crops-{size}px-{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        stored = np.load(cache, allow_pickle=False)
        log.info("using cached crops %s", cache)
        return Crops(
            stored["images"], stored["index"], list(stored["unreadable"]), list(stored["no_face"])
        )
    shape = (len(crop.views),) if views else ()
    out = np.empty((len(images), *shape, size, size, 4 if with_inside else 3), np.uint8)
    kept, unreadable, no_face = [], [], []
    for position, face, status in iter_face_crops(
        images, size, crop, detector_config, require_face, canvas, degradation, with_inside, views
    ):
        if status == "unreadable":
            unreadable.append(str(images.paths[position]))
            log.warning("skipping unreadable image %s", images.paths[position])
        if status == "no_face":
            no_face.append(str(images.paths[position]))
        if face is not None:
            out[len(kept)] = face
            kept.append(position)
        if progress and (position + 1) % 1000 == 0:
            log.info("cropped %d/%d images", position + 1, len(images))
    crops = Crops(out[: len(kept)], np.array(kept, np.int64), unreadable, no_face)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=crops.images, index=crops.index,
                 unreadable=np.array(unreadable, dtype=str), no_face=np.array(no_face, dtype=str))
        tmp.replace(cache)
    return crops


def load_view_crops(images: LabelledImages, size: int, crop: CropSettings, detector_config: DetectorConfig,
                    cache_dir: Path | None = None, require_face: bool = False, canvas: float = 1.0,
                    degradation: tuple[str, int] | None = None) -> list[Crops]:
    """`load_crops` at each test-time view of ``crop`` (`CropSettings.views`), the card's own framing first.

    One detection per photo cuts every view, as the app cuts them, so every view holds the
    same photos in the same order.
    """
    both = load_crops(images, size, crop, detector_config, cache_dir, require_face, canvas=canvas,
                      degradation=degradation, views=True)
    return [Crops(both.images[:, view], both.index, both.unreadable, both.no_face) for view in range(len(crop.views))]


def mean_over_views(predict: Callable[[np.ndarray], np.ndarray], views: list[Crops]) -> np.ndarray:
    """(m,) float64: each photo's estimate, the mean of ``predict`` over its views (`load_view_crops`), as the app's."""
    return np.mean([np.asarray(predict(view.images), np.float64) for view in views], axis=0)


def split_crops(
    images: LabelledImages, crops: Crops, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation positions *into* ``crops``, split as `split_indices` splits the labels.

    Images that could not be cropped (unreadable, or without a face when one is required)
    simply drop out of their split.
    """
    train_idx, val_idx = split_indices(images, val_fraction, seed)
    position = {int(image): i for i, image in enumerate(crops.index)}
    train = np.array([position[i] for i in train_idx if i in position], np.int64)
    val = np.array([position[i] for i in val_idx if i in position], np.int64)
    return train, val
