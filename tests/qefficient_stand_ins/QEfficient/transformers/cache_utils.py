"""`QEffDynamicCache`: a cache allocated at its full length, written and read at `position_ids`.

Writing scatters each token's keys and values to the slot of its position; a padding position (-1) writes to the
last slot, which stays masked until a real token overwrites it. Reading gathers every slot up to the row's largest
position and zeroes the values after it. Continuous batching (`batch_index`) is not stood in for.
"""

import torch
from transformers.cache_utils import Cache

INVALID_INDEX = 0  # what the gather reads for slots past the row's last position (their values are zeroed)


class QEffDynamicLayer:
    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values

    def get_seq_length(self) -> int:
        return self.keys.shape[-2]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, cache_kwargs: dict) -> tuple:
        if cache_kwargs.get("batch_index") is not None:
            raise NotImplementedError("the stand-in cache has no continuous batching")
        position_ids = cache_kwargs["position_ids"]
        rows = torch.arange(self.keys.shape[0]).view(-1, 1, 1)
        heads = torch.arange(self.keys.shape[1]).view(1, -1, 1)
        slots = position_ids.unsqueeze(1)
        self.keys[rows, heads, slots] = key_states
        self.values[rows, heads, slots] = value_states

        context_length = self.keys.shape[2]
        ctx_indices = torch.arange(context_length)[None, None, :]
        invalid = ctx_indices > position_ids.max(1, keepdim=True).values.unsqueeze(1)
        ctx_indices = torch.where(invalid, INVALID_INDEX, ctx_indices)
        keys = self.keys[rows, heads, ctx_indices]
        values = self.values[rows, heads, ctx_indices]
        values = torch.where(invalid.unsqueeze(-1), torch.zeros_like(values), values)
        return keys, values


class QEffDynamicCache(Cache):
    def __init__(self, layers: list[QEffDynamicLayer]) -> None:
        super().__init__(layers=layers)

    @classmethod
    def from_legacy_cache(cls, past_key_values: tuple) -> "QEffDynamicCache":
        return cls([QEffDynamicLayer(keys, values) for keys, values in past_key_values])

    def to_legacy_cache(self) -> tuple:
        return tuple((layer.keys, layer.values) for layer in self.layers)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[layer_idx].get_seq_length()

    def update(self, key_states, value_states, layer_idx: int, cache_kwargs: dict | None = None) -> tuple:
        return self.layers[layer_idx].update(key_states, value_states, cache_kwargs)
