"""The transforms that swap a model's classes for their QEfficient versions: by exact type, then `__qeff_init__`."""

from torch import nn


class ModuleMappingTransform:
    _module_mapping: dict[type[nn.Module], type[nn.Module]]

    def __init__(self) -> None:
        raise TypeError("Transform classes are not to be instantiated. Directly use the `apply` method.")

    @classmethod
    def apply(cls, model: nn.Module) -> tuple[nn.Module, bool]:
        transformed = False
        for module in model.modules():
            if replacement := cls._module_mapping.get(type(module)):
                module.__class__ = replacement
                if hasattr(module, "__qeff_init__"):
                    module.__qeff_init__()
                transformed = True
        return model, transformed

    @classmethod
    def register(cls, from_module: type[nn.Module], to_module: type[nn.Module]) -> None:
        cls._module_mapping[from_module] = to_module


class CustomOpsTransform(ModuleMappingTransform):
    _module_mapping = {}


class KVCacheTransform(ModuleMappingTransform):
    _module_mapping = {}
