# Minimum value for causal mask
MIN_MASKED_ATTENTION_VALUE = float("-inf")
