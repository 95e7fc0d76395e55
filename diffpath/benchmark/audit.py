"""How well the audit finds contaminants mixed into a clean set at known rates, with a
trusted reference and without one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from diffpath.benchmark.matrix import Features
from diffpath.benchmark.spec import BenchmarkSpec
from diffpath.errors import ConfigError
from diffpath.scoring.contamination import audit_scores
from diffpath.scoring.grouping import Grouping
from diffpath.scoring.metrics import auroc
from diffpath.scoring.reference import fit_reference


def audit_accuracy(
    spec: BenchmarkSpec, method: str, features: Features, density: str = "auto"
) -> list[dict[str, Any]]:
    """Contaminants mixed into the clean set's test images at each rate: detection AUROC,
    suspects' precision/recall and the estimated fraction, with a reference (fitted as
    `fit-reference --group-column` does on the clean set's fit and validation images,
    holding back 30% to calibrate) and without one."""
    audit = spec.audit
    if audit is None:
        raise ConfigError(f"benchmark {spec.name} has no audit section")
    config = spec.feature_config(spec.run_methods(True)[method], audit.clean)
    clean = features[audit.clean, "test", method][1]
    pool = np.vstack([features[c, "test", method][1] for c in audit.contaminants])
    roles = [features[audit.clean, role, method] for role in ("fit", "validation")]
    trusted = np.vstack([matrix for _, matrix in roles])
    groups = None
    if audit.group_column:
        grouping = Grouping(column=audit.group_column)
        groups = grouping.labels(pa.concat_tables([rows for rows, _ in roles]))
    reference = fit_reference(trusted, config, "", density, 0.05, 0.3, spec.seed, groups)
    rng = np.random.default_rng(spec.seed)
    results = []
    for rate in audit.rates:
        n_bad = min(len(pool), round(rate * len(clean) / (1 - rate)))
        mixed = np.vstack([clean, pool[rng.choice(len(pool), n_bad, replace=False)]])
        truth = np.r_[np.zeros(len(clean), bool), np.ones(n_bad, bool)]
        for name, against in (("reference", reference), ("no reference", None)):
            scores, _, estimate = audit_scores(mixed, config.method, density, 5, spec.seed, against)
            hits = int((estimate.suspects & truth).sum())
            results.append(
                {
                    "method": method,
                    "rate": n_bad / len(mixed),
                    "n_images": len(mixed),
                    "detection_auroc": auroc(scores[~truth], scores[truth]) if n_bad else None,
                    "precision": hits / max(1, int(estimate.suspects.sum())),
                    "recall": hits / n_bad if n_bad else None,
                    **estimate.as_dict(),
                    "estimator": f"{estimate.method} ({name})",
                }
            )
    return results
