"""Content-hash splits: disjoint, capped, and following content, not names."""

from __future__ import annotations

from diffpath.benchmark.spec import Sizes
from diffpath.benchmark.splits import split_refs
from tests.unit.benchmark import parquet_of, small_spec


def test_split_is_disjoint_capped_and_follows_content_not_names(tmp_path) -> None:
    spec = small_spec(tmp_path)
    names = [f"img{i:04d}.png" for i in range(300)]
    roles = split_refs(spec, "a", Sizes(fit=1000, validation=1000, test=1000))
    paths = {role: {r.path for r in refs} for role, refs in roles.items()}
    assert sum(map(len, paths.values())) == 300 and len(set.union(*paths.values())) == 300
    assert abs(len(paths["test"]) - 90) < 30 and abs(len(paths["validation"]) - 60) < 25
    capped = split_refs(spec, "a", Sizes(fit=50, validation=20, test=10))
    assert [len(capped[r]) for r in ("fit", "validation", "test")] == [50, 20, 10]
    # a file holding only the chosen images gives the same choice (how GPU runs carry data)
    chosen = [r.path for role in ("fit", "validation", "test") for r in capped[role]]
    parquet_of(tmp_path / "one.parquet", chosen[::-1])
    again = split_refs(spec, "a", Sizes(fit=50, validation=20, test=10))
    assert {r: {x.path for x in v} for r, v in again.items()} == {
        r: {x.path for x in v} for r, v in capped.items()
    }
    # renamed, the same bytes land in the same roles; identical bytes never straddle two
    parquet_of(tmp_path / "one.parquet", [f"new/{n}" for n in names], names)
    renamed = split_refs(spec, "a", Sizes(fit=1000, validation=1000, test=1000))
    assert {r: {x.path[4:] for x in v} for r, v in renamed.items()} == paths
    parquet_of(tmp_path / "one.parquet", names, [names[i % 150] for i in range(300)])
    twins = split_refs(spec, "a", Sizes(fit=1000, validation=1000, test=1000))
    role_of = {r.path: role for role, refs in twins.items() for r in refs}
    assert all(role_of[names[i]] == role_of[names[i + 150]] for i in range(150))
    train_test = split_refs(spec, "b", Sizes())
    assert {r.path for r in train_test["test"]} == {f"img{i:04d}.png" for i in range(200, 300)}
    assert not {r.path for r in train_test["fit"]} & {r.path for r in train_test["validation"]}
