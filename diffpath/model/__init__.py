"""The diffusion model: loading a UNet with its fingerprint, one model per worker's device,
the noise schedule and training the base model.

Imports `diffpath.io` (weights and training images are read through it), never above.
"""
