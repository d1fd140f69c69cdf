"""Composition rules, validation errors, preview and caching."""

from __future__ import annotations

from datetime import date

import pytest

from prompts import (
    InvalidLayers,
    Layer,
    LayerKind,
    PromptComposer,
    PromptVariables,
    RenderFailed,
    SectionMode,
    TemplateInvalid,
)

DAY = date(2026, 1, 2)
G = LayerKind.GLOBAL
ORG = LayerKind.ORGANIZATION
U = LayerKind.USER
S = LayerKind.SESSION


def layer(kind: LayerKind, source: str, version: str = "1") -> Layer:
    return Layer(kind, f"{kind.name.lower()}-id", version, source)


def compose(*layers: Layer, **session: object) -> str:
    composer = PromptComposer(clock=lambda: DAY)
    return composer.compose(list(layers), PromptVariables(session=session)).text


def test_append_replace_and_new_sections_in_declaration_order() -> None:
    text = compose(
        layer(G, "@section a\nA1\n@section b\nB1"),
        layer(ORG, "@section c\nC2\n@section a append\nA2"),
        layer(U, "@section b replace\nB3"),
        layer(S, "@section a\nA4"),
    )
    assert text == "A1\nA2\nA4\n\nB3\n\nC2"


def test_order_does_not_depend_on_argument_order() -> None:
    layers = [layer(G, "@section a\nG"), layer(ORG, "@section a\nO"), layer(S, "@section a\nS")]
    assert compose(*layers) == compose(*reversed(layers)) == "G\nO\nS"


def test_missing_layers_are_fine() -> None:
    assert compose() == ""
    assert compose(layer(U, "just text")) == "just text"
    assert compose(layer(S, "{{ session.x }}", "2"), x=1) == "1"


def test_text_before_first_header_is_the_main_section() -> None:
    text = compose(layer(G, "intro\n@section a\nA"), layer(ORG, "@section main replace\nnew intro"))
    assert text == "new intro\n\nA"


def test_lock_applies_to_append_and_later_layers_only() -> None:
    text = compose(
        layer(G, "@section a\nG"),
        layer(ORG, "@section a append locked\nO"),
        layer(U, "@section a\nU"),
    )
    assert text == "G\nO"


def test_two_layers_of_one_kind_are_refused() -> None:
    with pytest.raises(InvalidLayers):
        compose(layer(G, "a"), layer(G, "b", "2"))


def test_variables_and_date_are_available() -> None:
    composer = PromptComposer(clock=lambda: DAY, block_ids=lambda: "ID")
    source = "{{ org.name }}|{{ user.role }}|{{ session.n }}|{{ today }}|{{ today.year }}"
    variables = PromptVariables(org={"name": "Acme"}, user={"role": "dev"}, session={"n": 3})
    text = composer.compose([layer(G, source)], variables).text
    assert text == (
        '<user_data id="ID">Acme</user_data id="ID">|<user_data id="ID">dev</user_data id="ID">'
        "|3|2026-01-02|2026"
    )


def test_undefined_variable_is_an_error_with_its_line() -> None:
    with pytest.raises(RenderFailed) as caught:
        compose(layer(G, "@section a\nfine\n{{ user.missing }}"))
    assert caught.value.line == 3


# Validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ("@section a\nok\n  {% if %}", 3, 3),
        ("@section a\n{{ 1 + }}", 2, 1),
        ("x\n@section Bad!", 2, 10),
        ("@section a sideways", 1, 12),
        ("@section a\n@section a", 2, 10),
        ("text\n   @section a", 2, 4),
        ("@section a\n\n{{ x|nosuchfilter }}", 3, 6),
        ("@section a\n{% for x in y %}", 2, 4),
    ],
)
def test_validation_errors_carry_line_and_column(source: str, line: int, column: int) -> None:
    with pytest.raises(TemplateInvalid) as caught:
        PromptComposer().validate(source, kind=G)
    assert (caught.value.line, caught.value.column) == (line, column), caught.value


def test_validation_refuses_oversized_source() -> None:
    with pytest.raises(TemplateInvalid, match="exceeds"):
        PromptComposer().validate("x" * 40_000, kind=G)


def test_validation_returns_the_sections() -> None:
    specs = PromptComposer().validate("@section a replace locked\nx\n@section b\ny", kind=U)
    assert [(s.name, s.mode, s.locked, s.line) for s in specs] == [
        ("a", SectionMode.REPLACE, True, 1),
        ("b", SectionMode.APPEND, False, 3),
    ]


# Preview ------------------------------------------------------------------------------------


def test_preview_renders_unsaved_text_in_place_of_its_layer() -> None:
    composer = PromptComposer(clock=lambda: DAY, block_ids=lambda: "ID")
    saved = [layer(G, "@section a\nG"), layer(U, "@section a\nsaved user")]
    result = composer.preview("@section a\nHi {{ user.name }}", kind=U, layers=saved)
    assert result.text == 'G\nHi <user_data id="ID">Sample User</user_data id="ID">'
    assert result.layers[1].version == "unsaved"
    assert composer.stats.composed_misses == 0  # nothing looked up or stored


def test_preview_reports_errors_like_validation() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        PromptComposer().preview("a\n{{ oops", kind=S)
    assert caught.value.line == 2


# Caching ------------------------------------------------------------------------------------


def test_compiled_templates_are_cached_by_layer_version() -> None:
    composer = PromptComposer(clock=lambda: DAY)
    g1 = layer(G, "{{ session.n }}")
    for n in range(5):
        composer.compose([g1], PromptVariables(session={"n": n}))
    assert composer.stats.compilations == 1 and composer.stats.renders == 5
    composer.compose([layer(G, "new {{ session.n }}", "2")], PromptVariables(session={"n": 0}))
    assert composer.stats.compilations == 2


def test_composed_prompt_is_cached_by_versions_variables_and_date() -> None:
    today = [DAY]
    composer = PromptComposer(clock=lambda: today[0])
    layers = [layer(G, "{{ today }} {{ session.n }}")]
    first = composer.compose(layers, PromptVariables(session={"n": 1}))
    assert composer.compose(layers, PromptVariables(session={"n": 1})) is first
    assert composer.stats.renders == 1
    assert composer.compose(layers, PromptVariables(session={"n": 2})) is not first
    today[0] = date(2026, 1, 3)
    assert composer.compose(layers, PromptVariables(session={"n": 1})).text.startswith("2026-01-03")
    assert composer.stats.renders == 3


def test_invalid_layer_is_compiled_once_and_fails_every_time() -> None:
    composer = PromptComposer(clock=lambda: DAY)
    broken = layer(G, "{% if %}")
    for _ in range(3):
        with pytest.raises(TemplateInvalid):
            composer.compose([broken], PromptVariables())
    assert composer.stats.compilations == 1


def test_caches_are_bounded() -> None:
    composer = PromptComposer(clock=lambda: DAY, compiled_cache_size=2, composed_cache_size=2)
    for version in "123":
        composer.compose([layer(G, "x", version)], PromptVariables())
    composer.compose([layer(G, "x", "1")], PromptVariables())
    assert composer.stats.compilations == 4
