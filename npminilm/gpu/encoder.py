"""The Triton backend of SentenceEncoder: BERT on packed (unpadded) batches, every step a kernel from
`npminilm.kernels`."""

import os

import numpy as np

from ..encoder.bert import check_inputs
from ..encoder.sentence_encoder import SentenceEncoder
from ..encoder.weights import load_bert_params
from ..errors import InvalidArgumentError
from ..io.hub import DEFAULT_MODEL
from ..runtime.parallel import prefetched
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

    Tokenises on the CPU (on a worker thread, ahead of the GPU, with `overlap`), packs each batch of up to
    `max_batch_tokens` tokens without padding (cu_seqlens), runs the BERT forward and pooling with the Triton
    kernels only (torch holds the tensors), and returns NumPy float32 arrays (or torch tensors with
    `convert_to_tensor=True`). `dtype` is the weights' and activations' dtype; every kernel accumulates in
    float32 and embeddings come out in float32.
    """

    def __init__(self, name_or_path=DEFAULT_MODEL, dtype="float32", backend="triton", device="cuda",
                 max_batch_tokens=16384, overlap=True, truncate_dim=None, prompts=None, default_prompt_name=None,
                 similarity_fn_name=None):
        if dtype not in GPU_DTYPES:
            raise InvalidArgumentError(f"backend='triton' dtype must be one of {GPU_DTYPES}, got {dtype!r}")
        if type(max_batch_tokens) is not int or max_batch_tokens < 1:
            raise InvalidArgumentError(f"max_batch_tokens must be a positive integer, got {max_batch_tokens!r}")
        self.max_batch_tokens, self.overlap = max_batch_tokens, bool(overlap)
        torch, self._kernels, self.device = _backend("cuda" if device is None else device)
        self._torch = torch
        self.dtype = getattr(torch, dtype)
        model = self._read_folder(name_or_path, truncate_dim, prompts, default_prompt_name, similarity_fn_name)
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

    def encode(self, sentences, batch_size=None, normalize_embeddings=None, show_progress_bar=None,
               output_value="sentence_embedding", convert_to_numpy=True, convert_to_tensor=False, *,
               prompt_name=None, prompt=None, truncate_dim=None, precision="float32"):
        """As SentenceEncoder.encode, batched for the GPU: the texts, longest first, are cut into batches of at
        most `max_batch_tokens` packed tokens (and at most `batch_size` texts when it is given). A worker thread
        tokenises and packs the next batches while the kernels run the current one (with `overlap=False` one
        after the other, with identical results). A batch goes to the device in one copy and its results come
        back in one, started before the next batch's kernels, so the host never waits on an idle GPU.

        Embeddings are float32; with `convert_to_tensor` the sentence embeddings come back as one tensor on the
        device and token embeddings as CPU tensors (kept off the GPU, so its memory holds about two batches).
        Prompts, truncate_dim and precision are SentenceEncoder.encode's, but for a folder whose pooling leaves
        the prompt out (include_prompt false) and for truncation or quantization into a tensor.
        """
        max_texts = self.max_batch_tokens if batch_size is None else batch_size  # a text has >= 2 tokens
        single, texts, normalize = self._encode_args(sentences, max_texts, normalize_embeddings, output_value)
        as_tensor = bool(convert_to_tensor)
        texts, skip = self._with_prompt(texts, prompt, prompt_name)
        post = self._post_processing(normalize_embeddings, truncate_dim, precision, output_value, as_tensor)
        if skip or (as_tensor and post.truncate_dim is not None):
            raise InvalidArgumentError("backend='triton' pools over every token and truncates NumPy arrays only: "
                                       "use the numpy backend for prompts left out of pooling, or "
                                       "convert_to_tensor=False with truncate_dim")
        if post.truncate_dim is not None:
            normalize = post.normalize_first

        batches = self._packed_batches(texts, max_texts)
        if self.overlap:
            batches = prefetched(batches, depth=2)
        results = [None] * len(texts)
        in_flight = None
        for batch in track(batches, total=None, desc="Batches", show_progress_bar=show_progress_bar):
            launched = self._launch(batch, normalize, output_value, as_tensor)  # queues work, waits for none
            if in_flight is not None:
                self._collect(*in_flight, results, output_value, as_tensor)
            in_flight = launched
        if in_flight is not None:
            self._collect(*in_flight, results, output_value, as_tensor)

        if not as_tensor:
            results = post.apply(results)
        if output_value == "sentence_embedding":
            if as_tensor:
                torch = self._torch
                results = torch.stack(results) if results else torch.zeros((0, self.dim), device=self.device)
            elif convert_to_numpy:
                results = np.stack(results) if results else np.zeros((0, post.dim(self.dim)), post.dtype(np.float32))
        if single:
            return results[0]
        return results

    def encode_ids(self, input_ids, normalize_embeddings=None, skip=0):
        """As SentenceEncoder.encode_ids: embeddings (n, dim) float32 of texts tokenised as `token_ids` gives them;
        the kernels pool every token, so `skip` must be 0."""
        if np.any(np.asarray(skip)):
            raise InvalidArgumentError("backend='triton' pools over every token: a prompt left out of pooling "
                                       "needs the numpy backend")
        rows = self._id_rows(input_ids)
        normalize = self.normalize if normalize_embeddings is None else bool(normalize_embeddings)
        results = [None] * len(rows)
        for batch in self._cut_batches(enumerate(rows), self.max_batch_tokens):
            self._collect(*self._launch(batch, normalize, "sentence_embedding", False), results,
                          "sentence_embedding", False)
        return np.stack(results) if results else np.zeros((0, self.dim), np.float32)

    def _packed_batches(self, texts, max_texts):
        """Tokenise the texts longest first (by characters) and yield PackedBatch after PackedBatch, each cut
        before it would pass `max_batch_tokens` tokens or `max_texts` texts."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        encode = self.tokenizer.encode
        prepared = zip(order, self._prepare([texts[i] for i in order]))
        return self._cut_batches(((i, encode(text, max_length=self.max_seq_length)) for i, text in prepared),
                                 max_texts)

    def _cut_batches(self, indexed_rows, max_texts):
        """PackedBatch after PackedBatch of (index, ids) rows, each cut before it would pass `max_batch_tokens`
        tokens or `max_texts` texts."""
        idx, rows, n_tokens = [], [], 0
        for i, row in indexed_rows:
            if idx and (n_tokens + len(row) > self.max_batch_tokens or len(idx) == max_texts):
                yield PackedBatch.pack(idx, rows)
                idx, rows, n_tokens = [], [], 0
            idx.append(i)
            rows.append(row)
            n_tokens += len(row)
        if idx:
            yield PackedBatch.pack(idx, rows)

    def _launch(self, batch, normalize, output_value, as_tensor):
        """Queue one batch on the device: the copy in, the kernels, the copy of its results out. Returns
        (batch, results on the host or device, an event marking the copy's end or None); nothing here waits."""
        torch = self._torch
        host = torch.from_numpy(batch.buffer)
        if self.device.type == "cuda":
            host = host.pin_memory()
        buffer = host.to(self.device, non_blocking=True)  # the one host -> device copy
        N = batch.n_tokens
        ids, positions, types, cu = buffer[:N], buffer[N:2 * N], buffer[2 * N:3 * N], buffer[3 * N:]
        h = self._hidden(ids, positions, types, {"cu_seqlens": cu, "max_seqlen": batch.max_len})  # (N, C)
        emb = self._kernels["pool_normalize"](h, cu, self.pooling_modes, normalize)  # (B, dim) fp32
        if output_value == "sentence_embedding" and as_tensor:
            return batch, emb, None  # stays on the device
        out = emb.reshape(-1) if output_value == "sentence_embedding" else torch.cat([emb.reshape(-1),
                                                                                     h.float().reshape(-1)])
        if self.device.type != "cuda":
            return batch, out.cpu(), None
        back = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        back.copy_(out, non_blocking=True)  # the one device -> host copy
        done = torch.cuda.Event()
        done.record()
        return batch, back, done

    def _collect(self, batch, out, done, results, output_value, as_tensor):
        """Wait for a launched batch's results and file them under each text's index."""
        if done is not None:
            done.synchronize()
        B, dim = len(batch.idx), self.dim
        if output_value == "sentence_embedding" and as_tensor:
            items = list(out)  # (B, dim) on the device
        else:
            flat = out if as_tensor else out.numpy()
            emb = flat[:B * dim].reshape(B, dim)
            if output_value == "sentence_embedding":
                items = list(emb)
            else:
                h = flat[B * dim:].reshape(batch.n_tokens, -1)
                cu = batch.cu
                tokens = [h[cu[b]:cu[b + 1]] for b in range(B)]
                items = tokens if output_value == "token_embeddings" else [
                    {"input_ids": batch.ids[cu[b]:cu[b + 1]], "token_embeddings": tokens[b],
                     "sentence_embedding": emb[b]} for b in range(B)]
        for i, item in zip(batch.idx, items):
            results[i] = item

    def forward_train(self, features, normalize_embeddings=None, rng=None):
        raise InvalidArgumentError("training (forward_train/backward) runs on backend='numpy' only")

    def backward(self, d_emb, cache):
        raise InvalidArgumentError("training (forward_train/backward) runs on backend='numpy' only")


class PackedBatch:
    """Texts packed without padding: one int32 buffer [ids (N) | positions (N) | token types (N) | cu_seqlens
    (B + 1)] that goes to the device in one copy, with the texts' indices and the int64 ids for the caller."""

    def __init__(self, idx, ids, buffer, cu, max_len):
        self.idx, self.ids, self.buffer, self.cu, self.max_len = idx, ids, buffer, cu, max_len
        self.n_tokens = len(ids)

    @classmethod
    def pack(cls, idx, rows):
        lengths = np.array([len(r) for r in rows])
        cu = np.concatenate([[0], np.cumsum(lengths)])
        ids = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(cu[-1]))
        positions = np.concatenate([np.arange(n) for n in lengths])
        types = np.zeros_like(ids)  # one sentence per text: segment 0
        buffer = np.concatenate([ids, positions, types, cu]).astype(np.int32)
        return cls(np.array(idx), ids, buffer, cu, int(lengths.max()))
