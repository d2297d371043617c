"""`CustomRMSNormAIC`: RMSNorm as QEfficient's custom op computes it, in the input's dtype."""

import torch
from torch import nn


class CustomRMSNormAIC(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-05) -> None:
        super().__init__()
        self.variance_epsilon = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))
