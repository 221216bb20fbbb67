"""Training machinery over parameter dicts: AdamW, gradient-norm clipping, and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import numpy as np


class AdamW:
    """AdamW (Loshchilov & Hutter) as torch.optim.AdamW computes it, updating the parameter arrays in place.

    With g the gradient and t the step (from 1):
        p <- p * (1 - lr * wd)                       decoupled weight decay, only where decay(name) is true
        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
        p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)      bias-corrected step
    """

    def __init__(self, params, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, decay=None):
        self.weight_decay, self.betas, self.eps = weight_decay, tuple(betas), eps
        decay = decay or (lambda name: params[name].ndim >= 2)
        self.decayed = {k: bool(decay(k)) for k in params}
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params, grads, lr):
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        for k, p in params.items():
            writable(p)
            g = grads[k]
            m, v = self.m[k], self.v[k]
            if self.decayed[k] and self.weight_decay:
                p *= p.dtype.type(1.0 - lr * self.weight_decay)
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            denom = np.sqrt(v) / p.dtype.type(math.sqrt(bc2)) + p.dtype.type(self.eps)
            p -= p.dtype.type(lr / bc1) * m / denom

    def state_tensors(self) -> dict[str, np.ndarray]:
        """The moments as a flat dict of arrays (for a safetensors file); the step count goes in `self.t`."""
        return {**{f"m.{k}": v for k, v in self.m.items()}, **{f"v.{k}": v for k, v in self.v.items()}}

    def load_state_tensors(self, tensors, t):
        for k in self.m:
            self.m[k][...] = tensors[f"m.{k}"]
            self.v[k][...] = tensors[f"v.{k}"]
        self.t = int(t)


def writable(p):
    """p, made writable before it is updated in place. A weight the encoder packed for MKL (`cpu.mkl`) is
    read-only while its packed copy is current; making it writable retires that copy."""
    if not p.flags.writeable:
        p.flags.writeable = True
    return p


def clip_grad_norm(grads, max_norm) -> float:
    """Scale every gradient in place so their joint L2 norm is at most max_norm (torch's clip_grad_norm_,
    coefficient max_norm / (norm + 1e-6) capped at 1). Returns the norm before clipping."""
    total = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
    if max_norm and max_norm > 0:
        coef = max_norm / (total + 1e-6)
        if coef < 1.0:
            for g in grads.values():
                g *= g.dtype.type(coef)
    return total


def lr_at(step, lr, warmup_iters, max_iters, min_lr):
    """Linear warm-up over warmup_iters steps to lr, then a cosine decay to min_lr at max_iters (min_lr after).

    warm-up: lr * (step + 1) / warmup_iters;   decay: min_lr + (lr - min_lr) * (1 + cos(pi * r)) / 2,
    r = (step - warmup_iters) / (max_iters - warmup_iters).
    """
    if step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    if step >= max_iters:
        return min_lr
    r = (step - warmup_iters) / max(1, max_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - min_lr)
