"""`_create_causal_mask`: True where a key lies after the query's position, so padding positions (-1) see nothing."""

import torch


def _create_causal_mask(position_ids: torch.Tensor, target_length: int) -> torch.Tensor:
    query_indices = position_ids.unsqueeze(-1)
    kv_indices = torch.arange(target_length).view(1, 1, -1)
    return (kv_indices > query_indices).unsqueeze(1)
