"""CrossEncoder: a BertForSequenceClassification folder scoring (query, document) pairs, as
sentence_transformers.CrossEncoder does: predict and rank, and forward_train / backward for fine-tuning.

    [CLS] a [SEP] b [SEP]  (token types 0 ... 0 1 ... 1)  ->  BERT  ->  pooler tanh(W h[CLS] + b)
                           ->  classifier (num_labels)  ->  activation (sigmoid for one label, else none)

Pairs are cut longest-first to max_length, as HF's tokenizer does. Inference runs packed (no padding,
`encoder.packed`) in length-sorted batches; training runs the padded forward with its caches.
"""

import numpy as np

from ..errors import InvalidArgumentError, InvalidInputError, ModelLoadError
from ..io.hub import resolve_model_path
from ..nn.ops import linear_backward, linear_forward
from ..runtime.parallel import default_workers, map_batches
from ..tokenization.wordpiece import WordPieceTokenizer
from .bert import bert_backward, bert_forward
from .config import BertConfig
from .folder import read_json, tokenizer_max_length
from .packed import PackedTexts, gemms_on_one_thread, packed_forward
from .weights import POOLER_KEYS, float_tensors, load_bert_params, load_checked

CLASSIFIER_KEYS = ("classifier.weight", "classifier.bias")
# sentence-transformers stores the activation as a torch class path in config.json
ACTIVATIONS = {"Sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)), "Identity": lambda z: z, "Tanh": np.tanh}


class CrossEncoder:
    """Score text pairs with a BERT sequence classifier folder (e.g. cross-encoder/ms-marco-MiniLM-L6-v2).

    `activation_fn` is "sigmoid", "identity", "tanh" or a function of the (n, num_labels) logits; None takes the
    folder's (config.json's sentence_transformers.activation_fn), else sigmoid for one label and none for more.
    `max_length` (default: the tokenizer's model_max_length, at most the position table) bounds each pair."""

    def __init__(self, name_or_path, dtype="float32", max_length=None, activation_fn=None):
        if dtype not in ("float32", "float64"):
            raise InvalidArgumentError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.folder = resolve_model_path(name_or_path)
        raw = read_json(self.folder / "config.json")
        where = str(self.folder / "config.json")
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{where}: not a JSON object")
        architectures = raw.get("architectures") or []
        if "BertForSequenceClassification" not in architectures:
            raise ModelLoadError(f"{where}: architectures {architectures} is not BertForSequenceClassification; "
                                 "a CrossEncoder needs a sequence classifier folder (for embeddings use "
                                 "SentenceEncoder)")
        self.config = raw
        self.bert_config = BertConfig.from_dict(raw, where=where)
        self.num_labels = _num_labels(raw, where)
        path = self.folder / "model.safetensors"
        if not path.exists():
            raise ModelLoadError(f"{path}: missing (pickled pytorch_model.bin is never loaded)")
        self.params = load_bert_params(path, self.bert_config, self.dtype)
        if not all(k in self.params for k in POOLER_KEYS):
            raise ModelLoadError(f"{path}: a sequence classifier needs the pooler ({', '.join(POOLER_KEYS)})")
        self.params.update(_load_classifier(path, self.bert_config.hidden_size, self.num_labels, self.dtype))
        self.tokenizer = WordPieceTokenizer.from_folder(self.folder)
        self.max_length = tokenizer_max_length(self.folder, self.bert_config) if max_length is None else max_length
        self.activation_fn = _activation(raw, self.num_labels, where) if activation_fn is None else \
            _named_activation(activation_fn)

    def __repr__(self):
        return (f"CrossEncoder({str(self.folder)!r}, dtype={self.dtype.name!r}, num_labels={self.num_labels}, "
                f"max_length={self.max_length})")

    @property
    def max_length(self):
        return self._max_length

    @max_length.setter
    def max_length(self, value):
        limit = self.bert_config.max_position_embeddings
        if type(value) is not int or not 3 <= value <= limit:
            raise InvalidArgumentError(f"max_length must be an integer in [3, {limit}], got {value!r}")
        self._max_length = value

    # ---------------------------------------------------------------------------------------------- inference

    def predict(self, sentences, batch_size=32, activation_fn=None, apply_softmax=False, convert_to_numpy=True):
        """Scores of (a, b) pairs: (n,) for one label, (n, num_labels) for more; one pair gives one score (row).
        `activation_fn` replaces the encoder's for this call; apply_softmax normalises several labels' scores."""
        single, pairs = _check_pairs(sentences)
        if type(batch_size) is not int or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        activation = self.activation_fn if activation_fn is None else _named_activation(activation_fn)
        logits = self.logits(pairs, batch_size)
        scores = np.asarray(activation(logits), dtype=self.dtype)
        if apply_softmax and scores.shape[1] > 1:
            e = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = e / e.sum(axis=1, keepdims=True)
        if self.num_labels == 1:
            scores = scores[:, 0]
        if single:
            return scores[0]
        return scores if convert_to_numpy else list(scores)

    def rank(self, query, documents, top_k=None, return_documents=False, batch_size=32, activation_fn=None):
        """[{"corpus_id", "score"[, "text"]}, ...] of the documents by their score with the query, best first."""
        if self.num_labels != 1:
            raise InvalidArgumentError(f"rank needs a one-label model; this one has {self.num_labels} labels: "
                                       "use predict on the pairs")
        if not isinstance(query, str):
            raise InvalidInputError(f"query must be a str, got {type(query).__name__}")
        if isinstance(documents, str) or not hasattr(documents, "__iter__"):
            raise InvalidInputError("documents must be a list of str")
        documents = list(documents)
        if top_k is not None and (type(top_k) is not int or top_k < 1):
            raise InvalidArgumentError(f"top_k must be a positive integer or None, got {top_k!r}")
        if not documents:
            return []
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size, activation_fn=activation_fn)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"corpus_id": int(i), "score": float(scores[i]), **({"text": documents[i]} if return_documents
                                                                    else {})} for i in order]

    def logits(self, pairs, batch_size=32):
        """(n, num_labels) raw classifier outputs of checked (a, b) pairs, packed in length-sorted batches."""
        features = self.tokenizer.batch_encode([a for a, _ in pairs], pairs=[b for _, b in pairs],
                                               max_length=self.max_length, padding=False)
        ids, types = features["input_ids"], features["token_type_ids"]
        order = np.argsort([-len(row) for row in ids], kind="stable")
        batches = [order[s:s + batch_size] for s in range(0, len(pairs), batch_size)]
        if len(batches) == 1 and gemms_on_one_thread(self.dtype):  # a piece per core, each on its own thread
            batches = [piece for piece in np.array_split(batches[0], default_workers()) if len(piece)]

        def run(idx):
            batch = PackedTexts.pack([ids[i] for i in idx], [types[i] for i in idx])
            h = packed_forward(self.params, self.bert_config, batch)  # (rows, C)
            first = np.stack([h[rows][0] for rows in batch.text_rows()])  # (S, C): each pair's [CLS]
            return idx, self._head(first)

        out = np.zeros((len(pairs), self.num_labels), self.dtype)
        for idx, z in map_batches(run, batches):
            out[idx] = z
        return out

    def _head(self, cls_rows):
        """pooler tanh(dense(h[CLS])) then the classifier: (S, C) -> (S, num_labels)."""
        p = self.params
        pooled = np.tanh(linear_forward(cls_rows, p["pooler.dense.weight"], p["pooler.dense.bias"])[0])
        return linear_forward(pooled, p["classifier.weight"], p["classifier.bias"])[0]

    # ---------------------------------------------------------------------------------------------- training

    def tokenize(self, pairs):
        """{"input_ids", "attention_mask", "token_type_ids"} (B, T) int64 of (a, b) pairs, padded to the longest."""
        _, pairs = _check_pairs(pairs)
        return self.tokenizer.batch_encode([a for a, _ in pairs], pairs=[b for _, b in pairs],
                                           max_length=self.max_length)

    def forward_train(self, features, rng=None):
        """(B, num_labels) logits of tokenised `features`, keeping what `backward` needs; `rng` turns on HF
        BERT's training-mode dropout, and the classifier's dropout on the pooled vector (its hidden rate)."""
        out, bert_cache = bert_forward(self.params, self.bert_config, features["input_ids"],
                                       features["attention_mask"], features.get("token_type_ids"),
                                       keep_cache=True, rng=rng)
        pooled = out["pooler_output"]  # (B, C)
        keep = None
        rate = self.bert_config.hidden_dropout_prob
        if rng is not None and rate > 0:
            keep = (rng.random(pooled.shape) >= rate).astype(pooled.dtype) / np.asarray(1 - rate, pooled.dtype)
            pooled = pooled * keep
        logits, classifier_cache = linear_forward(pooled, self.params["classifier.weight"],
                                                  self.params["classifier.bias"])
        return logits, {"bert": bert_cache, "classifier": classifier_cache, "keep": keep,
                        "hidden_shape": out["last_hidden_state"].shape}

    # logits = dropout(pooled) W^T + b  =>  d pooled = (d logits W) * keep,  dW = d logits^T pooled,  db = sum
    def backward(self, d_logits, cache):
        """Gradients of every trainable tensor (HF names without `bert.`, and classifier.*) given dL/d(logits)."""
        d_pooled, d_weight, d_bias = linear_backward(d_logits, cache["classifier"])
        if cache["keep"] is not None:
            d_pooled = d_pooled * cache["keep"]
        grads = bert_backward(np.zeros(cache["hidden_shape"], d_logits.dtype), cache["bert"], self.bert_config,
                              d_pooler=d_pooled)  # only the pooler reads the hidden states
        grads["classifier.weight"], grads["classifier.bias"] = d_weight, d_bias
        return grads


def _num_labels(raw, where):
    labels = raw.get("id2label")
    n = len(labels) if isinstance(labels, dict) and labels else raw.get("num_labels", 2)
    if type(n) is not int or n < 1:
        raise ModelLoadError(f"{where}: num_labels must be a positive integer, got {n!r}")
    return n


def _load_classifier(path, hidden, num_labels, dtype):
    shapes = {"classifier.weight": (num_labels, hidden), "classifier.bias": (num_labels,)}
    return load_checked(path, float_tensors(path), shapes, dtype)


def _activation(raw, num_labels, where):
    st = raw.get("sentence_transformers") if isinstance(raw.get("sentence_transformers"), dict) else {}
    path = st.get("activation_fn") or raw.get("sbert_ce_default_activation_function")
    if path is None:
        return ACTIVATIONS["Sigmoid" if num_labels == 1 else "Identity"]
    name = str(path).rsplit(".", 1)[-1]
    if name not in ACTIVATIONS:
        raise ModelLoadError(f"{where}: activation_fn {path!r} is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _named_activation(fn):
    if callable(fn):
        return fn
    names = {k.lower(): v for k, v in ACTIVATIONS.items()}
    if fn not in names:
        raise InvalidArgumentError(f"activation_fn must be one of {sorted(names)} or a function, got {fn!r}")
    return names[fn]


def _check_pairs(sentences):
    """(one pair given?, [(a, b), ...]) or a typed error naming the first bad item."""
    if isinstance(sentences, (list, tuple)) and len(sentences) == 2 and all(isinstance(s, str) for s in sentences):
        return True, [tuple(sentences)]
    if isinstance(sentences, (str, bytes, dict)) or not hasattr(sentences, "__iter__"):
        raise InvalidInputError(f"sentences must be a list of (text, text) pairs, got {type(sentences).__name__}")
    pairs = []
    for i, pair in enumerate(sentences):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(s, str) for s in pair):
            raise InvalidInputError(f"sentences[{i}] must be a pair of strings, got {pair!r:.60}")
        pairs.append(tuple(pair))
    return False, pairs
