"""Near copies on real data: recall per transform, false matches per pair, cost per 1M.

    python benchmarks/nearcopy.py --data ../shared/data --out nearcopy.json

For CIFAR-10 test and CelebA test, `--copies` originals are copied five ways (JPEG at
quality 60–90, resized 0.5–2×, cropped up to 10% (reported ≤5% and 5–10%), mirrored,
brightness ±20%); recall is the share of copies within `NEAR_BITS` of their original —
as a near duplicate (the hash itself) and as a leak (the hash or the mirror image's, as
`--leak-check` indexes a protected set). False matches: every pair of distinct images of
the set (CIFAR-10 test 10,000; CelebA train + test 6,000, by identity), the same two ways,
with a 95% upper bound. Cost: hashing time per image on this machine (one process, its
threads), and the near-pair search time on every real hash at hand.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance, ImageOps
from scipy.stats import beta

from diffpath.io.phash import hamming, perceptual_hashes
from diffpath.scoring.nearcopy import NEAR_BITS, near_pairs

BITS = (0, 2, 4, 6)  # the --near-bits settings reported
SETS = {
    "cifar10": ["cifar10/test.parquet"],
    "celeba": ["celeba/test.parquet", "celeba/train.parquet"],
}
SEARCH = [  # every real image at hand, for the search's cost
    "cifar10/train.parquet",
    "cifar10/test.parquet",
    "celeba-extra/train.parquet",
    "tinyimagenet32/val.parquet",
    "svhn/test.parquet",
]


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def transforms(data: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    """The copies of one image: each transform's parameters drawn at random."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    scale = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    resized = image.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.BICUBIC)
    copies = {
        "jpeg 60-90": _jpeg(image, int(rng.integers(60, 91))),
        "resize 0.5-2x": _jpeg(resized, 95),
        "flip": _jpeg(ImageOps.mirror(image), 95),
        "brightness +-20%": _jpeg(
            ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.8, 1.2))), 95
        ),
    }
    for name, (low, high) in {"crop <=5%": (0.0, 0.05), "crop 5-10%": (0.05, 0.10)}.items():
        fraction = rng.uniform(low, high)  # of each side, split at random between its ends
        dx, dy = round(w * fraction), round(h * fraction)
        left, top = int(rng.integers(0, dx + 1)), int(rng.integers(0, dy + 1))
        copies[name] = _jpeg(image.crop((left, top, w - (dx - left), h - (dy - top))), 95)
    return copies


def images(data: Path, files: list[str]) -> list[bytes]:
    return [
        b for f in files for b in pq.read_table(data / f, columns=["image"])["image"].to_pylist()
    ]


def upper(k: int, n: int) -> float:
    """95% one-sided upper bound of a rate seen k times in n (Clopper–Pearson)."""
    return float(beta.ppf(0.95, k + 1, n - k)) if n else 1.0


def mirrored_distance(mirrored: pl.DataFrame) -> pl.DataFrame:
    """The smallest distance of each unordered pair matched through a mirror image."""
    pairs = mirrored.select(
        i=pl.min_horizontal("i", "j"), j=pl.max_horizontal("i", "j"), distance="distance"
    )
    return pairs.group_by("i", "j").agg(pl.col("distance").min())


def measure(name: str, distinct: list[bytes], n_copies: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    hashes, decoded = perceptual_hashes(distinct)
    hash_seconds = (time.perf_counter() - started) / len(distinct)
    mirrors, _ = perceptual_hashes(distinct, mirror=True)
    assert decoded.all()
    chosen = rng.choice(len(distinct), n_copies, replace=False)
    made = [transforms(distinct[i], rng) for i in chosen]
    recall = {}
    for transform in made[0]:
        copies, ok = perceptual_hashes([m[transform] for m in made])
        direct = hamming(copies, hashes[chosen])
        either = np.minimum(direct, hamming(copies, mirrors[chosen]))
        recall[transform] = {
            "near duplicate": float((direct[ok] <= NEAR_BITS).mean()),
            "leak": float((either[ok] <= NEAR_BITS).mean()),
            "median bits": float(np.median(direct[ok])),
            "leak by bits": {b: float((either[ok] <= b).mean()) for b in BITS},
        }
    pairs = len(distinct) * (len(distinct) - 1) // 2
    direct = near_pairs(hashes)
    mirrored = near_pairs(hashes, mirrors).filter(pl.col("i") != pl.col("j"))
    unordered = mirrored_distance(mirrored).select("i", "j")
    within = len(direct)
    either = pl.concat([direct, unordered.join(mirrored_distance(mirrored), on=["i", "j"])])
    closest = either.group_by("i", "j").agg(pl.col("distance").min())  # either way
    leaks = len(closest)
    by_bits = {b: int((closest["distance"] <= b).sum()) for b in BITS}
    return {
        "set": name,
        "n_distinct": len(distinct),
        "n_copies": n_copies,
        "recall": recall,
        "pairs": pairs,
        "false_matches": {
            "near duplicate": {
                "k": within,
                "rate": within / pairs,
                "upper95": upper(within, pairs),
            },
            "leak": {"k": leaks, "rate": leaks / pairs, "upper95": upper(leaks, pairs)},
            "leak by bits": {b: {"k": k, "upper95": upper(k, pairs)} for b, k in by_bits.items()},
        },
        "hash_us_per_image": 1e6 * hash_seconds,
    }


def search_cost(data: Path) -> dict:
    """Near-pair search over every real image at hand, and its growth."""
    distinct = images(data, SEARCH)
    started = time.perf_counter()
    hashes, _ = perceptual_hashes(distinct)
    hashing = time.perf_counter() - started
    rows = []
    sizes = [(n, NEAR_BITS) for n in (len(hashes) // 4, len(hashes) // 2, len(hashes))]
    for n, bits in [*sizes, (len(hashes), 2), (len(hashes), 0)]:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        found = near_pairs(hashes[:n], bits=bits)
        rows.append(
            {
                "n": n,
                "bits": bits,
                "seconds": time.perf_counter() - started,
                "pairs_found": len(found),
                "peak_rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
                / 1024,
            }
        )
    last = rows[len(sizes) - 1]
    per_million = last["seconds"] * (1e6 / last["n"]) ** 2  # quadratic with a small constant
    return {
        "n_images": len(hashes),
        "hash_us_per_image": 1e6 * hashing / len(hashes),
        "search": rows,
        "search_seconds_1m_extrapolated": per_million,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {"near_bits": NEAR_BITS, "sets": [], "cost": None}
    for name, files in SETS.items():
        result = measure(name, images(args.data, files), args.copies, args.seed)
        results["sets"].append(result)
        print(
            f"{name}: {result['n_distinct']:,} distinct images, {result['n_copies']} copies a way"
        )
        for transform, r in result["recall"].items():
            print(
                f"  {transform:18s} recall {r['near duplicate']:.3f} (leak check {r['leak']:.3f}), "
                f"median {r['median bits']:.0f} bits"
            )
        for transform, r in result["recall"].items():
            print(f"  {transform:18s} leak recall by bits {r['leak by bits']}")
        print(f"  false leaks by bits: {result['false_matches']['leak by bits']}")
        for kind, f in result["false_matches"].items():
            if kind == "leak by bits":
                continue
            print(
                f"  false matches ({kind}): {f['k']} of {result['pairs']:,} pairs = "
                f"{f['rate']:.1e} (95% upper {f['upper95']:.1e})"
            )
    cost = search_cost(args.data)
    results["cost"] = cost
    print(f"hashing: {cost['hash_us_per_image']:.0f} us per image ({cost['n_images']:,} images)")
    for row in cost["search"]:
        print(
            f"search {row['n']:,} hashes within {row['bits']} bits: {row['seconds']:.2f} s, "
            f"{row['pairs_found']:,} pairs, "
            f"+{row['peak_rss_growth_mb']:.0f} MB peak"
        )
    print(
        f"search per 1M (quadratic extrapolation): {cost['search_seconds_1m_extrapolated']:.0f} s"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
