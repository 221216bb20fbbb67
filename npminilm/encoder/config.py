"""BertConfig: the fields of a BERT config.json the encoder needs, validated."""

from dataclasses import dataclass

from ..errors import ModelLoadError

SUPPORTED_ACTIVATIONS = ("gelu",)


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1  # training only: embeddings, attention output, FFN output
    attention_probs_dropout_prob: float = 0.1  # training only: the attention probabilities

    @property
    def head_size(self):
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d, where="config.json"):
        """Validate the fields the encoder needs; anything off is a ModelLoadError naming the field."""
        if d.get("model_type", "bert") not in ("bert",):
            raise ModelLoadError(f"{where}: model_type {d.get('model_type')!r} is not a BERT model")
        ints = {}
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings", "type_vocab_size"):
            value = d.get(key)
            if type(value) is not int or value <= 0:
                raise ModelLoadError(f"{where}: {key} must be a positive integer, got {value!r}")
            ints[key] = value
        if ints["hidden_size"] % ints["num_attention_heads"]:
            raise ModelLoadError(f"{where}: hidden_size {ints['hidden_size']} is not divisible by "
                                 f"num_attention_heads {ints['num_attention_heads']}")
        eps = d.get("layer_norm_eps", 1e-12)
        if not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ModelLoadError(f"{where}: layer_norm_eps must be in (0, 1), got {eps!r}")
        act = d.get("hidden_act", "gelu")
        if act not in SUPPORTED_ACTIVATIONS:
            raise ModelLoadError(f"{where}: hidden_act {act!r} is not supported (only exact-erf 'gelu')")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ModelLoadError(f"{where}: only absolute position embeddings are supported")
        rates = {}
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            rates[key] = d.get(key, 0.1)
            if not isinstance(rates[key], (int, float)) or isinstance(rates[key], bool) or not 0 <= rates[key] < 1:
                raise ModelLoadError(f"{where}: {key} must be in [0, 1), got {rates[key]!r}")
            rates[key] = float(rates[key])
        return cls(layer_norm_eps=float(eps), hidden_act=act, **ints, **rates)
