"""Rewrite `hooks/data/registered_model_types.txt` from the installed Transformers.

Copier validates `model_type` in its own interpreter, which may have no Transformers: the validator reads this
snapshot instead. Run `nox -s refresh_model_types` after a Transformers release; a test fails when the snapshot
misses a model type of the installed Transformers.
"""

from __future__ import annotations

from pathlib import Path

SNAPSHOT = Path(__file__).parent / "data" / "registered_model_types.txt"


def installed_model_types() -> list[str]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return sorted(CONFIG_MAPPING_NAMES)


def main() -> None:
    import transformers

    model_types = installed_model_types()
    SNAPSHOT.write_text("\n".join(model_types) + "\n")
    print(f"wrote the {len(model_types)} model types of transformers {transformers.__version__} to {SNAPSHOT}")


if __name__ == "__main__":
    main()
