"""The HuggingFace side of `npminilm trace`: the same stages, captured from transformers.BertModel with hooks.

Optional by design: only the trace command imports this module, and only when transformers is installed.
The engine itself never imports torch or transformers.
"""

import numpy as np


def hf_stages(model_folder, features, pooling_modes, normalize, dtype="float32"):
    """{trace stage name: array for the first sentence} from BertModel run on `features`."""
    import torch
    import torch.nn.functional as F
    from transformers import BertModel

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    model = BertModel.from_pretrained(str(model_folder), torch_dtype=torch_dtype, attn_implementation="eager").eval()
    captured = {}

    def output_of(name):
        return lambda module, args, out: captured.__setitem__(name, out.detach().clone())

    def input_of(name):
        return lambda module, args: captured.__setitem__(name, args[0].detach().clone())

    emb = model.embeddings
    hooks = [
        emb.word_embeddings.register_forward_hook(output_of("embeddings.word")),
        emb.position_embeddings.register_forward_hook(output_of("embeddings.position")),
        emb.token_type_embeddings.register_forward_hook(output_of("embeddings.token_type")),
        emb.LayerNorm.register_forward_pre_hook(input_of("embeddings.sum")),
    ]
    for i, layer in enumerate(model.encoder.layer):
        p = f"layer.{i}."
        attn = layer.attention
        hooks += [
            attn.self.query.register_forward_hook(output_of(p + "attention.query")),
            attn.self.key.register_forward_hook(output_of(p + "attention.key")),
            attn.self.value.register_forward_hook(output_of(p + "attention.value")),
            attn.output.dense.register_forward_pre_hook(input_of(p + "attention.context")),
            attn.output.LayerNorm.register_forward_pre_hook(input_of(p + "attention.residual_sum")),
            attn.output.register_forward_hook(output_of(p + "attention.LayerNorm")),
            layer.intermediate.dense.register_forward_hook(output_of(p + "ffn.intermediate")),
            layer.intermediate.register_forward_hook(output_of(p + "ffn.gelu")),
            layer.output.LayerNorm.register_forward_pre_hook(input_of(p + "ffn.residual_sum")),
        ]
    inputs = {k: torch.from_numpy(v) for k, v in features.items()}
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
    for h in hooks:
        h.remove()

    stages = {name: t[0].numpy() for name, t in captured.items()}
    stages["embeddings.LayerNorm"] = out.hidden_states[0][0].numpy()
    for i, (h, a) in enumerate(zip(out.hidden_states[1:], out.attentions)):
        stages[f"layer.{i}.output.LayerNorm"] = h[0].numpy()
        stages[f"layer.{i}.attention.probs"] = a[0].numpy()

    # sentence-transformers' pooling, written in torch, as an independent check of ours
    h, mask = out.last_hidden_state, inputs["attention_mask"].unsqueeze(-1).to(torch_dtype)
    count = mask.sum(dim=1).clamp(min=1e-9)
    pooled = {"cls": h[:, 0], "max": h.masked_fill(mask == 0, float("-inf")).max(dim=1).values,
              "mean": (h * mask).sum(dim=1) / count, "mean_sqrt_len_tokens": (h * mask).sum(dim=1) / count.sqrt()}
    vector = torch.cat([pooled[m] for m in pooling_modes], dim=-1)
    stages["pooling." + "+".join(pooling_modes)] = vector[0].numpy()
    if normalize:
        stages["normalize"] = F.normalize(vector, p=2, dim=1)[0].numpy()
    return {name: np.asarray(v) for name, v in stages.items()}
