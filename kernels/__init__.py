"""Triton kernels for the GPU path, shipped as ``npminilm.kernels`` (empty until the GPU issue lands)."""
