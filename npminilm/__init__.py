"""npminilm: torch-free MiniLM / BERT sentence embeddings in NumPy, matching sentence-transformers."""

import importlib

__version__ = "0.1.0"
__all__ = ["SentenceEncoder", "CrossEncoder", "WordPieceTokenizer", "errors", "util", "__version__"]

_LAZY = {
    "SentenceEncoder": ("npminilm.encoder.sentence_encoder", "SentenceEncoder"),
    "CrossEncoder": ("npminilm.encoder.cross_encoder", "CrossEncoder"),
    "WordPieceTokenizer": ("npminilm.tokenization.wordpiece", "WordPieceTokenizer"),
}
# one subpackage per concern; the base first (nn, io, runtime), then the models, their backends and the CLI
_SUBMODULES = {"errors", "util", "nn", "io", "runtime", "tokenization", "encoder", "decoder", "gpu", "serve", "cli", "finetune"}


def __getattr__(name):
    # Lazy, so that `import npminilm` stays cheap and `npminilm --help` never loads the model code.
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"npminilm.{name}")
    else:
        raise AttributeError(f"module 'npminilm' has no attribute {name!r}")
    globals()[name] = value
    return value
