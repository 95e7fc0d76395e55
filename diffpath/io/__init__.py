"""Where images are read: storage (any fsspec URI, atomic writes), sources and listings
(folders, Parquet, groupings), decoding, content identity and the output lock.

The bottom layer: imports only `diffpath.config` and `diffpath.errors`.
"""
