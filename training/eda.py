"""`agecheck eda`: what a labelled dataset holds, before anyone trains on it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from training.data import LabelledImages, load_labels, read_rgb
from training.metrics import AGE_BANDS, band_name


def summarise(images: LabelledImages) -> dict:
    """Count, mean, median, and counts per age band (and per split when the layout has one)."""
    ages = images.age_years
    summary = {
        "layout": images.layout,
        "count": len(images),
        "mean_age_years": float(ages.mean()),
        "median_age_years": float(np.median(ages)),
        "min_age_years": float(ages.min()),
        "max_age_years": float(ages.max()),
        "bands": {band_name(lo, hi): int(((ages >= lo) & (ages < hi + 1)).sum()) for lo, hi in AGE_BANDS},
    }
    if (images.split != "").any():
        summary["splits"] = {s: int((images.split == s).sum()) for s in np.unique(images.split)}
    return summary


def run_eda(data_dir: str | Path, out_dir: str | Path, grid: int = 4, seed: int = 0) -> dict:
    """Write ``age_histogram.png``, ``samples.png`` and ``summary.json`` into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = load_labels(data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(images)

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.hist(images.age_years, bins=np.arange(0, images.age_years.max() + 2, 1))
    ax.axvline(18, color="red", ls="--", label="18")
    ax.set(xlabel="real age (years)", ylabel="photos", title=f"{images.layout}: {len(images)} photos")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "age_histogram.png", dpi=100)
    plt.close(fig)

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(images), size=min(grid * grid, len(images)), replace=False)
    fig, axes = plt.subplots(grid, grid, figsize=(2 * grid, 2.2 * grid))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, i in zip(np.ravel(axes), picks, strict=False):  # the grid may have spare cells
        rgb = read_rgb(images.paths[i])
        if rgb is not None:
            ax.imshow(cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA))
        ax.set_title(f"{images.age_years[i]:g} y", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=100)
    plt.close(fig)

    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
