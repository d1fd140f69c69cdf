"""Hierarchical system-prompt composition in a sandboxed Jinja2 environment.

Layers (global → organisation → user → session) are templates made of named sections
(:mod:`prompts.sections` documents the syntax, :mod:`prompts.layering` the rules). Variables
are plain data and every value a template prints is cleaned and fenced into a data block
(:mod:`prompts.sanitize`). Rendering is sandboxed and bounded (:mod:`prompts.sandbox`,
:mod:`prompts.limits`). Validation refuses text that would not compose for a caller with only
the guaranteed variables (:mod:`prompts.guarantees`). Plain arguments in, values out: no I/O,
no environment, no clock except the one passed in.

    composer = PromptComposer()
    composer.validate(source, kind=LayerKind.USER, above=[global_layer, org_layer])
    result = composer.compose([global_layer, org_layer, user_layer], PromptVariables(...))
    result.text, result.layers
"""

from prompts.composer import SAMPLE_VARIABLES, ComposerStats, PromptComposer, utc_today
from prompts.errors import (
    InvalidLayers,
    InvalidVariables,
    NotGuaranteed,
    PromptError,
    RenderFailed,
    RenderLimitExceeded,
    SectionLocked,
    TemplateInvalid,
    UnsafeTemplate,
)
from prompts.limits import RenderLimits
from prompts.model import (
    ComposedPrompt,
    Layer,
    LayerKind,
    LayerRef,
    PromptVariables,
    SectionMode,
    SectionSpec,
    SkippedOverride,
)
from prompts.sanitize import DATA_TAG

__all__ = [
    "DATA_TAG",
    "SAMPLE_VARIABLES",
    "ComposedPrompt",
    "ComposerStats",
    "InvalidLayers",
    "InvalidVariables",
    "Layer",
    "LayerKind",
    "LayerRef",
    "NotGuaranteed",
    "PromptComposer",
    "PromptError",
    "PromptVariables",
    "RenderFailed",
    "RenderLimitExceeded",
    "RenderLimits",
    "SectionLocked",
    "SectionMode",
    "SectionSpec",
    "SkippedOverride",
    "TemplateInvalid",
    "UnsafeTemplate",
    "utc_today",
]
