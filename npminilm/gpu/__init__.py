"""The GPU backend: SentenceEncoder on the Triton kernels of `npminilm.kernels` (`backend="triton"`).

The only package of npminilm that runs torch and triton, and it imports them when an encoder is built, never at
module level. It plugs into `npminilm.encoder.backends` through the "triton" entry point in pyproject.toml.
"""
