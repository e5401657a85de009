"""The effects' compiled kernels (Floyd–Steinberg diffusion, the film print pass, luma, palette
painting), built by `pip install` with the machine's C compiler; no runtime dependency. Everything
else about the package is in pyproject.toml: setuptools' table for extension modules there is
still experimental, so they are declared here."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("effects._kernels", sources=["effects/_kernels.c"], extra_compile_args=["-O2"])])
