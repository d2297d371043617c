"""An encoder built from PyTorch's own `nn.TransformerEncoderLayer` (post-norm, GELU), the way many research
encoders are: attention packed in `nn.MultiheadAttention`'s fused `in_proj_weight`, token embeddings scaled by
sqrt(d_model) in the forward pass ("Attention Is All You Need"), learned positions, and a BERT-style masked-language-
modeling head with its own output matrix. `bias: false` leaves out every bias of the layers (PyTorch's `bias`
argument, which LayerNorm follows too), `embedding_norm: false` the embedding LayerNorm, and `head_transform: false`
the head's dense layer and norm. Not a Transformers model: the porting tests convert it with the generated
scripts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# PyTorch's fast path runs a whole layer in one fused kernel, so that its sub-modules never run and their forward
# hooks never fire; the harness needs them
torch.backends.mha.set_fastpath_enabled(False)


class ResearchEncoder(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = config
        d_model = config["d_model"]
        self.embed = nn.Embedding(config["vocab_size"], d_model)
        self.pos = nn.Embedding(config["max_len"], d_model)
        self.embed_norm = None
        if config["embedding_norm"]:
            self.embed_norm = nn.LayerNorm(d_model, eps=config["layer_norm_eps"], bias=config["bias"])
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model,
                config["nhead"],
                config["dim_feedforward"],
                dropout=config["dropout"],
                activation=config["activation"],
                layer_norm_eps=config["layer_norm_eps"],
                batch_first=True,
                bias=config["bias"],
            )
            for _ in range(config["num_layers"])
        )
        self.head_transform, self.head_norm = None, None
        if config["head_transform"]:
            self.head_transform = nn.Linear(d_model, d_model)
            self.head_norm = nn.LayerNorm(d_model, eps=config["layer_norm_eps"], bias=config["bias"])
        self.head_out = nn.Linear(d_model, config["vocab_size"])

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1])[None]
        x = self.embed(tokens) * math.sqrt(self.config["d_model"]) + self.pos(positions)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        padding = None if mask is None else ~mask.bool()
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
        if self.head_transform is not None:
            x = self.head_norm(F.gelu(self.head_transform(x)))
        return self.head_out(x)


def build(config: dict, seed: int = 0) -> ResearchEncoder:
    torch.manual_seed(seed)
    model = ResearchEncoder(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    return model.eval()


def load_model() -> ResearchEncoder:
    """The harness's `--original`: the model saved beside this file."""
    folder = Path(__file__).parent
    model = ResearchEncoder(json.loads((folder / "research_config.json").read_text()))
    model.load_state_dict(torch.load(folder / "research.pt", weights_only=True))
    return model.eval()
