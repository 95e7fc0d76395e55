"""The benchmark matrix: a spec, content-hash splits, the bootstrap matrix, regressions
against an earlier run, the audit's accuracy and one run of it all.

Imports `diffpath.scoring` and below, never `reports`.
"""
