"""The compiled kernels, built by `pip install` with the machine's C compiler; no runtime dependency:
the effects' (Floyd–Steinberg diffusion, the film print pass, luma, palette painting) and the edge
matting's Laplacian product (app/pipeline/_matte.c; no fused multiply-adds, so that it is numpy's
definition bit for bit). Everything else about the package is in pyproject.toml: setuptools' table
for extension modules there is still experimental, so they are declared here."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("effects._kernels", sources=["effects/_kernels.c"], extra_compile_args=["-O2"]),
    Extension("app.pipeline._matte", sources=["app/pipeline/_matte.c"], extra_compile_args=["-O3", "-ffp-contract=off"]),
])
