"""The modern decoder's ops as forward/backward pairs: RMSNorm, rotary position embeddings (HF Llama's
rotate_half convention), the SwiGLU feed-forward, grouped-query attention, Mixtral's mixture of experts with the
Switch Transformer's load-balancing loss, and Mamba's causal depthwise convolution and selective scan.

Same contract as `ops.py`: `*_forward(...) -> (out, cache)`, `*_backward(dout, cache)` -> the gradients of the
forward's float array inputs in argument order. Shapes: B batch, T time, C channels, NH query heads, NKV key/value
heads, hs head size, I the feed-forward's hidden size, E experts, k experts per token, N tokens (B T).
"""

import numpy as np

from .ops import attention_backward, attention_forward, linear_backward, linear_forward, softmax_forward

# ---------------------------------------------------------------------------------------------- RMSNorm


def rmsnorm_forward(x, weight, eps=1e-6):
    """y = x / sqrt(mean(x^2) + eps) * w over the last axis (LlamaRMSNorm). x (..., C), weight (C,)."""
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # (..., 1)
    xhat = x * rstd
    return xhat * weight, (xhat, rstd, weight)


# xhat = x r,  r = (mean(x^2) + eps)^-1/2,  y = xhat w.  With g = dy w (per row of length C):
#   dx = r (g - xhat mean(g xhat)),   dw = sum over rows of dy xhat
def rmsnorm_backward(dout, cache):
    xhat, rstd, weight = cache
    g = dout * weight
    dx = rstd * (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    dw = (dout * xhat).reshape(-1, xhat.shape[-1]).sum(axis=0)
    return dx, dw


# ------------------------------------------------------------------------------------------------- RoPE


def rope_tables(positions, head_size, theta=10000.0, dtype=np.float64):
    """(cos, sin), each (T, hs): angle t / theta^(2i / hs) for the pair (i, i + hs/2), as HF Llama lays it out."""
    if head_size % 2:
        raise ValueError(f"rotary embeddings need an even head size, got {head_size}")
    inv_freq = 1.0 / theta ** (np.arange(0, head_size, 2, dtype=np.float64) / head_size)  # (hs/2,)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]  # (T, hs/2)
    angles = np.concatenate([angles, angles], axis=-1)  # (T, hs)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def _rotate_half(x):
    """(x1, x2) -> (-x2, x1) over the last axis's halves."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope_forward(x, cos, sin):
    """y = x cos + rotate_half(x) sin. x (B, NH, T, hs); cos, sin (T, hs) from `rope_tables`."""
    return x * cos + _rotate_half(x) * sin, (cos, sin)


# y = x cos + R x sin with R(x1, x2) = (-x2, x1), a fixed linear map; R^T(g1, g2) = (g2, -g1):
#   dx = dy cos + R^T (dy sin)
def rope_backward(dout, cache):
    cos, sin = cache
    g = dout * sin
    half = g.shape[-1] // 2
    return (dout * cos + np.concatenate([g[..., half:], -g[..., :half]], axis=-1),)


# ----------------------------------------------------------------------------------------------- SwiGLU


def swiglu_forward(x, w_gate, w_up, w_down):
    """down(silu(x Wg^T) * (x Wu^T)) (LlamaMLP, no biases). x (..., C); w_gate, w_up (I, C); w_down (C, I)."""
    z, gate_cache = linear_forward(x, w_gate)  # (..., I)
    u, up_cache = linear_forward(x, w_up)  # (..., I)
    s = 1.0 / (1.0 + np.exp(-z))  # sigmoid
    h = z * s * u
    y, down_cache = linear_forward(h, w_down)
    return y, (z, s, u, gate_cache, up_cache, down_cache)


# h = silu(z) u,  silu(z) = z s(z),  silu'(z) = s (1 + z (1 - s))
#   du = dh silu(z),  dz = dh u silu'(z),  then back through the three linear maps (dx from both branches)
def swiglu_backward(dout, cache):
    z, s, u, gate_cache, up_cache, down_cache = cache
    dh, dw_down = linear_backward(dout, down_cache)[:2]
    du = dh * (z * s)
    dz = dh * u * (s * (1.0 + z * (1.0 - s)))
    dx_gate, dw_gate = linear_backward(dz, gate_cache)[:2]
    dx_up, dw_up = linear_backward(du, up_cache)[:2]
    return dx_gate + dx_up, dw_gate, dw_up, dw_down


# ----------------------------------------------------------------------------------- grouped-query attention


def _repeat_kv(x, n_kv_head, groups):
    """(B, T, NKV * hs) -> (B, T, NKV * groups * hs): each key/value head shared by `groups` query heads."""
    B, T, C = x.shape
    hs = C // n_kv_head
    return np.repeat(x.reshape(B, T, n_kv_head, 1, hs), groups, axis=3).reshape(B, T, n_kv_head * groups * hs)


def gqa_attention_forward(q, k, v, n_head, n_kv_head, causal=True, mask=None):
    """Attention of NH query heads over NKV key/value heads (NKV divides NH; 1: multi-query). q (B, T, NH hs);
    k, v (B, T, NKV hs) -> (B, T, NH hs). Query head h reads key/value head h // (NH / NKV), as HF's repeat_kv."""
    if n_head % n_kv_head:
        raise ValueError(f"n_kv_head {n_kv_head} must divide n_head {n_head}")
    groups = n_head // n_kv_head
    y, cache = attention_forward(q, _repeat_kv(k, n_kv_head, groups), _repeat_kv(v, n_kv_head, groups), n_head,
                                 mask, causal=causal)
    return y, (cache, n_kv_head, groups)


# k_rep[:, :, (j, g)] = k[:, :, j] for each of the `groups` copies  =>  dk[:, :, j] = sum over g of dk_rep
def gqa_attention_backward(dout, cache):
    attention_cache, n_kv_head, groups = cache
    dq, dk_rep, dv_rep = attention_backward(dout, attention_cache)

    def fold(d):  # (B, T, NKV * groups * hs) -> (B, T, NKV * hs)
        B, T, C = d.shape
        return d.reshape(B, T, n_kv_head, groups, C // (n_kv_head * groups)).sum(axis=3).reshape(B, T, -1)

    return dq, fold(dk_rep), fold(dv_rep)


# ----------------------------------------------------------------------------------- mixture of experts


def moe_forward(x, w_router, w_gate, w_up, w_down, top_k, normalize=True):
    """Mixtral's sparse mixture-of-experts feed-forward: a softmax router picks each token's top_k of E experts,
    each a SwiGLU FFN, and their outputs are summed weighted by the router's probabilities (renormalised over the
    top_k when `normalize`, as Mixtral; Switch's raw probability otherwise). x (..., C); w_router (E, C);
    w_gate, w_up (E, I, C); w_down (E, C, I). Only the tokens routed to an expert pass through it.

    The cache keeps the router's probabilities (N, E) and choices (N, k): `load_balancing_forward` takes them."""
    C, E = x.shape[-1], w_router.shape[0]
    if not 1 <= top_k <= E:
        raise ValueError(f"top_k must be in [1, {E}], got {top_k}")
    xf = x.reshape(-1, C)  # (N, C)
    logits, router_cache = linear_forward(xf, w_router)  # (N, E)
    probs, _ = softmax_forward(logits)
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]  # (N, k): the experts, most probable first
    p_top = np.take_along_axis(probs, top, axis=-1)  # (N, k)
    weights = p_top / p_top.sum(axis=-1, keepdims=True) if normalize else p_top
    y = np.zeros_like(xf)
    experts = []
    for e in range(E):
        rows, slot = np.nonzero(top == e)  # the tokens routed to e (each at most once) and at which of their k
        if rows.size == 0:
            experts.append(None)
            continue
        out, ffn_cache = swiglu_forward(xf[rows], w_gate[e], w_up[e], w_down[e])  # (n_e, C)
        y[rows] += out * weights[rows, slot, None]
        experts.append((rows, slot, out, ffn_cache))
    cache = {"shape": x.shape, "router": router_cache, "probs": probs, "top": top, "p_top": p_top,
             "weights": weights, "normalize": normalize, "experts": experts, "sizes": (w_gate.shape, w_down.shape)}
    return y.reshape(x.shape), cache


# y = sum_j w_j f_{e_j}(x) over the k chosen experts e_j, w = p_top / S (S = sum p_top) or p_top; p = softmax(x Wr^T).
#   df_e = dy w_j,  dw_j = dy . f_{e_j}(x)                       (the choice of experts is piecewise constant)
#   normalised: dp_j = (dw_j - sum_i dw_i w_i) / S;  else dp_j = dw_j;  scattered into dp (N, E) at e_j
#   dlogits = p (dp - sum_e dp_e p_e),  dWr = dlogits^T x,  dx = sum of the experts' dx + dlogits Wr
# dprobs: a gradient reaching the probabilities from elsewhere (the load-balancing loss), added to dp.
def moe_backward(dout, cache, dprobs=None):
    C = dout.shape[-1]
    dy = dout.reshape(-1, C)  # (N, C)
    (gate_shape, down_shape), weights = cache["sizes"], cache["weights"]
    dx = np.zeros_like(dy)
    dw_gate, dw_up, dw_down = np.zeros(gate_shape, dy.dtype), np.zeros(gate_shape, dy.dtype), np.zeros(down_shape,
                                                                                                         dy.dtype)
    dweights = np.zeros_like(weights)  # (N, k)
    for e, routed in enumerate(cache["experts"]):
        if routed is None:
            continue
        rows, slot, out, ffn_cache = routed
        dweights[rows, slot] = np.sum(dy[rows] * out, axis=-1)
        dx_e, dw_gate[e], dw_up[e], dw_down[e] = swiglu_backward(dy[rows] * weights[rows, slot, None], ffn_cache)
        dx[rows] += dx_e
    if cache["normalize"]:
        total = cache["p_top"].sum(axis=-1, keepdims=True)
        dp_top = (dweights - np.sum(dweights * weights, axis=-1, keepdims=True)) / total
    else:
        dp_top = dweights
    probs = cache["probs"]
    dp = np.zeros_like(probs) if dprobs is None else np.array(dprobs, dtype=probs.dtype)
    np.put_along_axis(dp, cache["top"], np.take_along_axis(dp, cache["top"], axis=-1) + dp_top, axis=-1)
    dlogits = probs * (dp - np.sum(dp * probs, axis=-1, keepdims=True))
    dx_router, dw_router, _ = linear_backward(dlogits, cache["router"])
    return (dx + dx_router).reshape(cache["shape"]), dw_router, dw_gate, dw_up, dw_down


def load_balancing_forward(probs, tops, n_experts):
    """The Switch Transformer's auxiliary loss over one or more MoE layers (as transformers' Mixtral computes
    it): E * sum_e f_e P_e, with f_e the share of (token, slot) choices that went to expert e and P_e the mean
    router probability of e, both over every layer's N tokens together. probs: list of (N, E); tops: list of
    (N, k). A uniform router gives k; one that always picks the same experts and puts all its probability on
    them gives E."""
    rows = sum(p.shape[0] for p in probs)
    f = sum(np.bincount(t.ravel(), minlength=n_experts) for t in tops) / rows  # (E,), sums to k
    P = sum(p.sum(axis=0) for p in probs) / rows  # (E,)
    return n_experts * np.sum(f * P), (f, rows, n_experts, [p.shape for p in probs])


# loss = E sum_e f_e P_e, P_e = (1/R) sum over every layer's rows n of p[n, e]; f counts choices (no gradient):
#   dloss/dp[n, e] = E f_e / R for every row of every layer
def load_balancing_backward(dloss, cache):
    f, rows, n_experts, shapes = cache
    row = dloss * n_experts * f / rows  # (E,)
    return [np.broadcast_to(row, shape).copy() for shape in shapes]


# ---------------------------------------------------------------------------------- Mamba (selective SSM)
# Shapes: D the mixer's inner width, N the state size, K the convolution's width.


def causal_conv1d_forward(x, weight, bias=None, prefix=None):
    """Depthwise causal convolution over time (Mamba's conv1d, PyTorch's Conv1d with groups=D and padding K-1
    cut to the first T outputs): y[:, t, d] = b[d] + sum_j w[d, j] x[:, t + j - K + 1, d], x = 0 before t = 0.
    x (B, T, D); weight (D, K); bias (D,) or None. prefix (B, K - 1, D): the inputs before x (sampling goes on
    from them; None: zeros). The cache's padded[:, -(K - 1):] is the next call's prefix."""
    B, T, D = x.shape
    K = weight.shape[1]
    before = np.zeros((B, K - 1, D), x.dtype) if prefix is None else prefix
    padded = np.concatenate([before, x], axis=1)  # (B, T + K - 1, D)
    y = sum(padded[:, j:j + T] * weight[:, j] for j in range(K))
    if bias is not None:
        y = y + bias
    return y, (padded, weight, bias is not None)


# y_t = b + sum_j w_j x_{t+j-K+1}:  dx_s = sum_j w_j dy_{s-j+K-1},  dw_j = sum_{b,t} dy_t x_{t+j-K+1},  db = sum dy
def causal_conv1d_backward(dout, cache):
    padded, weight, has_bias = cache
    B, T, D = dout.shape
    K = weight.shape[1]
    dpadded = np.zeros_like(padded)
    dw = np.empty_like(weight)
    for j in range(K):
        dpadded[:, j:j + T] += dout * weight[:, j]
        dw[:, j] = np.sum(dout * padded[:, j:j + T], axis=(0, 1))
    db = dout.sum(axis=(0, 1)) if has_bias else None
    return dpadded[:, K - 1:], dw, db


def softplus(x):
    """log(1 + e^x), without overflow: max(x, 0) + log1p(e^-|x|)."""
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def selective_scan_forward(u, dt, A, Bm, Cm, D, z, dt_bias, h0=None):
    """Mamba's selective scan (the paper's reference algorithm, as transformers' mamba_selective_scan runs it):
        delta = softplus(dt + dt_bias)                                   input-dependent step (B, T, D)
        h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,  h_{-1} = 0     (B, D, N) per step
        y_t = (C_t . h_t + D u_t) * silu(z_t)
    u, dt, z (B, T, D); A (D, N) (negative: -exp(A_log)); Bm, Cm (B, T, N); D, dt_bias (D,). -> y (B, T, D).
    h0 (B, D, N): the state to start from (sampling goes on from the last call's, the cache's h[:, -1]); the
    backward assumes None (zeros), as training does."""
    T = u.shape[1]
    x = dt + dt_bias
    delta = softplus(x)
    dA = delta[..., None] * A  # (B, T, D, N), exp'd in place
    np.exp(dA, out=dA)
    h = (delta * u)[..., None] * Bm[:, :, None, :]  # (B, T, D, N): delta_t B_t u_t, then the state in place
    step = np.empty_like(h[:, 0])
    if h0 is not None:
        h[:, 0] += np.multiply(dA[:, 0], h0, out=step)
    for t in range(1, T):
        h[:, t] += np.multiply(dA[:, t], h[:, t - 1], out=step)
    s = (h @ Cm[..., None])[..., 0]  # C_t . h_t (B, T, D)
    y0 = s + u * D
    sig = 1.0 / (1.0 + np.exp(-z))
    return y0 * z * sig, (u, x, delta, A, Bm, Cm, D, z, sig, dA, h, y0)


# With g = dy silu(z):  dz = dy y0 silu'(z), dD = sum g u, du = g D + ..., dC_t = sum_d g_t h_t,
# and backwards in time the state's gradient  dh_t = g_t C_t + exp(delta_{t+1} A) dh_{t+1}:
#   d exp(delta_t A) = dh_t h_{t-1}  ->  d(delta_t A) = that * exp(delta_t A)  ->  ddelta += sum_n . A, dA += . delta
#   d(delta_t B_t u_t) = dh_t  ->  ddelta += sum_n dh B u, dB_t = sum_d dh delta u, du += sum_n dh delta B
#   delta = softplus(x): dx = ddelta sigmoid(x);  ddt = dx, ddt_bias = sum dx
def selective_scan_backward(dout, cache):
    u, x, delta, A, Bm, Cm, D, z, sig, dA, h, y0 = cache
    T = u.shape[1]
    g = dout * z * sig
    dz = dout * y0 * sig * (1.0 + z * (1.0 - sig))
    dD = np.sum(g * u, axis=(0, 1))
    dCm = (g[..., None, :] @ h)[..., 0, :]  # (B, T, N)
    dh = g[..., None] * Cm[:, :, None, :]  # (B, T, D, N): g_t C_t, then the state's gradient in place
    step = np.empty_like(dh[:, 0])
    for t in reversed(range(T - 1)):
        dh[:, t] += np.multiply(dA[:, t + 1], dh[:, t + 1], out=step)  # from h_{t+1} = dA_{t+1} h_t + ...
    d_delta_A = dh * dA  # (B, T, D, N): dh_t h_{t-1} exp(delta_t A), with h_{-1} = 0
    d_delta_A[:, 1:] *= h[:, :-1]
    d_delta_A[:, 0] = 0.0
    dhB = (dh @ Bm[..., None])[..., 0]  # sum_n dh_t B_t (B, T, D)
    ddelta = np.einsum("btdn,dn->btd", d_delta_A, A) + dhB * u
    dAm = np.einsum("btdn,btd->dn", d_delta_A, delta)
    dBm = ((delta * u)[..., None, :] @ dh)[..., 0, :]
    du = g * D + dhB * delta
    dx = ddelta / (1.0 + np.exp(-x))
    return du, dx, dAm, dBm, dCm, dD, dz, dx.sum(axis=(0, 1))
