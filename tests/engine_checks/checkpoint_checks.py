"""Checks of the tiny checkpoint that need a stack's own loader, run inside a host env.

Called through ``engine_driver.py``'s ``call`` step. transformers loads a checkpoint that lacks
tensors without failing (it initialises them at random and logs a warning), so the engine's
successful load alone would not prove the tiny checkpoint matches the real architecture.
"""

from __future__ import annotations

from typing import Any


def legacy_loading_info(ref: str) -> dict[str, Any]:
    """transformers' own account of which tensors a load of ``ref`` missed, ignored or reshaped."""
    import qwen_asr  # noqa: F401  (registers the qwen3_asr model type with transformers)
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(ref, output_loading_info=True)
    tied = (
        model.thinker.lm_head.weight.data_ptr()
        == model.thinker.model.embed_tokens.weight.data_ptr()
    )
    return {key: sorted(map(str, value)) for key, value in info.items()} | {"lm_head_tied": tied}
