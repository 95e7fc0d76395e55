"""Where images are scored: densities, the fitted reference, conformal thresholds and
p-values, alerts, contamination estimates, metrics and the screen, audit and evaluate
outputs.

Imports `diffpath.features` and below, never `benchmark` or `reports`.
"""
