"""The Mamba mixer (transformers' MambaMixer, the Mamba paper's reference algorithm) composed from
`nn.decoder_ops`, with its backward; it takes the place of attention in a decoder block with `mixer="mamba"`.

    x, z = in_proj(a)                              (B, T, C) -> 2 x (B, T, D), D = expand C
    u = silu(conv1d(x))                            causal depthwise convolution over time, width K
    dt, B, C = x_proj(u)                           (B, T, R), (B, T, N), (B, T, N): input-dependent
    y = scan(u, dt_proj(dt), A = -exp(A_log), B, C, D, z, dt_proj.bias)     the selective scan, gated by silu(z)
    out = out_proj(y)                              (B, T, D) -> (B, T, C)

Parameters (under `h.i.mixer.`) are MambaMixer's: in_proj, conv1d (weight (D, K), bias), x_proj, dt_proj (weight,
bias), A_log (D, N), D (D,), out_proj; in_proj and out_proj have biases only with config.bias.
"""

from __future__ import annotations

import math

import numpy as np

from ..nn.decoder_ops import (
    causal_conv1d_backward,
    causal_conv1d_forward,
    selective_scan_backward,
    selective_scan_forward,
)
from ..nn.ops import linear_backward, linear_forward


def mamba_shapes(prefix, config) -> dict[str, tuple]:
    C, D, N, K, R = config.n_embd, config.mamba_inner, config.mamba_d_state, config.mamba_d_conv, config.dt_rank
    shapes = {prefix + "in_proj.weight": (2 * D, C)}
    if config.bias:
        shapes[prefix + "in_proj.bias"] = (2 * D,)
    shapes.update({
        prefix + "conv1d.weight": (D, K), prefix + "conv1d.bias": (D,),
        prefix + "x_proj.weight": (R + 2 * N, D),
        prefix + "dt_proj.weight": (D, R), prefix + "dt_proj.bias": (D,),
        prefix + "A_log": (D, N), prefix + "D": (D,),
        prefix + "out_proj.weight": (C, D),
    })  # fmt: skip
    if config.bias:
        shapes[prefix + "out_proj.bias"] = (C,)
    return shapes


def mamba_init(name, shape, config, rng):
    """Mamba's initialisation: A = -(1..N) per channel (S4D-real), D = 1, a step dt drawn log-uniformly in
    [0.001, 0.1] stored as softplus^-1(dt) in dt_proj.bias, dt_proj.weight uniform in +-R^-1/2, the convolution
    uniform in +-K^-1/2; None for the tensors that take the decoder's default."""
    D, N = config.mamba_inner, config.mamba_d_state
    if name.endswith("A_log"):
        return np.log(np.broadcast_to(np.arange(1, N + 1, dtype=np.float64), (D, N))).copy()
    if name.endswith(".D"):
        return np.ones(shape)
    if name.endswith("dt_proj.bias"):
        dt = np.exp(rng.uniform(math.log(1e-3), math.log(1e-1), shape))
        return dt + np.log(-np.expm1(-dt))  # softplus^-1
    if name.endswith("dt_proj.weight"):
        return rng.uniform(-1, 1, shape) * config.dt_rank ** -0.5
    if name.endswith("conv1d.weight") or name.endswith("conv1d.bias"):
        return rng.uniform(-1, 1, shape) * config.mamba_d_conv ** -0.5
    return None


def mamba_forward(a, w, config, state=None):
    """a (B, T, C) -> (B, T, C), cache. w: this block's mixer tensors, without the `h.i.mixer.` prefix.
    state: (the convolution's last K - 1 inputs (B, K - 1, D), the scan's state (B, D, N)) to go on from, for
    sampling (None: the start of a sequence); the state after these tokens is mamba_state(cache)."""
    D, N, R = config.mamba_inner, config.mamba_d_state, config.dt_rank
    prefix, h0 = state if state is not None else (None, None)
    xz, c_in = linear_forward(a, w["in_proj.weight"], w.get("in_proj.bias"))  # (B, T, 2D)
    x, z = xz[..., :D], xz[..., D:]
    xc, c_conv = causal_conv1d_forward(x, w["conv1d.weight"], w["conv1d.bias"], prefix)  # (B, T, D)
    sig = 1.0 / (1.0 + np.exp(-xc))
    u = xc * sig  # silu
    dbc, c_x = linear_forward(u, w["x_proj.weight"])  # (B, T, R + 2N)
    dt, c_dt = linear_forward(dbc[..., :R], w["dt_proj.weight"])  # (B, T, D); its bias goes into the scan
    A = -np.exp(w["A_log"])  # (D, N)
    y, c_scan = selective_scan_forward(u, dt, A, dbc[..., R:R + N], dbc[..., R + N:], w["D"], z, w["dt_proj.bias"],
                                       h0)
    out, c_out = linear_forward(y, w["out_proj.weight"], w.get("out_proj.bias"))  # (B, T, C)
    return out, (c_in, c_conv, xc, sig, c_x, c_dt, A, c_scan, c_out)


def mamba_state(cache, config):
    """The state after a mamba_forward: its convolution's last K - 1 inputs and its scan's last state."""
    c_conv, c_scan = cache[1], cache[7]
    return c_conv[0][:, c_conv[0].shape[1] - (config.mamba_d_conv - 1):], c_scan[10][:, -1]


# Back through each step above in reverse; A = -exp(A_log) gives dA_log = dA * A, and silu's derivative is
# s (1 + x (1 - s)). x and z come from one in_proj, u feeds both x_proj and the scan: their gradients add.
def mamba_backward(dout, cache, config) -> dict[str, np.ndarray]:
    """(da, grads keyed as mamba_shapes without the prefix)."""
    c_in, c_conv, xc, sig, c_x, c_dt, A, c_scan, c_out = cache
    g = {}
    dy, g["out_proj.weight"], g["out_proj.bias"] = linear_backward(dout, c_out)
    du, ddt, dA, dB, dC, g["D"], dz, g["dt_proj.bias"] = selective_scan_backward(dy, c_scan)
    g["A_log"] = dA * A
    ddt_in, g["dt_proj.weight"], _ = linear_backward(ddt, c_dt)
    du_x, g["x_proj.weight"], _ = linear_backward(np.concatenate([ddt_in, dB, dC], axis=-1), c_x)
    dxc = (du + du_x) * (sig * (1.0 + xc * (1.0 - sig)))
    dx, g["conv1d.weight"], g["conv1d.bias"] = causal_conv1d_backward(dxc, c_conv)
    da, g["in_proj.weight"], g["in_proj.bias"] = linear_backward(np.concatenate([dx, dz], axis=-1), c_in)
    return da, g
