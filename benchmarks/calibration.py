"""Do flags, alerts and audit estimates hold the error rates they state? A simulation.

    python benchmarks/calibration.py --out runs/calibration.json
    python benchmarks/calibration.py --real runs/calibration --out runs/calibration.json

Simulated scores are exchangeable uniforms: every rule here depends on ranks only, so any
continuous score distribution gives the same numbers. A clean night of m images against a
threshold t is counted as Binomial(m, 1 − t), which is exactly the number of m new uniform
scores above t, without drawing a million of them. Contaminants are placed in the
in-distribution score distribution (u = F_ID(score)): like CIFAR-10 against the bundled
face model (with --real: the empirical u of real CIFAR-10 scores against real CelebA
scores of new identities; without: u ~ Beta(15.7, 1), AUROC 0.94), or "separate"
(u ~ Beta(200, 1), AUROC 0.995). --real names a folder made by the commands in
docs/statistics.md (a reference fitted on CelebA train identities, and screens of
celeba/test.parquet and CIFAR-10 against it); its rows use those real scores and features.
Prints Markdown tables and saves every number as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import binom

from diffpath.errors import ConfigError
from diffpath.features.shards import feature_matrix, read_shards
from diffpath.scoring.conformal import FlagRule, calibrate_threshold, conformal_rank, threshold_rule
from diffpath.scoring.contamination import audit_scores, storey_estimate
from diffpath.scoring.reference import Reference, fit_reference, load_reference

ALPHA, ALERT_P = 0.05, 0.01
CALIBRATION = (50, 200, 1000)
DUMPS = (1_000, 10_000, 100_000, 1_000_000)
CONTAMINATION = (0.01, 0.05, 0.2)
AUDIT_RATES = (0.0, 0.01, 0.05, 0.15, 0.3, 0.6)

Contaminant = Callable[[np.random.Generator, int], np.ndarray]  # draws u = F_ID(score)


def beta_contaminant(a: float) -> Contaminant:
    return lambda rng, size: rng.beta(a, 1.0, size)


def empirical_contaminant(u: np.ndarray) -> Contaminant:
    return lambda rng, size: rng.choice(u, size)


def rank_of(n: int, alpha: float, rule: str) -> int:
    """The order statistic a threshold takes: conformal, or the ⌈(1 − α)n⌉ of before."""
    return conformal_rank(n, alpha) if rule == "conformal" else int(np.ceil((1 - alpha) * n))


def thresholds(rng: np.random.Generator, n: int, k: int, reps: int) -> np.ndarray:
    """The k-th smallest of n uniform calibration scores, `reps` times (Beta(k, n + 1 − k))."""
    return rng.beta(k, n + 1 - k, reps)


def flag_rates(rng: np.random.Generator, reps: int) -> list[dict[str, Any]]:
    """Mean in-distribution flag rate at α, for each calibration size and both rules."""
    rows = []
    for alpha in (0.01, 0.05):
        for n in CALIBRATION:
            row: dict[str, Any] = {"alpha": alpha, "n_calibration": n}
            for rule in ("conformal", "previous"):
                try:
                    k = rank_of(n, alpha, rule)
                except ConfigError:  # too few calibration scores to flag at α
                    row[rule] = None
                    continue
                row[rule] = float(np.mean(1 - thresholds(rng, n, k, reps)))
            rows.append(row)
    return rows


def night_counts(
    rng: np.random.Generator,
    t: np.ndarray,
    m: int,
    rate: float,
    contaminant: Contaminant,
) -> np.ndarray:
    """Flagged count of a night of m images (a `rate` of them contaminants) per threshold."""
    bad = rng.binomial(m, rate, len(t)) if rate else np.zeros(len(t), int)
    u = contaminant(rng, 20_000)
    above = 1 - np.searchsorted(np.sort(u), t, "right") / len(u)  # P(contaminant > t)
    return rng.binomial(m - bad, 1 - t) + rng.binomial(bad, above)


def first_alert(rule: FlagRule, m: int, per: str = "night") -> int:
    """The smallest flagged count whose `FlagRule.p_value` is at most ALERT_P (bisection:
    the p-value falls as the count grows), so a night alerts exactly when it reaches it."""
    low, high = 0, m + 1
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if rule.p_value(mid, m, per) <= ALERT_P else (mid + 1, high)
    return low


def reference_alerts(
    rng: np.random.Generator, references: int, contaminant: Contaminant
) -> list[dict[str, Any]]:
    """A deployment keeps one reference: each reference's own false-alert rate over its
    clean nights (exact: its true flag rate r ~ Beta(n + 1 − k, k), a night's count ~
    Binomial(m, r)), for `--alert-per night` and `reference`; and power at 5% contamination."""
    rows = []
    for n in CALIBRATION:
        k = conformal_rank(n, ALPHA)
        rule = FlagRule(threshold=0.0, rank=k, n=n)
        rates = 1 - thresholds(rng, n, k, references)
        for m in DUMPS:
            for per in ("night", "reference"):
                first = first_alert(rule, m, per)
                false = binom.sf(first - 1, m, rates)  # each reference's clean-night rate
                counts = night_counts(rng, 1 - rates, m, 0.05, contaminant)
                rows.append(
                    {
                        "n_calibration": n,
                        "m": m,
                        "alert_per": per,
                        "clean_nights_alerting": float(np.mean(false)),
                        "references_over_1pct": float(np.mean(false > ALERT_P)),
                        "references_over_50pct": float(np.mean(false > 0.5)),
                        "power_at_5pct": float(np.mean(counts >= first)),
                    }
                )
    return rows


def alert_rates(
    rng: np.random.Generator, reps: int, contaminant: Contaminant
) -> list[dict[str, Any]]:
    """How often `--alert-p 0.01` alerts: on clean nights (false alerts, with the binomial
    test of before beside it) and at each contamination rate (power)."""
    rows = []
    for n in CALIBRATION:
        k = conformal_rank(n, ALPHA)
        t = thresholds(rng, n, k, reps)
        rule = FlagRule(threshold=0.0, rank=k, n=n)
        for m in DUMPS:
            row: dict[str, Any] = {"n_calibration": n, "m": m}
            for rate in (0.0, *CONTAMINATION):
                counts = night_counts(rng, t, m, rate, contaminant)
                row[f"alert_{rate:g}"] = float(np.mean(counts >= first_alert(rule, m)))
                if rate == 0.0:
                    old = binom.sf(counts - 1, m, ALPHA)
                    row["binomial_false_alert"] = float(np.mean(old <= ALERT_P))
            rows.append(row)
    return rows


def mixed_sets(
    rng: np.random.Generator, m: int, rate: float, contaminant: Contaminant
) -> tuple[np.ndarray, int]:
    """A set of m scores with round(rate · m) contaminants, and that count."""
    n_bad = round(rate * m)
    return np.r_[rng.random(m - n_bad), contaminant(rng, n_bad)], n_bad


def storey_rows(
    rng: np.random.Generator, reps: int, contaminants: dict[str, Contaminant], m: int = 2000
) -> list[dict[str, Any]]:
    """Bias, coverage of the 95% interval and the detectable floor of the audit with a
    reference (Storey on conformal p-values), per calibration size and contamination."""
    rows = []
    for name, contaminant in contaminants.items():
        for n in (200, 1000):
            for rate in AUDIT_RATES:
                estimates = []
                for _ in range(reps):
                    scores, n_bad = mixed_sets(rng, m, rate, contaminant)
                    estimates.append(
                        (storey_estimate(scores, rng.random(n), n_boot=200), n_bad / m)
                    )
                rows.append(summarize_audit(estimates, rate, {"contaminant": name, "n": n, "m": m}))
    return rows


def summarize_audit(estimates: list[tuple[Any, float]], rate: float, keys: dict) -> dict:
    """Bias, interval coverage, undetermined and zero counts of a list of (estimate, truth)."""
    found = [(e, truth) for e, truth in estimates if e.fraction is not None]
    errors = [e.fraction - truth for e, truth in found]
    return {
        **keys,
        "rate": rate,
        "reps": len(estimates),
        "bias": float(np.mean(errors)) if found else None,
        "rmse": float(np.sqrt(np.mean(np.square(errors)))) if found else None,
        "coverage": float(np.mean([e.low <= t <= e.high for e, t in found])) if found else None,
        "detectable": (
            float(np.mean([e.detectable for e, _ in found]))
            if found and found[0][0].detectable is not None
            else None
        ),
        "undetermined": len(estimates) - len(found),
        "warned": sum(e.warning is not None for e, _ in estimates),
        "zero": sum(e.fraction == 0.0 for e, _ in found),
    }


class Real:
    """Scores and features of the real rows: a CelebA reference, new CelebA identities
    (clean) and CIFAR-10 (contaminants), read from the outputs of the commands in
    docs/statistics.md."""

    def __init__(self, root: Path) -> None:
        self.reference: Reference = load_reference(str(root / "reference" / "reference.json"))
        self.clean = self._scores(root / "celeba-test")
        self.ood = self._scores(root / "cifar10-test")
        self.calibration = self.reference.calibration_scores
        # contaminants' place among new in-distribution scores, for the simulated rows
        self.u = np.searchsorted(np.sort(self.clean), self.ood, "right") / len(self.clean)
        self.root = root

    @staticmethod
    def _scores(out: Path) -> np.ndarray:
        return pl.read_parquet(out / "scores.parquet")["score"].to_numpy()

    def features(self, name: str) -> np.ndarray:
        return self.labelled(name)[0]

    def labelled(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Features of a run's images and their Parquet `label` (the identity of a face)."""
        shards = sorted(str(p) for p in (self.root / name / "shards").rglob("*.parquet"))
        table, _ = read_shards(shards, self.reference.config)
        rows, features = feature_matrix(table, self.reference.config)
        source = rows["uri"][0].as_py()
        labels = pl.read_parquet(source, columns=["label"])["label"].to_numpy()
        return features, labels[rows["row"].to_numpy()]


IDENTITY_SETTINGS = {
    # name: (reference identities, share held back, audited identities, audited faces)
    "issue 29: 13 identities, 3 held back; 200 faces of 7 others": ("test", 13, 0.2, 7, 200),
    "160 identities, 30% held back; 500 faces of 40 others": ("train", 160, 0.3, 40, 500),
    "160 identities, 30% held back; 200 faces of 7 others": ("train", 160, 0.3, 7, 200),
}


def identity_audits(real: Real, rng: np.random.Generator, reps: int) -> list[dict[str, Any]]:
    """Audits as users run them: a reference fitted with --group-column on some CelebA
    identities, a set of faces of other identities with CIFAR-10 and DTD (2:1) mixed in at
    each rate; Storey's estimate with its group-aware interval, or undetermined."""
    method = real.reference.config.method
    faces = {"train": real.labelled("reference"), "test": real.labelled("celeba-test")}
    cifar, dtd = real.features("cifar10-test"), real.features("dtd")
    rows = []
    for name, (pool, n_ref, holdout, n_audit, m) in IDENTITY_SETTINGS.items():
        for rate in (0.0, 0.05, 0.13, 0.2, 0.3):
            estimates = []
            for _ in range(reps):
                x, labels = faces[pool]
                audit_x, audit_labels = faces["test"]
                ids = rng.permutation(np.unique(labels))
                mine = np.isin(labels, ids[:n_ref])
                others = np.setdiff1d(np.unique(audit_labels), ids[:n_ref])
                chosen = np.isin(audit_labels, rng.permutation(others)[:n_audit])
                clean = audit_x[rng.permutation(np.flatnonzero(chosen))[:m]]
                n_bad = round(rate * len(clean) / (1 - rate))
                n_cifar = round(2 * n_bad / 3)
                mixed = np.vstack(
                    [
                        clean,
                        cifar[rng.choice(len(cifar), n_cifar, replace=False)],
                        dtd[rng.choice(len(dtd), n_bad - n_cifar, replace=False)],
                    ]
                )
                reference = fit_reference(
                    x[mine],
                    real.reference.config,
                    "",
                    "auto",
                    0.05,
                    holdout,
                    int(rng.integers(2**31)),
                    labels[mine],
                )
                estimate = audit_scores(mixed, method, reference=reference)[2]
                estimates.append((estimate, n_bad / len(mixed)))
            row = summarize_audit(estimates, rate, {"setting": name})
            found = [abs(e.fraction - t) for e, t in estimates if e.fraction is not None]
            rows.append(row | {"max_error": max(found) if found else None})
    return rows


def real_flags(real: Real, rng: np.random.Generator, reps: int) -> dict[str, Any]:
    """New identities against the reference: flag rate against α and its range; alerts of
    resampled nights, clean and contaminated with CIFAR-10."""
    alpha = real.reference.target_fpr
    rule = threshold_rule(real.calibration, calibrate_threshold(real.calibration, alpha))
    m = len(real.clean)
    n_flagged = int(np.sum(real.clean > rule.threshold))
    _, low, high = rule.expected(m)
    nights = []
    for night in (1_000, 10_000):
        row: dict[str, Any] = {"m": night}
        for rate in (0.0, *CONTAMINATION):
            alerts = 0
            for _ in range(reps):
                n_bad = rng.binomial(night, rate)
                scores = np.r_[rng.choice(real.clean, night - n_bad), rng.choice(real.ood, n_bad)]
                alerts += rule.p_value(int(np.sum(scores > rule.threshold)), night) <= ALERT_P
            row[f"alert_{rate:g}"] = alerts / reps
        nights.append(row)
    return {
        "n_calibration": rule.n,
        "alpha": alpha,
        "rate_held": rule.rate,
        "new_identities": m,
        "flagged": n_flagged,
        "expected_range": [low, high],
        "cifar10_flagged": float(np.mean(real.ood > rule.threshold)),
        "nights": nights,
    }


def real_audits(real: Real, rng: np.random.Generator, reps: int, m: int = 1000) -> list[dict]:
    """Audits of sets of m real images (new CelebA identities + CIFAR-10 at each rate):
    Storey against the reference, and the cross-fitted mixture without one."""
    clean, ood = real.features("celeba-test"), real.features("cifar10-test")
    method = real.reference.config.method
    faces = np.r_[real.calibration, real.clean]  # real face scores, made exchangeable
    rows = []
    for rate in AUDIT_RATES:
        n_bad = round(rate * m)
        with_ref, pooled, without = [], [], []
        for rep in range(reps):
            shuffled = rng.permutation(faces)
            calibration, rest = shuffled[: len(real.calibration)], shuffled[len(real.calibration) :]
            scores = np.r_[rest[: m - n_bad], rng.choice(real.ood, n_bad, replace=False)]
            pooled.append((storey_estimate(scores, calibration), n_bad / m))
            pick = np.r_[
                clean[rng.choice(len(clean), m - n_bad, replace=False)],
                ood[rng.choice(len(ood), n_bad, replace=False)],
            ]
            with_ref.append((audit_scores(pick, method, reference=real.reference)[2], n_bad / m))
            if rep < max(1, reps // 10):  # cross-fitting refits 10 densities: fewer of these
                without.append((audit_scores(pick, method, seed=rep)[2], n_bad / m))
        rows.append(summarize_audit(with_ref, rate, {"estimator": "storey (reference)", "m": m}))
        rows.append(summarize_audit(pooled, rate, {"estimator": "storey (pooled faces)", "m": m}))
        rows.append(summarize_audit(without, rate, {"estimator": "mixture (none)", "m": m}))
    return rows


def _cell(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(
        lines + ["| " + " | ".join(_cell(r.get(k)) for k in head) + " |" for r in rows]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/calibration.json"))
    parser.add_argument("--real", type=Path, help="folder of the real rows' runs")
    parser.add_argument("--reps", type=int, default=4000, help="simulated nights per cell")
    parser.add_argument("--audit-reps", type=int, default=200, help="simulated audits per cell")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    real = Real(args.real) if args.real else None
    cifar = empirical_contaminant(real.u) if real else beta_contaminant(15.7)
    sections: list[tuple[str, str, Callable[[], Any]]] = [
        ("flag_rate", "Flag rate of in-distribution images", lambda: flag_rates(rng, args.reps)),
        (
            "alerts",
            f"--alert-p {ALERT_P} at α = {ALPHA}: false alerts (rate 0) and power",
            lambda: alert_rates(rng, args.reps, cifar),
        ),
        (
            "reference_alerts",
            f"--alert-p {ALERT_P} with one reference kept: each reference's clean nights",
            lambda: reference_alerts(rng, args.reps, cifar),
        ),
        (
            "audit",
            "Audit with a reference (Storey), simulated",
            lambda: storey_rows(
                rng, args.audit_reps, {"cifar10-like": cifar, "separate": beta_contaminant(200)}
            ),
        ),
    ]
    if real:
        sections += [
            (
                "real_flags",
                "Real: a CelebA reference, new identities, CIFAR-10",
                lambda: real_flags(real, rng, 1000),
            ),
            (
                "real_audit",
                "Real: audits of CelebA test + CIFAR-10",
                lambda: real_audits(real, rng, max(10, args.audit_reps // 4)),
            ),
            (
                "identity_audit",
                "Real, split by identity: audits of other identities + CIFAR-10 and DTD",
                lambda: identity_audits(real, rng, max(10, args.audit_reps // 5)),
            ),
        ]
    results: dict[str, Any] = {"alpha": ALPHA, "alert_p": ALERT_P, "reps": args.reps}
    for key, label, run in sections:
        started = time.time()
        results[key] = run()
        print(f"\n## {label} ({time.time() - started:.0f} s)\n")
        rows = results[key] if isinstance(results[key], list) else [results[key]]
        print(markdown([{k: v for k, v in r.items() if k != "nights"} for r in rows]))
        if "nights" in rows[0]:
            print("\n" + markdown(rows[0]["nights"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()
