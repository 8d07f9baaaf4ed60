"""One-line causes for model-load failures, shared by every engine.

Host-side: runs inside the host envs, where huggingface-hub is 1.x in one and 0.x in the other.
Both spell these exception classes the same way; they are imported lazily so this module costs
nothing to import where huggingface-hub is absent (the synthetic engine).
"""

from __future__ import annotations

import logging

from orchestrator.host.engine import ModelSpec
from orchestrator.wire.errors import BadRequestError, ModelUnavailableError

logger = logging.getLogger(__name__)

#: Library messages can be pages long; a cause longer than this is cut.
MAX_CAUSE_CHARS = 300


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (libraries spread the useful part over several)."""
    text = " ".join(str(exc).split())
    if not text:
        return repr(exc)
    return text if len(text) <= MAX_CAUSE_CHARS else text[: MAX_CAUSE_CHARS - 3] + "..."


def describe_load_error(exc: BaseException) -> str:
    """Why a model could not be loaded, in terms a config's author can act on."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            return "not in the local Hugging Face cache and HF_HUB_OFFLINE=1 (pre-fetch it or go online)"
        cause = exc.__cause__ or exc.__context__
        reason = f"{type(cause).__name__}: {one_line(cause)}" if cause else one_line(exc)
        return f"not in the local Hugging Face cache and the hub is unreachable ({reason})"
    if isinstance(exc, GatedRepoError | RepositoryNotFoundError | RevisionNotFoundError):
        return f"hub refused it ({type(exc).__name__}): {one_line(exc)}"
    if isinstance(exc, FileNotFoundError):
        text = str(exc)
        if text.startswith("local path"):
            return text
        if "Local path not found" in text:
            return "local path does not exist"
    return f"{type(exc).__name__}: {one_line(exc)}"


def load_failure(spec: ModelSpec, exc: BaseException) -> ModelUnavailableError:
    """The typed error for a model whose loader raised: one line for the caller, the traceback
    for the debug log."""
    logger.debug("loading %s from %s failed", spec.name, spec.ref, exc_info=exc)
    return ModelUnavailableError(
        f"model {spec.name!r} ({spec.ref}): {describe_load_error(exc)}",
        model=spec.name,
        ref=spec.ref,
    )


def bad_model_options(spec: ModelSpec, exc: BadRequestError) -> ModelUnavailableError:
    """A model whose configured request defaults (``model_options``) no request could use: the
    model is unavailable, named, rather than every later request refused for the config's fault."""
    return ModelUnavailableError(f"model {spec.name!r}: {exc.message}", model=spec.name)
