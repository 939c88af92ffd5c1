"""Hypothesis strategies for hostile JSON: documents shaped like a real payload whose leaves may be
anything a signed-but-broken sender could put there — huge and negative integers, floats, lone
surrogates, NUL and control characters, long strings, wrong types, and nesting deeper than any parser
follows — encoded as bytes (:func:`encode`), since some of it (a 5,000-deep array, a 5,000-digit
number) cannot be built as a Python value and dumped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

FICTIONAL_WA_IDS = [f"12015550{n:03d}" for n in range(100, 120)]  # +1 201-555-01xx, fictional


@dataclass(frozen=True)
class Raw:
    """JSON text put into a document as it is (valid JSON or not)."""

    text: str


def encode(value: Any) -> bytes:
    """``value`` as JSON bytes, :class:`Raw` parts verbatim; lone surrogates as ``\\udxxx`` escapes."""
    def text(node: Any) -> str:
        if isinstance(node, Raw):
            return node.text
        if isinstance(node, dict):
            return "{" + ",".join(f"{json.dumps(str(key))}:{text(item)}" for key, item in node.items()) + "}"
        if isinstance(node, list):
            return "[" + ",".join(text(item) for item in node) + "]"
        return json.dumps(node)
    return text(value).encode("utf-8", "surrogatepass")


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
hostile_text = st.one_of(
    st.text(max_size=30),
    st.text(st.one_of(st.characters(), surrogates, st.sampled_from("\x00\n\r\t\x7f\u2028")), max_size=30),
)
long_text = st.builds(lambda char, size: char * size, st.characters(), st.integers(1_000, 60_000))
huge_ints = st.one_of(st.integers(), st.sampled_from([2**31, 2**63, 2**64, -(2**63) - 1, 10**30, -1, 0]))
odd_numbers = st.sampled_from([Raw("1e999"), Raw("-1e999"), Raw("NaN"), Raw("Infinity"), Raw("1.5"), Raw("-0")])
deep = st.integers(1_000, 20_000).flatmap(lambda depth: st.sampled_from([
    Raw("[" * depth + "]" * depth), Raw('{"a":' * depth + "1" + "}" * depth), Raw("[" * depth),
    Raw("1" * depth)]))  # over Python's 4,300-digit limit for int()
scalars = st.one_of(st.none(), st.booleans(), huge_ints, st.floats(allow_nan=False), hostile_text, long_text)
wrong_types = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=6)
# Deep nesting (and a 5,000-digit number) is not among the leaves: one anywhere refuses the whole body
# (400), hiding the rest; with_deep_part puts it in one draw in ten.
hostile_leaf = st.one_of(wrong_types, wrong_types, odd_numbers)


def often(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int) -> st.SearchStrategy[Any]:
    """``usual``, and about one draw in ``odds`` ``rare`` (``one_of`` would pick either branch alike)."""
    return st.sampled_from([False] * (odds - 1) + [True]).flatmap(lambda pick: rare if pick else usual)


def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the good value, one draw in eight a hostile one (so most documents get past their envelope)."""
    return often(good, hostile_leaf, 8)


def shaped(required: dict[str, st.SearchStrategy[Any]],
           optional: dict[str, st.SearchStrategy[Any]] | None = None) -> st.SearchStrategy[Any]:
    """An object with these fields (each maybe hostile), sometimes an extra one, sometimes not an object."""
    document = st.fixed_dictionaries({key: field(value) for key, value in required.items()},
                                      optional={**{key: field(value) for key, value in (optional or {}).items()},
                                                "unexpected": hostile_leaf})
    return often(document, hostile_leaf, 12)


def with_deep_part(document: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The document, or (one draw in ten) a deep nesting in place of it or of its last key."""
    nested = st.tuples(document, deep).map(lambda pair: {**pair[0], "deep": pair[1]} if isinstance(pair[0], dict)
                                           else pair[1])
    return often(document, nested, 10)


def some(item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(item, min_size=1, max_size=3)
