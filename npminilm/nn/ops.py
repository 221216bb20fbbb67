"""Transformer ops as forward/backward pairs over NumPy arrays.

Every `*_forward(...)` returns `(out, cache)`; every `*_backward(dout, cache)` returns the gradients of the
forward's array inputs, in the forward's argument order. Backward accumulates nothing hidden: a caller whose
tensor fans out sums the gradients itself. One implementation serves inference, training, encoder and decoder.

Dimensions: B batch, T time (tokens), C channels (hidden), NH heads, hs head size (C // NH), I FFN width, V vocab.
"""

import math

import numpy as np

# ----------------------------------------------------------------------------------------------- linear


def linear_forward(x, weight, bias=None):
    """y = x @ W.T + b, with W stored [out, in] as in HF checkpoints."""
    x2 = x.reshape(-1, x.shape[-1])  # (..., in) -> (N, in)
    out = x2 @ weight.T  # (N, in) @ (in, out) -> (N, out)
    if bias is not None:
        out += bias
    return out.reshape(*x.shape[:-1], weight.shape[0]), (x, weight, bias is not None)


# y = x W^T + b   =>   dx = dy W,   dW = dy^T x,   db = sum over rows of dy
def linear_backward(dout, cache):
    x, weight, has_bias = cache
    dout2 = dout.reshape(-1, dout.shape[-1])  # (N, out)
    dx = (dout2 @ weight).reshape(x.shape)
    dweight = dout2.T @ x.reshape(-1, x.shape[-1])
    dbias = dout2.sum(axis=0) if has_bias else None
    return dx, dweight, dbias


# -------------------------------------------------------------------------------------------- embedding


def embedding_forward(ids, weight):
    """Row lookup: ids (...) int -> (..., C)."""
    return weight[ids], (ids, weight.shape)


# out[..., :] = W[ids[...], :]   =>   dW[v] = sum of dout over every position whose id is v (scatter-add).
# The rows are sorted by id and each run of equal ids summed in one reduceat (np.add.at is several times slower).
def embedding_backward(dout, cache):
    ids, weight_shape = cache
    dweight = np.zeros(weight_shape, dtype=dout.dtype)
    flat_ids = np.asarray(ids).reshape(-1)
    if flat_ids.size:
        order = np.argsort(flat_ids, kind="stable")
        sorted_ids = flat_ids[order]
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        rows = dout.reshape(-1, weight_shape[1])[order]  # (N, C), grouped by id
        dweight[sorted_ids[starts]] = np.add.reduceat(rows, starts, axis=0)
    return (dweight,)


# -------------------------------------------------------------------------------------------- layernorm


def layernorm_forward(x, weight, bias, eps):
    """LayerNorm over the last axis. The cache keeps the input (what `npminilm trace` shows as the residual sum)
    and the normalised xhat with rstd (what backward needs)."""
    xhat = x - x.mean(axis=-1, keepdims=True)  # (..., C), normalised in place below
    var = np.mean(np.square(xhat), axis=-1, keepdims=True)  # (..., 1)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat *= rstd
    out = xhat * weight
    out += bias
    return out, (x, xhat, rstd, weight)


# xhat = (x - mean) * rstd,  y = xhat * w + b.  With g = dy * w (per row of length C):
#   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dw = sum dy * xhat,  db = sum dy
def layernorm_backward(dout, cache):
    _, xhat, rstd, weight = cache
    g = dout * weight
    dx = g - g.mean(axis=-1, keepdims=True)
    dx -= xhat * np.mean(g * xhat, axis=-1, keepdims=True)
    dx *= rstd
    axes = tuple(range(dout.ndim - 1))
    return dx, (dout * xhat).sum(axis=axes), dout.sum(axis=axes)


# ------------------------------------------------------------------------------------------------- gelu

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_erf_float64 = np.frompyfunc(math.erf, 1, 1)


_ERF_P = 0.3275911
_ERF_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)  # a5 .. a1, for Horner
_BLOCK = 65536  # float32 elements per pass: the block and its scratch rows (256 KiB each) stay in L2


def erf(x):
    """erf for float32 (Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7 exactly, about 5e-7 evaluated in float32)
    and float64 (libm's erf, exact). numpy has no erf of its own."""
    if x.dtype == np.float64:
        return _erf_float64(x).astype(np.float64)
    x1 = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(x1.shape, x.dtype)
    a, t = _scratch(x1, 2)
    for s in _block_slices(x1.size):
        n = s.stop - s.start
        _erf_block(x1[s], out[s], a[:n], t[:n])
    return out.reshape(x.shape)


def _block_slices(n):
    """Cache-sized pieces of a flat array: a dozen passes over a block that stays in L2 cost a fraction of a
    dozen passes over a tensor that streams from memory."""
    size = max(1, min(_BLOCK, n))
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _scratch(x, count):
    return [np.empty(max(1, min(_BLOCK, x.size)), x.dtype) for _ in range(count)]


def _erf_block(x, out, a, t):
    """A&S 7.1.26 in place: erf|x| = 1 - t (a1 + t (a2 + ... + t a5)) exp(-x^2), t = 1 / (1 + p|x|); out may not
    alias x (its sign is read last)."""
    dt = x.dtype.type
    np.abs(x, out=a)
    np.multiply(a, dt(_ERF_P), out=t)
    t += dt(1.0)
    np.reciprocal(t, out=t)
    np.multiply(a, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)  # a = exp(-x^2)
    np.multiply(t, dt(_ERF_A[0]), out=out)
    for c in _ERF_A[1:]:
        out += dt(c)
        out *= t
    out *= a
    np.subtract(dt(1.0), out, out=out)
    np.copysign(out, x, out=out)


def gelu_forward(x, save_derivative=False):
    """Exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (HF's "gelu", not the tanh "gelu_new").

    The cache is (x, gelu'(x) or None). save_derivative (training) computes gelu'(x) in the same pass from the
    tail and exp(-x^2 / 2) the forward already has, so backward is one multiply instead of a second erf;
    otherwise backward recomputes it from x.
    """
    if x.dtype == np.float64:
        cdf = 0.5 * (1.0 + erf(x * _SQRT1_2))
        derivative = cdf + x * np.exp(-0.5 * x * x) * _INV_SQRT_2PI if save_derivative else None
        return x * cdf, (x, derivative)
    dt = x.dtype.type
    x1 = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(x1.shape, x.dtype)
    derivative = np.empty(x1.shape, x.dtype) if save_derivative else None
    a, e, t = _scratch(x1, 3)
    positive = np.empty(a.shape, bool) if save_derivative else None
    for s in _block_slices(x1.size):
        n = s.stop - s.start
        xs, o, a_, e_, t_ = x1[s], out[s], a[:n], e[:n], t[:n]
        np.abs(xs, out=a_)
        _gaussian_tail_block(a_, o, e_, t_)  # o = Phi(-|x|), e = exp(-x^2 / 2)
        if save_derivative:  # gelu'(x) = Phi(x) + x phi(x),  Phi(x) = Phi(-|x|) + [x >= 0] (1 - 2 Phi(-|x|))
            d = derivative[s]
            np.multiply(e_, xs, out=d)
            d *= dt(_INV_SQRT_2PI)
            np.multiply(o, dt(-2.0), out=t_)
            t_ += dt(1.0)
            t_ *= np.greater_equal(xs, dt(0.0), out=positive[:n])
            t_ += o
            d += t_
        o *= a_  # |x| Phi(-|x|)
        a_ += xs
        a_ *= dt(0.5)  # relu(x) = (x + |x|) / 2, exact; np.maximum against a scalar runs about 4x slower here
        np.subtract(a_, o, out=o)  # x Phi(x) = relu(x) - |x| Phi(-|x|)
    return out.reshape(x.shape), (x, None if derivative is None else derivative.reshape(x.shape))


# The standard normal's tail Phi(-a) = erfc(a / sqrt 2) / 2 for a >= 0, by A&S 7.1.26 at z = a / sqrt 2:
#   erfc(z) = t (a1 + t (a2 + ... + t a5)) exp(-z^2),  t = 1 / (1 + p z)   (|error| <= 1.5e-7)
# with the 1/2 folded into the coefficients and 1/sqrt 2 into p. Written this way GELU needs no 1 + erf(x)
# (which cancels for negative x) and no sign fix-up: x Phi(x) = relu(x) - |x| Phi(-|x|).
def _gaussian_tail_block(a, out, e, t):
    """out = Phi(-a) and e = exp(-a^2 / 2), in place, for a block a >= 0; t is scratch."""
    dt = a.dtype.type
    np.multiply(a, dt(_ERF_P * _SQRT1_2), out=t)
    t += dt(1.0)
    np.reciprocal(t, out=t)
    np.multiply(a, a, out=e)
    e *= dt(-0.5)
    np.exp(e, out=e)
    np.multiply(t, dt(0.5 * _ERF_A[0]), out=out)
    for c in _ERF_A[1:]:
        out += dt(0.5 * c)
        out *= t
    out *= e


# d/dx [x Phi(x)] = Phi(x) + x phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
def gelu_backward(dout, cache):
    x, derivative = cache
    if derivative is None:
        cdf = 0.5 * (1.0 + erf(x * _SQRT1_2))
        derivative = cdf + x * (np.exp(-0.5 * x * x) * _INV_SQRT_2PI)
    return (dout * derivative,)


# ---------------------------------------------------------------------------------------------- softmax


def softmax_forward(x, axis=-1, out=None):
    """Numerically stable softmax; the cache is the output itself. `out` may be x, to overwrite it in place."""
    out = np.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out, (out, axis)


# y = softmax(x)   =>   dx = y * (dy - sum(dy * y))
def softmax_backward(dout, cache):
    out, axis = cache
    dx = dout * out
    np.subtract(dout, dx.sum(axis=axis, keepdims=True), out=dx)
    dx *= out
    return (dx,)


# -------------------------------------------------------------------------------------------- attention


ATTENTION_CHUNK = 1 << 17  # score entries per chunk (512 KiB in float32): a chunk's softmax passes stay in L2
_KEY_BLOCK = 96  # keys per P V product: OpenBLAS's sgemm runs (T, T) @ (T, hs) at a third of its speed for some T
#                  (10 vs 30 GFLOP/s at T = 256, hs = 32, Haswell kernels); blocks of 96 keys run near 28 at every T


def attention_forward(q, k, v, n_head, mask=None, causal=False, scale=None, keep_cache=True, dropout=None):
    """Scaled dot-product multi-head attention. q, k, v (B, T, C) -> (B, T, C).

    mask (B, T): 1 for real tokens, 0 for padding keys. Disallowed scores become the dtype's lowest finite
    value (as with HF's additive mask), so a row never becomes all -inf and never NaN. `scale` multiplies the
    scores (1 / sqrt(hs) when None; 1.0 when the caller folded it into q). The (B, NH, T, T) scores are worked
    on a few heads at a time (scores, scale, mask, softmax, P V), so each chunk's passes run in cache. The cache
    names the heads (q, k, v, each (B, NH, T, hs)), the probabilities (B, NH, T, T), the scale and the
    allowed-key mask. keep_cache=False (inference) returns (y, None): the chunks then reuse one scratch buffer
    and the probabilities are never normalised; the normalisation is applied to P V's (T, hs) rows instead.
    dropout=(p, rng) (training, as HF BERT) drops probabilities before P V; the cache then also holds the
    scaled keep-mask ("drop", (B, NH, T, T)).
    """
    B, T, C = q.shape
    hs = C // n_head
    qh = q.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)  # (B, T, C) -> (B, NH, T, hs)
    kh = k.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)
    vh = v.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)
    scale = 1.0 / math.sqrt(hs) if scale is None else scale
    allowed = _allowed(mask, causal, B, T)
    # HF's additive mask: the lowest finite value added to a score leaves exactly that value (|score| << 1e31);
    # an add broadcasts at full speed where a masked copy (np.copyto(..., where=)) is tens of times slower
    penalty = None if allowed is None else np.where(allowed, 0.0, np.finfo(q.dtype).min).astype(q.dtype)
    # inference without a mask: the (text, head) pairs whose scores cannot leave [-EXP_FREE, EXP_FREE] skip the max
    unshifted = not keep_cache and penalty is None and dropout is None and T >= EXP_FREE_MIN_LENGTH
    free = _exp_free_heads(qh, kh, vh, scale) if unshifted else None
    rows, heads = attention_chunk(B, n_head, T)
    yh = np.empty((B, n_head, T, hs), q.dtype)
    probs = np.empty((B, n_head, T, T), q.dtype) if keep_cache else np.empty((min(rows, B), heads, T, T), q.dtype)
    for b in range(0, B, rows):
        for h in range(0, n_head, heads):
            at = (slice(b, b + rows), slice(h, h + heads))
            scores = probs[at] if keep_cache else probs[:min(rows, B - b), :min(heads, n_head - h)]
            np.matmul(qh[at], kh[at].transpose(0, 1, 3, 2), out=scores)  # (.., T, hs) @ (.., hs, T) -> (.., T, T)
            if scale != 1.0:
                scores *= np.asarray(scale, q.dtype)
            if penalty is not None:
                scores += penalty[b:b + rows] if penalty.shape[0] > 1 else penalty
            if keep_cache:
                softmax_forward(scores, out=scores)
                probs_times_values(scores, vh[at], yh[at])
            else:  # y = (exp(S - shift) V) / rowsum: the (T, hs) result is scaled instead of the (T, T) scores
                _shift_unbounded(scores, None if free is None else free[at])
                np.exp(scores, out=scores)
                inv_sum = np.reciprocal(scores.sum(axis=-1, keepdims=True))
                probs_times_values(scores, vh[at], yh[at])
                yh[at] *= inv_sum
    drop = None
    if dropout is not None and dropout[0] > 0.0:  # y = dropout(P) V, recomputed over the whole P
        dropped, drop = dropout_forward(probs, *dropout)
        yh = dropped @ vh  # (B, NH, T, T) @ (B, NH, T, hs)
    y = yh.transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, NH, T, hs) -> (B, T, C)
    if not keep_cache:
        return y, None
    return y, {"q": qh, "k": kh, "v": vh, "probs": probs, "scale": scale, "allowed": allowed, "drop": drop}


# softmax(s) = exp(s - m) / sum exp(s - m) for any shift m: the row max m keeps exp in range, but costs two
# passes over the (T, T) scores (the max, the subtraction), a third of the softmax. Where Cauchy-Schwarz bounds
# every score, |q_i . k_j| * scale <= max_i |q_i| max_j |k_j| * scale = b <= EXP_FREE, m = 0 is as good: exp(s)
# then lies in [e^-b, e^b] (normal float32, far from overflow, and P V's sums at most T e^b max|v|, checked too).
# The bound is per text and head, so whether a text's scores are shifted never depends on its batch.
EXP_FREE = 40.0
EXP_FREE_MIN_LENGTH = 64  # shorter texts: the bound costs more than the two passes it saves (STSb: -2 %)


def _exp_free_heads(qh, kh, vh, scale):
    """(B, NH) bool: True where exp of the unshifted scores stays in range for this text and head."""
    def max_norm(x):  # (B, NH, T, hs) -> (B, NH): the largest row norm
        return np.sqrt(np.einsum("bhtd,bhtd->bht", x, x).max(axis=-1))

    T = qh.shape[2]
    bound = max_norm(qh) * max_norm(kh) * abs(scale)
    v_max = np.abs(vh).max(axis=(2, 3))
    with np.errstate(divide="ignore"):
        return (bound <= EXP_FREE) & (bound + np.log(T * v_max) <= 80.0)  # e^80 < float32 max / 1e3


def _shift_unbounded(scores, free):
    """scores (.., NH', T, T) minus its row max, in place, for the heads not marked free (.., NH')."""
    if free is None:
        np.subtract(scores, scores.max(axis=-1, keepdims=True), out=scores)
        return
    for h in np.flatnonzero(~free.all(axis=0)):  # the heads where some text needs its max
        head = scores[:, h]  # (rows, T, T), a view
        m = head.max(axis=-1, keepdims=True)
        m *= ~free[:, h, None, None]  # 0 for the texts whose scores are bounded
        head -= m


def attention_chunk(B, n_head, T):
    """(texts, heads) of a chunk of the (B, NH, T, T) scores of about ATTENTION_CHUNK entries: a few heads of one
    text for long texts, all the heads of several for short ones."""
    heads = max(1, min(n_head, ATTENTION_CHUNK // (T * T)))
    return (max(1, ATTENTION_CHUNK // (n_head * T * T)) if heads == n_head else 1), heads


def probs_times_values(p, v, out):
    """out = p @ v over the last two axes, (.., T, T) @ (.., T, hs), summed over keys in blocks of _KEY_BLOCK."""
    T = p.shape[-1]
    np.matmul(p[..., :_KEY_BLOCK], v[..., :_KEY_BLOCK, :], out=out)
    for s in range(_KEY_BLOCK, T, _KEY_BLOCK):
        out += p[..., s:s + _KEY_BLOCK] @ v[..., s:s + _KEY_BLOCK, :]


def _allowed(mask, causal, B, T):
    """Boolean (B or 1, 1, T, T) of the key positions each query may attend to, or None for all."""
    allowed = None
    if mask is not None:
        keys = np.asarray(mask) != 0
        if not keys.all():
            allowed = keys[:, None, None, :]  # (B, 1, 1, T)
    if causal:
        tri = np.tril(np.ones((T, T), dtype=bool))[None, None]  # (1, 1, T, T)
        allowed = tri if allowed is None else allowed & tri
    return allowed


# S = Q K^T * s,  P = softmax(S) (masked entries are constants),  Y = D(P) V  (D: dropout's scaled keep-mask M)
#   dV = D(P)^T dY,   dP = (dY V^T) * M,   dS = P * (dP - rowsum(dP * P)),   dQ = dS K s,   dK = dS^T Q s
# A masked entry of S is a constant, so its dS is 0. P is 0 there unless the whole row is masked (uniform P),
# which is why dS is masked explicitly rather than trusted to vanish.
def attention_backward(dout, cache):
    qh, kh, vh, probs = cache["q"], cache["k"], cache["v"], cache["probs"]
    scale, allowed = cache["scale"], cache["allowed"]
    B, NH, T, hs = qh.shape
    drop = cache.get("drop")
    dyh = dout.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)  # (B, T, C) -> (B, NH, T, hs)
    dvh = (probs if drop is None else probs * drop).transpose(0, 1, 3, 2) @ dyh
    dprobs = dyh @ vh.transpose(0, 1, 3, 2)
    if drop is not None:
        dprobs *= drop
    (dscores,) = softmax_backward(dprobs, (probs, -1))
    if allowed is not None:
        dscores *= allowed
    dscores *= np.asarray(scale, dscores.dtype)
    dqh = dscores @ kh
    dkh = dscores.transpose(0, 1, 3, 2) @ qh

    def merge(t):  # (B, NH, T, hs) -> (B, T, C)
        return t.transpose(0, 2, 1, 3).reshape(B, T, NH * hs)

    return merge(dqh), merge(dkh), merge(dvh)


# ---------------------------------------------------------------------------------------------- pooling


def mean_pool_forward(h, mask, sqrt_len=False):
    """Masked mean over T (sentence-transformers' "mean"), or sum / sqrt(len) ("mean_sqrt_len_tokens").

    h (B, T, C), mask (B, T) -> (B, C). Counts are clamped at 1e-9 as sentence-transformers does.
    """
    m = np.asarray(mask, dtype=h.dtype)[:, :, None]  # (B, T, 1)
    count = np.maximum(m.sum(axis=1), 1e-9)  # (B, 1)
    denom = np.sqrt(count) if sqrt_len else count
    return (h * m).sum(axis=1) / denom, (m, denom)


# y = sum_t m_t h_t / d   =>   dh_t = m_t * dy / d
def mean_pool_backward(dout, cache):
    m, denom = cache
    return ((dout / denom)[:, None, :] * m,)


def cls_pool_forward(h, mask):
    """The first real token of each row (position 0 for right padding). h (B, T, C) -> (B, C)."""
    first = np.argmax(np.asarray(mask) != 0, axis=1)  # (B,)
    return h[np.arange(h.shape[0]), first], (first, h.shape)


def cls_pool_backward(dout, cache):
    first, shape = cache
    dh = np.zeros(shape, dtype=dout.dtype)
    dh[np.arange(shape[0]), first] = dout
    return (dh,)


def max_pool_forward(h, mask):
    """Masked max over T. h (B, T, C), mask (B, T) -> (B, C)."""
    masked = np.where(np.asarray(mask)[:, :, None] != 0, h, -np.inf)
    idx = masked.argmax(axis=1)  # (B, C)
    return np.take_along_axis(masked, idx[:, None, :], axis=1)[:, 0, :], (idx, h.shape)


# the gradient flows only to the arg-max token of each channel
def max_pool_backward(dout, cache):
    idx, shape = cache
    dh = np.zeros(shape, dtype=dout.dtype)
    np.put_along_axis(dh, idx[:, None, :], dout[:, None, :], axis=1)
    return (dh,)


# ---------------------------------------------------------------------------------------- normalisation


def l2_normalize_forward(x, eps=1e-12):
    """x / max(||x||, eps) over the last axis (torch.nn.functional.normalize)."""
    norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    denom = np.maximum(norm, eps)
    out = x / denom
    return out, (out, denom, norm >= eps)


# y = x / |x|   =>   dx = (dy - y (y . dy)) / |x|     (below eps the denominator is constant: dx = dy / eps)
def l2_normalize_backward(dout, cache):
    out, denom, above = cache
    proj = np.where(above, np.sum(out * dout, axis=-1, keepdims=True), 0.0)
    return ((dout - out * proj) / denom,)


# -------------------------------------------------------------------------------------------------- tanh


def tanh_forward(x):
    out = np.tanh(x)
    return out, (out,)


# d tanh(x) = 1 - tanh(x)^2
def tanh_backward(dout, cache):
    (out,) = cache
    return (dout * (1.0 - out * out),)


# ------------------------------------------------------------------------------------------ residual add


def add_forward(a, b):
    """Residual add, a + b (same shape). No cache: the gradient passes through unchanged."""
    return a + b, None


# y = a + b   =>   da = dy,  db = dy
def add_backward(dout, cache):
    return dout, dout


# ---------------------------------------------------------------------------------------------- dropout


def dropout_forward(x, p, rng):
    """Inverted dropout: zero each entry with probability p, scale the rest by 1 / (1 - p).

    rng None or p == 0 is the identity (evaluation). The cache is the scaled keep-mask, in x's dtype.
    """
    if rng is None or p == 0.0:
        return x, None
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    mask = (rng.random(x.shape, dtype=np.float32) >= p).astype(x.dtype) * np.asarray(1.0 / (1.0 - p), x.dtype)
    return x * mask, mask


# y = x * m / (1 - p)   =>   dx = dy * m / (1 - p)
def dropout_backward(dout, cache):
    return (dout if cache is None else dout * cache,)
