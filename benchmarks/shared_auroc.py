"""AUROC of DiffPathV2 vs the DiffPath baseline on the shared data, CelebA as in-distribution.

    python benchmarks/shared_auroc.py --model default --images 200

Fits each method's reference (its default density) on CelebA train faces, then scores
CelebA test faces (other identities) against CIFAR-10 test, DTD textures and Tiny
ImageNet. Prints AUROC and FPR@95 per pair and the mean AUROC.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from shared_sets import DATA_DIR, shared_sets

from diffpath.config import FeatureConfig
from diffpath.features.extract import extract_features
from diffpath.io.sources import list_source, load_images, subsample
from diffpath.model.diffusion import load_model
from diffpath.scoring.metrics import ood_metrics
from diffpath.scoring.reference import fit_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=200, help="per set (x2 for celeba-train)")
    parser.add_argument("--methods", nargs="*", default=["diffpathv2", "diffpath6d"])
    args = parser.parse_args()
    model = load_model(args.model, device=args.device)
    images = {}
    for name, (path, crop) in shared_sets(args.data_dir).items():
        n = 2 * args.images if name == "celeba-train" else args.images
        refs = subsample(list_source(str(path)), n, seed=0)
        images[name] = load_images(refs, 32, crop)[:2]
    for method in args.methods:
        config = FeatureConfig(method=method)
        start = time.perf_counter()
        features = {n: extract_features(model, x, k, config) for n, (x, k) in images.items()}
        seconds = time.perf_counter() - start
        reference = fit_reference(features["celeba-train"], config, model.model_id)
        id_scores = reference.anomaly_score(features["celeba-test"])
        aurocs = []
        for name in ("cifar10", "dtd", "tinyimagenet"):
            m = ood_metrics(id_scores, reference.anomaly_score(features[name]))
            aurocs.append(m["auroc"])
            print(
                f"{method:11s} celeba vs {name:13s} AUROC {m['auroc']:.4f}  FPR@95 {m['fpr95']:.4f}"
            )
        count = sum(len(k) for _, k in images.values())
        print(
            f"{method:11s} mean AUROC {np.mean(aurocs):.4f}  ({count} images in {seconds:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
