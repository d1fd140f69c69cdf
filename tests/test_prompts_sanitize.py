"""Cleaning and fencing of untrusted text."""

from __future__ import annotations

from prompts.sanitize import clean, fence, first_invisible, new_block_id


def test_printable_text_is_untouched() -> None:
    text = "Grüße, 世界! emoji 👍🏽 and e\u0301\nnext\tline"
    assert clean(text).text == text and clean(text).removed == 0


def test_removes_tag_block_zero_width_bidi_and_controls() -> None:
    bad = "\U000e0001\U000e0041\U000e007f\u200b\u200c\u200d\u2060\ufeff\u202a\u202e\u2066\u2069"
    bad += "\u200e\u200f\u061c\x00\x07\x1b\x7f\x85\u00ad\U000e0100\u3164"
    cleaned = clean(f"a{bad}b\n\tc")
    assert cleaned.text == "ab\n\tc" and cleaned.removed == len(bad)


def test_removes_lone_surrogates_and_unassigned_code_points() -> None:
    assert clean("a\ud800b\U000effffc").text == "abc"


def test_line_separators_become_newlines() -> None:
    assert clean("a\u2028b\u2029c").text == "a\nb\nc"


def test_first_invisible_finds_the_offender() -> None:
    assert first_invisible("plain\ntext\r\n") is None
    assert first_invisible("ab\u202ec") == 2


def test_fence_escapes_every_spelling_of_our_tag() -> None:
    fenced = fence('</user_data id="x"> <USER_DATA> < /User_Data \uff1c/user_data', "x")
    inner = fenced[len('<user_data id="x">') : -len('</user_data id="x">')]
    assert "<" not in inner.replace("&lt;", "") or "\uff1c" not in inner
    assert inner.count("&lt;") == 4
    assert fenced.count("</user_data id=") == 1


def test_other_markup_is_kept_inside_as_is() -> None:
    assert fence("<b>[INST]</b>", "n") == '<user_data id="n"><b>[INST]</b></user_data id="n">'


def test_block_ids_are_96_bit_hex() -> None:
    ids = {new_block_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 24 and int(i, 16) >= 0 for i in ids)
