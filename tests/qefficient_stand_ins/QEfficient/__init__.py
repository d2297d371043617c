"""Stand-ins for the QEfficient symbols that generated `qefficient/` modules import.

QEfficient (https://github.com/quic/efficient-transformers) is not on PyPI and pins its own Transformers, so the
tests cannot install it. These modules reproduce, in plain PyTorch, the behaviour of its main branch that the
generated classes rely on: the KV cache written and read by scatter and gather at `position_ids` over a fixed
length (`QEfficient/transformers/cache_utils.py`, `QEfficient/customop/ctx_scatter_gather.py`), the boolean causal
mask built from `position_ids` (`QEfficient/transformers/modeling_attn_mask_utils.py`), the RMSNorm custom op
(`QEfficient/customop/rms_norm.py`) and the transforms that swap classes by exact type and then call
`__qeff_init__` (`QEfficient/base/pytorch_transforms.py`). Nothing here exports to ONNX.
"""
