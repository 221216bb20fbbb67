"""The Triton backend of SentenceEncoder: BERT on packed (unpadded) batches, every step a kernel from
`npminilm.kernels`."""

import os

import numpy as np

from ..encoder.bert import check_inputs
from ..encoder.sentence_encoder import SentenceEncoder
from ..encoder.weights import load_bert_params
from ..errors import InvalidArgumentError
from ..io.hub import DEFAULT_MODEL
from ..runtime.progress import track

GPU_DTYPES = ("float16", "bfloat16", "float32")


def _backend(device):
    """torch, the kernel modules and the torch.device, or a typed error saying what is missing."""
    try:
        import torch
    except ImportError:
        raise InvalidArgumentError("backend='triton' needs torch and triton: pip install 'npminilm[gpu]'") from None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidArgumentError(f"device must be 'cuda', 'cuda:N' or (interpreter) 'cpu', got {device!r}") from None
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise InvalidArgumentError("device='cpu' runs the kernels in Triton's CPU interpreter, for tests only: "
                                       "set TRITON_INTERPRET=1 before triton is imported")
    elif device.type != "cuda":
        raise InvalidArgumentError(f"backend='triton' runs on 'cuda' (or 'cpu' under TRITON_INTERPRET=1), got {device}")
    elif not torch.cuda.is_available():
        raise InvalidArgumentError("backend='triton' needs a CUDA GPU and none is available "
                                   "(torch.cuda.is_available() is False); use backend='numpy'")
    try:
        import triton  # noqa: F401
    except ImportError:
        raise InvalidArgumentError("backend='triton' needs triton: pip install 'npminilm[gpu]'") from None
    from ..kernels import (
        attention,
        embeddings_layernorm,
        ffn_gelu,
        linear_residual_layernorm,
        pool_normalize,
    )
    kernels = {"attention": attention.attention, "embeddings_layernorm": embeddings_layernorm.embeddings_layernorm,
               "linear_gelu": ffn_gelu.linear_gelu, "pool_normalize": pool_normalize.pool_normalize,
               "linear_residual_layernorm": linear_residual_layernorm.linear_residual_layernorm}
    return torch, kernels, device


class TritonSentenceEncoder(SentenceEncoder):
    """SentenceEncoder on a GPU: `SentenceEncoder(name, backend="triton", device="cuda", dtype="float16")`.

    Tokenises on the CPU, packs each batch without padding (cu_seqlens), runs the BERT forward and pooling
    with the Triton kernels only (torch holds the tensors), and returns NumPy float32 arrays (or torch tensors
    with `convert_to_tensor=True`). One batch at a time is on the GPU. `dtype` is the weights' and
    activations' dtype; every kernel accumulates in float32 and embeddings come out in float32.
    """

    def __init__(self, name_or_path=DEFAULT_MODEL, dtype="float32", backend="triton", device="cuda"):
        if dtype not in GPU_DTYPES:
            raise InvalidArgumentError(f"backend='triton' dtype must be one of {GPU_DTYPES}, got {dtype!r}")
        torch, self._kernels, self.device = _backend("cuda" if device is None else device)
        self._torch = torch
        self.dtype = getattr(torch, dtype)
        model = self._read_folder(name_or_path)
        # moved to the device once, in `dtype`; Q, K, V weights fused into one (3C, C) GEMM per layer
        self.params = {k: torch.from_numpy(np.array(v)).to(self.device, self.dtype).contiguous()
                       for k, v in load_bert_params(model.weights_path, model.config, np.float32).items()}
        self._qkv = []
        for i in range(self.bert_config.num_hidden_layers):
            p = f"encoder.layer.{i}.attention.self."
            self._qkv.append((torch.cat([self.params[p + n + ".weight"] for n in ("query", "key", "value")]),
                              torch.cat([self.params[p + n + ".bias"] for n in ("query", "key", "value")])))

    def __repr__(self):
        return (f"SentenceEncoder({str(self.folder)!r}, backend='triton', device={str(self.device)!r}, "
                f"dtype={str(self.dtype).removeprefix('torch.')!r}, pooling={self.pooling_modes}, "
                f"normalize={self.normalize}, max_seq_length={self.max_seq_length})")

    def num_parameters(self):
        return int(sum(p.numel() for p in self.params.values()))

    # ------------------------------------------------------------------------------------------- forward

    def _hidden(self, ids, positions, types, attn, padded_shape=None, hidden_states=None):
        """The encoder on N token rows: ids, positions, types (N,) int32 on the device -> (N, C).

        `attn` is the attention layout (cu_seqlens and max_seqlen, or key_padding_mask); with `padded_shape`
        (B, T) the rows are B padded sequences of T.
        """
        k, p, cfg = self._kernels, self.params, self.bert_config
        C, eps = cfg.hidden_size, cfg.layer_norm_eps
        x = k["embeddings_layernorm"](ids, positions, types, p["embeddings.word_embeddings.weight"],
                                      p["embeddings.position_embeddings.weight"],
                                      p["embeddings.token_type_embeddings.weight"],
                                      p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)  # (N, C)
        if hidden_states is not None:
            hidden_states.append(x)
        for i, (w_qkv, b_qkv) in enumerate(self._qkv):
            L = f"encoder.layer.{i}."
            qkv = k["linear_gelu"](x, w_qkv, b_qkv, gelu=False)  # (N, C) -> (N, 3C)
            q, kk, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
            if padded_shape is not None:
                q, kk, v = (t.view(*padded_shape, C) for t in (q, kk, v))  # (N, C) -> (B, T, C), strided
            a = k["attention"](q, kk, v, cfg.num_attention_heads, **attn).view(-1, C)
            h = k["linear_residual_layernorm"](a, p[L + "attention.output.dense.weight"],
                                               p[L + "attention.output.dense.bias"], x,
                                               p[L + "attention.output.LayerNorm.weight"],
                                               p[L + "attention.output.LayerNorm.bias"], eps)  # (N, C)
            f = k["linear_gelu"](h, p[L + "intermediate.dense.weight"], p[L + "intermediate.dense.bias"])  # (N, I)
            x = k["linear_residual_layernorm"](f, p[L + "output.dense.weight"], p[L + "output.dense.bias"], h,
                                               p[L + "output.LayerNorm.weight"], p[L + "output.LayerNorm.bias"],
                                               eps)  # (N, I) -> (N, C)
            if hidden_states is not None:
                hidden_states.append(x)
        return x

    def _int_tensor(self, a):
        return self._torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32)).to(self.device)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False):
        """BertModel's forward on a padded batch (key padding mask, positions 0..T-1 in every row):
        {"last_hidden_state": (B, T, C) float32 NumPy, ["hidden_states"]}. The pooler is not run here."""
        input_ids, attention_mask, token_type_ids = check_inputs(self.bert_config, input_ids, attention_mask,
                                                                 token_type_ids)
        B, T = input_ids.shape
        hs = [] if output_hidden_states else None
        x = self._hidden(self._int_tensor(input_ids.reshape(-1)), self._int_tensor(np.tile(np.arange(T), B)),
                         self._int_tensor(token_type_ids.reshape(-1)),
                         {"key_padding_mask": self._int_tensor(attention_mask)}, padded_shape=(B, T),
                         hidden_states=hs)
        out = {"last_hidden_state": self._numpy(x).reshape(B, T, -1)}
        if output_hidden_states:
            out["hidden_states"] = [self._numpy(h).reshape(B, T, -1) for h in hs]
        return out

    def _numpy(self, t):
        return t.float().cpu().numpy()

    # -------------------------------------------------------------------------------------------- encode

    def encode(self, sentences, batch_size=32, normalize_embeddings=None, show_progress_bar=None,
               output_value="sentence_embedding", convert_to_numpy=True, convert_to_tensor=False):
        """As SentenceEncoder.encode. Embeddings are float32; with `convert_to_tensor` the sentence embeddings
        come back as one tensor on the device and token embeddings as CPU tensors (kept off the GPU, so memory
        stays bounded by one batch)."""
        single, texts, normalize = self._encode_args(sentences, batch_size, normalize_embeddings, output_value)
        as_tensor = bool(convert_to_tensor)

        order = np.argsort([-len(t) for t in texts], kind="stable")
        results = [None] * len(texts)
        for start in track(range(0, len(texts), batch_size), desc="Batches", show_progress_bar=show_progress_bar):
            idx = order[start:start + batch_size]
            batch = self._encode_packed([texts[i] for i in idx], normalize, output_value, as_tensor)
            for i, item in zip(idx, batch):
                results[i] = item

        if output_value == "sentence_embedding":
            if as_tensor:
                torch = self._torch
                results = (torch.stack(results) if results else torch.zeros((0, self.dim))).to(self.device)
            elif convert_to_numpy:
                results = np.stack(results) if results else np.zeros((0, self.dim), np.float32)
        if single:
            return results[0]
        return results

    def _encode_packed(self, texts, normalize, output_value, as_tensor):
        features = self.tokenize(texts)
        mask = features["attention_mask"].astype(bool)  # right padding: the real tokens come first
        lengths = mask.sum(axis=1)
        cu = np.concatenate([[0], np.cumsum(lengths)])
        ids = features["input_ids"][mask]  # (N,) packed, no padding
        positions = np.concatenate([np.arange(n) for n in lengths])
        types = features["token_type_ids"][mask]
        cu_t = self._int_tensor(cu)
        h = self._hidden(self._int_tensor(ids), self._int_tensor(positions), self._int_tensor(types),
                         {"cu_seqlens": cu_t, "max_seqlen": int(lengths.max())})  # (N, C)
        emb = self._kernels["pool_normalize"](h, cu_t, self.pooling_modes, normalize).cpu()  # (B, dim) fp32
        if not as_tensor:
            emb = emb.numpy()
        if output_value == "sentence_embedding":
            return list(emb)
        h = h.float().cpu()
        tokens = [h[cu[b]:cu[b + 1]] if as_tensor else h[cu[b]:cu[b + 1]].numpy() for b in range(len(texts))]
        if output_value == "token_embeddings":
            return tokens
        return [{"input_ids": ids[cu[b]:cu[b + 1]], "token_embeddings": tokens[b], "sentence_embedding": emb[b]}
                for b in range(len(texts))]

    def forward_train(self, features, normalize_embeddings=None):
        raise InvalidArgumentError("training (forward_train/backward) runs on backend='numpy' only")

    def backward(self, d_emb, cache):
        raise InvalidArgumentError("training (forward_train/backward) runs on backend='numpy' only")
