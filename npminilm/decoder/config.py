"""GPTConfig: the shape of a decoder: vocabulary, context, width, depth, heads, dropout, and its components.

The defaults are GPT-2's (LayerNorm, learned positions, a GELU feed-forward, one key/value head per query head,
biases). `norm="rmsnorm"`, `pos="rope"`, `ffn="swiglu"` and `n_kv_head < n_head` give a Llama-style decoder, and
`moe_experts=E` with `moe_top_k=k` a Mixtral-style one; `mixer="mamba"` (with `pos="none"`) a Mamba decoder, whose
blocks are a norm and a selective state-space mixer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..errors import InvalidArgumentError

NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope", "none")
FFNS = ("gelu", "swiglu")
MIXERS = ("attention", "mamba")


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 64
    n_embd: int = 128
    n_layer: int = 2
    n_head: int = 4
    dropout: float = 0.0
    layer_norm_epsilon: float = 1e-5
    norm: str = "layernorm"
    pos: str = "learned"
    ffn: str = "gelu"
    n_kv_head: int | None = None  # None: n_head (multi-head); 1: multi-query; else grouped-query
    n_inner: int | None = None  # the feed-forward's width; None: 4C for GELU, 8C/3 (to a multiple of 8) for SwiGLU
    rope_theta: float = 10000.0
    bias: bool = True  # biases on the linear layers (GPT-2's); Llama and Mixtral have none
    moe_experts: int = 0  # 0: a dense feed-forward; E: Mixtral's sparse mixture of E SwiGLU experts
    moe_top_k: int = 2  # experts per token
    moe_aux_coef: float = 0.01  # weight of the load-balancing loss in the training loss
    mixer: str = "attention"  # or "mamba": a selective state-space mixer in place of attention, and no FFN
    mamba_d_state: int = 16  # N, the state's size per channel
    mamba_d_conv: int = 4  # K, the causal convolution's width
    mamba_expand: int = 2  # the mixer's inner width D = expand C
    mamba_dt_rank: int | None = None  # R, the step's low-rank projection; None: ceil(C / 16)

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        for name in ("vocab_size", "block_size", "n_embd", "n_layer", "n_head", "n_kv_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise InvalidArgumentError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.n_head % self.n_kv_head:
            raise InvalidArgumentError(f"n_kv_head {self.n_kv_head} must divide n_head {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidArgumentError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, choices in (("norm", NORMS), ("pos", POSITIONS), ("ffn", FFNS), ("mixer", MIXERS)):
            if getattr(self, name) not in choices:
                raise InvalidArgumentError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if (self.mixer == "mamba") != (self.pos == "none"):
            raise InvalidArgumentError("a Mamba mixer has no position embeddings and attention needs them: use "
                                       "pos='none' with mixer='mamba', and only then")
        if self.mixer == "mamba":
            if self.moe_experts:
                raise InvalidArgumentError("a Mamba block has no feed-forward to make a mixture of experts of")
            if self.mamba_dt_rank is None:
                self.mamba_dt_rank = -(-self.n_embd // 16)
            for name in ("mamba_d_state", "mamba_d_conv", "mamba_expand", "mamba_dt_rank"):
                value = getattr(self, name)
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
        if self.pos == "rope" and self.head_size % 2:
            raise InvalidArgumentError(f"rotary positions need an even head size, got {self.head_size}")
        if self.n_inner is None:
            self.n_inner = 4 * self.n_embd if self.ffn == "gelu" else -(-8 * self.n_embd // 3 // 8) * 8
        if not isinstance(self.n_inner, int) or isinstance(self.n_inner, bool) or self.n_inner < 1:
            raise InvalidArgumentError(f"n_inner must be a positive integer, got {self.n_inner!r}")
        if not isinstance(self.moe_experts, int) or isinstance(self.moe_experts, bool) or self.moe_experts < 0:
            raise InvalidArgumentError(f"moe_experts must be 0 (dense) or a positive integer, got {self.moe_experts!r}")
        if self.moe_experts:
            if self.ffn != "swiglu":
                raise InvalidArgumentError("the experts are SwiGLU feed-forwards: a mixture of experts needs ffn='swiglu'")
            if not isinstance(self.moe_top_k, int) or not 1 <= self.moe_top_k <= self.moe_experts:
                raise InvalidArgumentError(f"moe_top_k must be in [1, {self.moe_experts}], got {self.moe_top_k!r}")
            if not self.moe_aux_coef >= 0:
                raise InvalidArgumentError(f"moe_aux_coef must be >= 0, got {self.moe_aux_coef}")
        if not self.rope_theta > 0:
            raise InvalidArgumentError(f"rope_theta must be positive, got {self.rope_theta}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mamba_inner(self) -> int:
        return self.mamba_expand * self.n_embd

    @property
    def dt_rank(self) -> int:
        return self.mamba_dt_rank

    @property
    def kv_size(self) -> int:
        """Width of the keys (and of the values): n_kv_head heads of head_size."""
        return self.n_kv_head * self.head_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
