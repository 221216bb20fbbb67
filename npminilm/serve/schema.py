"""Each endpoint's JSON body, read and checked into plain values. Anything else is a RequestError that names the
field at fault: 400 for a wrong type or value, 413 for too many inputs.

The bodies are OpenAI's for /v1/embeddings and text-embeddings-inference's (TEI) for /embed, /tokenize,
/similarity and /rerank. Fields the endpoint does not know are ignored, as both servers do.
"""

import json
from dataclasses import dataclass

from ..errors import RequestError


@dataclass(frozen=True)
class EmbedRequest:
    """What to embed (texts, or token id sequences without [CLS]/[SEP]) and how to answer."""

    texts: list | None
    ids: list | None
    truncate: bool
    normalize: bool | None = None  # None: as the model folder says
    dimensions: int | None = None
    encoding_format: str = "float"
    field: str = "input"  # the body's name for the inputs, for error messages
    prompt_name: str | None = None  # one of the model's prompts (TEI's); None: its default prompt, if any

    @property
    def n_inputs(self):
        return len(self.texts if self.texts is not None else self.ids)


def read_json(body):
    """The JSON object of a request body."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RequestError(f"the body must be a JSON object, got {_kind(value)}")
    return value


def openai_embeddings(body, max_inputs, dim, auto_truncate):
    """POST /v1/embeddings: input (a string, a list of strings, a list of token ids or a list of them), model,
    encoding_format ("float" or "base64"), dimensions, and `truncate` and `prompt_name` (TEI's; the default of
    truncate is --auto-truncate)."""
    texts, ids = _inputs(body, "input", max_inputs, allow_ids=True)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(f"model must be a string, got {_kind(model)}", param="model")
    encoding_format = body.get("encoding_format", "float")
    if encoding_format not in ("float", "base64"):
        raise RequestError(f"encoding_format must be 'float' or 'base64', got {encoding_format!r}",
                           param="encoding_format")
    return EmbedRequest(texts, ids, _flag(body, "truncate", auto_truncate), None, _dimensions(body, dim),
                        encoding_format, prompt_name=_prompt_name(body))


def tei_embed(body, max_inputs, dim, auto_truncate):
    """POST /embed: inputs (a string or a list of strings), normalize (default true), truncate, dimensions,
    prompt_name."""
    texts, ids = _inputs(body, "inputs", max_inputs, allow_ids=False)
    return EmbedRequest(texts, ids, _flag(body, "truncate", auto_truncate), _flag(body, "normalize", True),
                        _dimensions(body, dim), field="inputs", prompt_name=_prompt_name(body))


def tei_tokenize(body, max_inputs):
    """POST /tokenize: (texts, add_special_tokens)."""
    texts, _ = _inputs(body, "inputs", max_inputs, allow_ids=False)
    return texts, _flag(body, "add_special_tokens", True)


def tei_similarity(body, max_inputs):
    """POST /similarity: {"inputs": {"source_sentence": str, "sentences": [str, ...]}} -> (source, sentences)."""
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        raise RequestError(f"inputs must be an object with source_sentence and sentences, got {_kind(inputs)}",
                           param="inputs")
    source, _ = _inputs(inputs, "source_sentence", 1, allow_ids=False, param="inputs.source_sentence")
    if not isinstance(inputs.get("source_sentence"), str):
        raise RequestError("inputs.source_sentence must be a string", param="inputs.source_sentence")
    sentences, _ = _inputs(inputs, "sentences", max_inputs - 1, allow_ids=False, param="inputs.sentences")
    return source[0], sentences


def tei_rerank(body, max_inputs, auto_truncate):
    """POST /rerank: query, texts, raw_scores (default false), return_text (default false), truncate."""
    query, _ = _inputs(body, "query", 1, allow_ids=False)
    if not isinstance(body.get("query"), str):
        raise RequestError("query must be a string", param="query")
    texts, _ = _inputs(body, "texts", max_inputs, allow_ids=False)
    if not isinstance(body.get("texts"), list):
        raise RequestError("texts must be a list of strings", param="texts")
    return RerankRequest(query[0], texts, _flag(body, "raw_scores", False), _flag(body, "return_text", False),
                         _flag(body, "truncate", auto_truncate))


@dataclass(frozen=True)
class RerankRequest:
    query: str
    texts: list
    raw_scores: bool
    return_text: bool
    truncate: bool


def _inputs(body, key, max_inputs, allow_ids, param=None):
    """(texts, None) or (None, id sequences) from body[key]: a string, a list of strings, or with allow_ids a
    list of ints (one text) or a list of lists of ints."""
    param = param or key
    if key not in body:
        raise RequestError(f"'{param}' is required", param=param)
    value = body[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        kinds = "a string, a list of strings or token ids" if allow_ids else "a string or a list of strings"
        raise RequestError(f"{param} must be {kinds}, got {_kind(value)}", param=param)
    if not value:
        raise RequestError(f"{param} must not be empty", param=param)
    if allow_ids and all(_is_id(v) for v in value):
        value = [value]  # one text given as token ids
    if len(value) > max_inputs:
        raise RequestError(f"{param} has {len(value)} items, more than this server's limit of {max_inputs}",
                           status=413, param=param)
    if allow_ids and isinstance(value[0], list):
        for i, ids in enumerate(value):
            if not isinstance(ids, list) or not ids or not all(_is_id(v) for v in ids):
                raise RequestError(f"{param}[{i}] must be a non-empty list of token ids (integers)", param=param)
        return None, value
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise RequestError(f"{param}[{i}] must be a string, got {_kind(text)}", param=param)
        if not text.strip():
            raise RequestError(f"{param}[{i}] is empty", param=param)
    return value, None


def _is_id(v):
    return type(v) is int and v >= 0


def _flag(body, key, default):
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"{key} must be true or false, got {_kind(value)}", param=key)
    return value


def _prompt_name(body):
    value = body.get("prompt_name")
    if value is not None and not isinstance(value, str):
        raise RequestError(f"prompt_name must be a string, got {_kind(value)}", param="prompt_name")
    return value


def _dimensions(body, dim):
    value = body.get("dimensions")
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= dim:
        raise RequestError(f"dimensions must be an integer from 1 to {dim}, got {value!r}", param="dimensions")
    return value


def _kind(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
