"""Triton kernels for the GPU path, shipped as ``npminilm.kernels``: one file per fused op, each kernel beside
its launcher. Importing a module here imports torch and triton; npminilm's NumPy core never does."""
