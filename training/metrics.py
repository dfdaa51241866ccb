"""Error and alcohol-policy figures from true and predicted ages (numpy only)."""

from __future__ import annotations

import numpy as np

from edge_app.model_card import LEGAL_AGES, TRADEOFF_GROUPS, under_age_key

AGE_BANDS = [(0, 12), (13, 17), (18, 24), (25, 39), (40, 59), (60, 200)]
CALIBRATION_QUANTILES = (0.95, 0.99, 0.995)


def band_name(lo: int, hi: int) -> str:
    """``(60, 200)`` -> ``60+``; ``(13, 17)`` -> ``13-17``."""
    return f"{lo}+" if hi >= 200 else f"{lo}-{hi}"


def errors(true_years: np.ndarray, predicted_years: np.ndarray) -> dict:
    """MAE, RMSE and mean signed error (predicted - true), overall and per age band.

    Ages are whole years in the labels, so a band ``13-17`` holds true ages 13 <= age < 18.
    """
    true_years = np.asarray(true_years, np.float64)
    diff = np.asarray(predicted_years, np.float64) - true_years

    def summary(mask: np.ndarray) -> dict:
        d = diff[mask]
        if d.size == 0:
            return {"count": 0, "mae": None, "rmse": None, "bias": None}
        return {
            "count": int(d.size),
            "mae": float(np.abs(d).mean()),
            "rmse": float(np.sqrt((d**2).mean())),
            "bias": float(d.mean()),
        }

    result = summary(np.ones_like(diff, bool))
    result["bands"] = {
        band_name(lo, hi): summary((true_years >= lo) & (true_years < hi + 1)) for lo, hi in AGE_BANDS
    }
    return result


def _share(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if mask.size else None


def gate_flags(predicted_years: np.ndarray, threshold_age: float, margin_years: float) -> np.ndarray:
    """Which estimates the gate sends to an ID check: ``predicted < threshold_age + margin_years``."""
    return np.asarray(predicted_years, np.float64) < threshold_age + margin_years


def policy_shares(
    true_years: np.ndarray, predicted_years: np.ndarray, threshold_age: float, margin_years: float
) -> dict:
    """Who a gate "predicted < threshold_age + margin_years" sends to an ID check.

    Returns shares in [0, 1] (``None`` where a group is empty) of under-threshold customers
    flagged (``minors_flagged``: higher is safer), of 13-17s, of 18-24s and of 25+ adults
    flagged needlessly (lower is kinder to customers), with the group sizes.
    """
    true_years = np.asarray(true_years, np.float64)
    flagged = gate_flags(predicted_years, threshold_age, margin_years)
    groups = {
        "minors": true_years < threshold_age,
        "age_13_17": (true_years >= 13) & (true_years < 18),
        "age_18_24": (true_years >= 18) & (true_years < 25),
        "age_25_plus": true_years >= 25,
    }
    shares = {f"{name}_flagged": _share(flagged[mask]) for name, mask in groups.items()}
    shares.update({f"{name}_count": int(mask.sum()) for name, mask in groups.items()})
    shares.update({"threshold_age": float(threshold_age), "margin_years": float(margin_years)})
    return shares


def calibrate_margins(
    true_years: np.ndarray,
    predicted_years: np.ndarray,
    threshold_age: float,
    quantiles: tuple[float, ...] = CALIBRATION_QUANTILES,
) -> dict[str, float | None]:
    """The least margin at which each share of under-threshold customers would be flagged.

    A minor is flagged when ``predicted < threshold_age + margin``, so the margin that flags
    a share q of minors is the q-quantile of their predictions minus the threshold (plus a
    hair, because the comparison is strict). ``None`` when there are no minors.
    """
    true_years = np.asarray(true_years, np.float64)
    minors = np.asarray(predicted_years, np.float64)[true_years < threshold_age]
    if minors.size == 0:
        return {str(q): None for q in quantiles}
    return {
        str(q): float(np.quantile(minors, q, method="higher") - threshold_age + 0.01) for q in quantiles
    }


TRADEOFF_LIMITS_YEARS = tuple(range(16, 46))
"""The limits (threshold + margin) of a card's trade-off table: legal ages 16 to 21 with margins up to 24-29."""

TRADEOFF_SHARES = dict(zip(TRADEOFF_GROUPS, ("minors_flagged", "age_13_17_flagged", "age_18_24_flagged",
                                             "age_25_plus_flagged"), strict=True))
"""Each column of the trade-off table (`edge_app.model_card.TRADEOFF_GROUPS`: under 18, 13-17, 18-24,
25+) and the `policy_shares` key it is, at threshold 18."""


def gate_tradeoff(
    true_years: np.ndarray, predicted_years: np.ndarray, limits_years: tuple[float, ...] = TRADEOFF_LIMITS_YEARS
) -> list[dict]:
    """Who a gate "estimate below the limit" asks for ID at each limit: the table an operator sets the margin from.

    The groups are fixed ages (`policy_shares` at threshold 18), with the customers under each
    of the `LEGAL_AGES` (``under_16`` ... ``under_21``), so one table serves every legal age: a
    limit is threshold plus margin. Shares are rounded to 4 places, ``None`` where a group is
    empty.
    """
    def rounded(share):
        return None if share is None else round(share, 4)

    rows = []
    for limit in limits_years:
        shares = policy_shares(true_years, predicted_years, 18.0, limit - 18.0)
        row = {"limit_years": float(limit)} | {column: rounded(shares[key]) for column, key in TRADEOFF_SHARES.items()}
        for age in LEGAL_AGES:
            if age != 18:
                row[under_age_key(age)] = rounded(policy_shares(true_years, predicted_years, age, limit - age)
                                                  ["minors_flagged"])
        rows.append(row)
    return rows


KEY_ADULT_SHARE = 0.10
KEY_BOOTSTRAP_SAMPLES = 1000


def _cut(adults: np.ndarray, adult_share: float) -> np.ndarray:
    """The estimate below which ``adult_share`` of ``adults`` fall, along the last axis (kept)."""
    return np.quantile(adults, adult_share, axis=-1, method="inverted_cdf", keepdims=True)


def _flagged_below(teens: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Share of ``teens`` below ``cut``, along the last axis."""
    return (teens < cut).mean(axis=-1)


# The key figure's two groups: teenagers 13 <= age < 18 and adults of 25 and over.
KEY_TEEN_YEARS = (13, 18)
KEY_ADULT_FROM_YEARS = 25


def teens_and_adults(true_years: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the key figure's two groups: 13-17s and adults 25+."""
    low, high = KEY_TEEN_YEARS
    return (true_years >= low) & (true_years < high), true_years >= KEY_ADULT_FROM_YEARS


def _resamples(rng: np.random.Generator, *sizes: int):
    """`KEY_BOOTSTRAP_SAMPLES` resamples of indices into each group of ``sizes``.

    100 at a time (bounds the memory): one tuple of (100, size) index arrays per batch.
    """
    for _ in range(KEY_BOOTSTRAP_SAMPLES // 100):
        yield tuple(rng.integers(0, n, (100, n)) for n in sizes)


def _ci95(samples: list[np.ndarray]) -> list[float]:
    return [float(v) for v in np.percentile(np.concatenate(samples), [2.5, 97.5])]


def _bootstrap_ci95(teens: np.ndarray, adults: np.ndarray, adult_share: float, seed: int = 0) -> list[float]:
    """95% percentile interval of the key figure, resampling teens and adults apart.

    Both groups are samples: the teens' share and the adults' cut each carry sampling error,
    which matters where a source has only tens of 13-17s. Seeded, so reports reproduce.
    """
    rng = np.random.default_rng(seed)
    return _ci95([_flagged_below(teens[t], _cut(adults[a], adult_share))
                  for t, a in _resamples(rng, teens.size, adults.size)])


def key_figure(true_years: np.ndarray, predicted_years: np.ndarray, adult_share: float = KEY_ADULT_SHARE,
               ci95: bool = True) -> dict:
    """The product's key figure: 13-17s flagged when the cut flags only 10% of 25+ adults.

    The cut is the ``adult_share`` quantile of the 25+ adults' estimates: a gate "flag when
    the estimate is below the cut" asks that share of adults for ID needlessly. The figure
    is the share of 13-17s below the same cut. Unlike MAE it measures exactly what an
    alcohol gate needs: teenagers ranked below adults, whatever the ages' scale. The AUC is
    the chance that a random 13-17's estimate is below a random 25+ adult's (ties count
    half), the same ranking summed over every cut.

    Returns:
        ``{"age_13_17_flagged", "age_13_17_flagged_ci95", "cut_years", "auc_13_17_vs_25_plus",
        "age_13_17_count", "age_25_plus_count", "adult_share"}``; ``age_13_17_flagged_ci95`` is
        a bootstrap 95% interval ``[low, high]`` (``None`` with ``ci95`` False: where many sets
        of estimates are ranked, the resampling would dominate); shares are ``None`` when either
        group is empty.
    """
    true_years = np.asarray(true_years, np.float64)
    predicted = np.asarray(predicted_years, np.float64)
    teen, adult = teens_and_adults(true_years)
    teens, adults = predicted[teen], predicted[adult]
    out = {"age_13_17_flagged": None, "age_13_17_flagged_ci95": None, "cut_years": None,
           "auc_13_17_vs_25_plus": None, "age_13_17_count": int(teens.size),
           "age_25_plus_count": int(adults.size), "adult_share": adult_share}
    if teens.size == 0 or adults.size == 0:
        return out
    cut = _cut(adults, adult_share)
    sorted_adults = np.sort(adults)
    below = np.searchsorted(sorted_adults, teens, side="right")  # adults <= each teen
    strictly = np.searchsorted(sorted_adults, teens, side="left")  # adults < each teen
    auc = float(((adults.size - below) + 0.5 * (below - strictly)).sum() / (teens.size * adults.size))
    out.update(age_13_17_flagged=float(_flagged_below(teens, cut)), cut_years=float(cut[0]),
               auc_13_17_vs_25_plus=auc,
               age_13_17_flagged_ci95=_bootstrap_ci95(teens, adults, adult_share) if ci95 else None)
    return out


def paired_change(
    true_years: np.ndarray, before_years: np.ndarray, after_years: np.ndarray,
    adult_share: float = KEY_ADULT_SHARE, seed: int = 0,
) -> dict:
    """How much a second model's key figure and MAE differ from a first's on the same photos.

    Each model's own interval (`key_figure`) is wide where there are few 13-17s, and two
    such intervals overlap even when one model is better on nearly every resample. Paired,
    both models are scored on the same resampled teens and adults, so the photos' sampling
    error cancels and what is left is the models' difference.

    Returns:
        ``{"key_before", "key_after", "key_change", "key_change_ci95", "mae_before",
        "mae_after", "mae_change", "mae_change_ci95", "age_13_17_count", "age_25_plus_count"}``;
        changes are after - before (a higher key figure and a lower MAE are better); the key
        entries are ``None`` when either group is empty.
    """
    true_years = np.asarray(true_years, np.float64)
    before = np.asarray(before_years, np.float64)
    after = np.asarray(after_years, np.float64)
    if not (true_years.shape == before.shape == after.shape) or true_years.ndim != 1:
        raise ValueError(f"expected three equal-length 1-D arrays, got shapes {true_years.shape}, "
                         f"{before.shape}, {after.shape}")
    rng = np.random.default_rng(seed)
    abs_before, abs_after = np.abs(before - true_years), np.abs(after - true_years)
    mae_changes = [abs_after[pick].mean(axis=-1) - abs_before[pick].mean(axis=-1)
                   for (pick,) in _resamples(rng, true_years.size)]
    teen, adult = teens_and_adults(true_years)
    out = {"key_before": None, "key_after": None, "key_change": None, "key_change_ci95": None,
           "mae_before": float(abs_before.mean()), "mae_after": float(abs_after.mean()),
           "mae_change": float(abs_after.mean() - abs_before.mean()), "mae_change_ci95": _ci95(mae_changes),
           "age_13_17_count": int(teen.sum()), "age_25_plus_count": int(adult.sum())}
    if not teen.any() or not adult.any():
        return out
    teens_before, adults_before, teens_after, adults_after = before[teen], before[adult], after[teen], after[adult]

    def key(teens, adults):
        return _flagged_below(teens, _cut(adults, adult_share))

    key_before = float(key(teens_before, adults_before))
    key_after = float(key(teens_after, adults_after))
    key_changes = [key(teens_after[t], adults_after[a]) - key(teens_before[t], adults_before[a])
                   for t, a in _resamples(rng, teen.sum(), adult.sum())]
    out.update(key_before=key_before, key_after=key_after, key_change=key_after - key_before,
               key_change_ci95=_ci95(key_changes))
    return out


def figures(true_years: np.ndarray, predicted_years: np.ndarray, threshold_age: float, margin_years: float) -> dict:
    """Errors, the key figure and the gate's shares of one set of photos."""
    return {"errors": errors(true_years, predicted_years), "key": key_figure(true_years, predicted_years),
            "policy": policy_shares(true_years, predicted_years, threshold_age, margin_years)}


def figures_by_source(
    true_years: np.ndarray, predicted_years: np.ndarray, sources: np.ndarray, threshold_age: float,
    margin_years: float,
) -> dict:
    """`figures` of each source (in order of first appearance), with how many photos it scored."""
    sources = np.asarray(sources)
    return {
        name: {"scored": int((sources == name).sum()),
               **figures(true_years[sources == name], predicted_years[sources == name], threshold_age, margin_years)}
        for name in dict.fromkeys(sources.tolist())
    }

