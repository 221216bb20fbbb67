"""Weights kept in a GEMM's own layout, made once and current while the weights are not written: the packed
copies that MKL's sgemm (`mkl.PackedWeight`) and the register tiles (`tiled_linear.TiledWeight`) compute from.

    packed = packs.get(Layout, *ws)     Layout(w) of the weights ws (out_i, in) stacked by rows, made on first use

A pack is current while every w stays read-only: get() makes them read-only, so an update in place fails loudly
unless the writer first makes w writable again (`nn.optim.writable`, as AdamW does), and then the next get()
packs anew. An entry goes when any of its weights is collected.
"""

import weakref

import numpy as np

_packs = {}  # (layout, ids of the weights) -> (weakrefs to them, their pack)


def get(layout, *ws):
    """layout(w) for the float32 weight arrays ws stacked by rows (one array: itself), kept while they stay
    read-only."""
    key = (layout, *map(id, ws))
    entry = _packs.get(key)
    if (entry is not None and all(ref() is w for ref, w in zip(entry[0], ws))
            and not any(w.flags.writeable for w in ws)):
        return entry[1]
    packed = layout(ws[0] if len(ws) == 1 else np.concatenate(ws))
    for w in ws:
        w.flags.writeable = False
    _packs[key] = (tuple(weakref.ref(w, lambda _, key=key, held=_packs: held.pop(key, None)) for w in ws), packed)
    return packed
