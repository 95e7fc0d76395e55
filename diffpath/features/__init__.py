"""Where features are computed and cached: the feature methods (DiffPathV2 and the DiffPath
baseline), their extraction, the content-addressed cache and one shard's feature file.

Imports `diffpath.model` and `diffpath.io`, never above.
"""
