"""A decoder written the way research code often is, from the published Llama architecture with the conventions that
break naive ports: attention and feed-forward blocks numbered apart (`layers.{2i}`, `layers.{2i+1}`), a fused
query/key/value projection with biases and an output projection without, grouped-query heads in the tiled layout
(query head h reads key/value head h % n_kv_heads), interleaved rotary embeddings on part of each head, RMSNorm gains
stored as an offset from one, a fused feed-forward input with the up half first, and embeddings scaled by
sqrt(dim) in the forward pass. Not a Transformers model: the porting tests convert it with the generated scripts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class OffsetRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))  # the gain is 1 + weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1 + self.weight)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2i, 2i+1) of each head's first 2 * cos.shape[-1] dims; the rest pass through."""
    rotary = 2 * cos.shape[-1]
    x_rot, x_pass = x[..., :rotary], x[..., rotary:]
    x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
    rotated = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return torch.cat([rotated, x_pass], dim=-1)


class Attention(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config["n_heads"], config["n_kv_heads"], config["head_dim"]
        fused = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        self.wqkv = nn.Linear(config["dim"], fused, bias=config["qkv_bias"])
        self.wo = nn.Linear(self.n_heads * self.head_dim, config["dim"], bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        sizes = [self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim, self.n_kv_heads * self.head_dim]
        q, k, v = self.wqkv(x).split(sizes, dim=-1)
        q = q.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate_pairs(q, cos, sin), rotate_pairs(k, cos, sin)
        groups = self.n_heads // self.n_kv_heads
        k, v = k.repeat(1, groups, 1, 1), v.repeat(1, groups, 1, 1)  # tiled: head h reads h % n_kv_heads
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, -1)
        return self.wo(out)


class FeedForward(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.w13 = nn.Linear(config["dim"], 2 * config["ffn_dim"], bias=False)  # [up; gate]
        self.w2 = nn.Linear(config["ffn_dim"], config["dim"], bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, gate = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class AttentionBlock(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.norm = OffsetRMSNorm(config["dim"], config["eps"])
        self.attn = Attention(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x), cos, sin, allowed)


class FeedForwardBlock(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.norm = OffsetRMSNorm(config["dim"], config["eps"])
        self.ffn = FeedForward(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(self.norm(x))


class ResearchDecoder(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config["vocab"], config["dim"])
        self.layers = nn.ModuleList()
        for _ in range(config["n_layers"]):
            self.layers.extend([AttentionBlock(config), FeedForwardBlock(config)])
        self.norm = OffsetRMSNorm(config["dim"], config["eps"])
        self.output = nn.Linear(config["dim"], config["vocab"], bias=False)
        rotary = int(config["head_dim"] * config["rotary_fraction"])
        self.register_buffer(
            "inv_freq", 1.0 / config["rope_base"] ** (torch.arange(0, rotary, 2).float() / rotary), persistent=False
        )

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        length = tokens.shape[1]
        angles = torch.outer(torch.arange(length).float(), self.inv_freq)
        allowed = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
        if mask is not None:
            allowed = allowed & mask.bool()[:, None, None, :]
        x = self.tok_embeddings(tokens) * math.sqrt(self.config["dim"])
        for index, layer in enumerate(self.layers):
            x = layer(x, angles.cos(), angles.sin(), allowed) if index % 2 == 0 else layer(x)
        return self.output(self.norm(x))


def build(config: dict, seed: int = 0) -> ResearchDecoder:
    """A randomly initialized model, with random (not zero) norm offsets and biases, so that every rule matters."""
    torch.manual_seed(seed)
    model = ResearchDecoder(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("bias"):
                parameter.normal_(0.0, 0.1)
    return model.eval()


def load_model() -> ResearchDecoder:
    """The harness's `--original`: the model saved beside this file."""
    folder = Path(__file__).parent
    model = ResearchDecoder(json.loads((folder / "research_config.json").read_text()))
    model.load_state_dict(torch.load(folder / "research.pt", weights_only=True))
    return model.eval()
