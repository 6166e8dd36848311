"""Parsers and exports cannot crash: fed arbitrary text and arrays, they succeed or raise a ValueError that names
the input, never another exception, never a hang (hypothesis, each example under a deadline)."""
import json

import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from difftrack_pack.ditcorr.points import parse_points, tracks_to_csv, tracks_to_json, tracks_to_npz
from difftrack_pack.ditcorr.selection import parse_indices

FAST = settings(max_examples=300, deadline=500)  # ms per example: a parser that hangs fails here
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("xyt"), inner),
                           max_leaves=12)
point_like = st.one_of(st.text(), json_values.map(json.dumps),
                       st.lists(st.fixed_dictionaries({"x": json_values, "y": json_values}), max_size=3).map(json.dumps),
                       st.text(alphabet="[]{},:-0123456789.xyt\" eE", max_size=40))


@FAST
@given(point_like)
def test_points_parser_returns_finite_points_or_a_value_error_about_points(text):
    try:
        points = parse_points(text)
    except ValueError as error:
        assert "oint" in str(error)  # "points" / "Point 3 ..." / "No points given"
        return
    assert points.ndim == 2 and points.shape[1] == 3 and points.shape[0] >= 1 and torch.isfinite(points).all()


def test_points_parser_known_failures_name_the_problem():
    for text, words in [("[[1e400, 2]]", "Point 0 ([Infinity, 2]) has a coordinate that is not a finite number"),
                        ('[{"x": NaN, "y": 1}]', "not a finite number"),
                        ('[{"x": 0, "y": 1000E36}]', "too large"),  # finite in Python, inf as float32 (found by hypothesis)
                        ("[" * 5000 + "]" * 5000, "nested too deeply")]:
        try:
            parse_points(text)
        except ValueError as error:
            assert words in str(error), (text[:20], str(error))
        else:
            raise AssertionError(f"{text[:20]!r} was accepted")


@FAST
@given(st.one_of(st.text(), st.text(alphabet="0123456789-, ", max_size=30)), st.sampled_from(["block", "step"]))
def test_index_parser_returns_sorted_indices_or_a_value_error_naming_what(text, what):
    try:
        indices = parse_indices(text, what)
    except ValueError as error:
        assert what in str(error)
        return
    assert indices == sorted(set(indices)) and all(0 <= i <= 100_000 for i in indices)


def test_a_huge_range_is_refused_at_once_not_enumerated():
    for text in ("0-99999999999", "123456789"):
        try:
            parse_indices(text, "step")
        except ValueError as error:
            assert "too large" in str(error) and "step" in str(error)
        else:
            raise AssertionError(text)


shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
float_arrays = st.one_of(arrays("float32", shapes, elements=st.floats(width=32)), arrays("float64", shapes))


@FAST
@given(float_arrays, st.one_of(arrays("bool", shapes), arrays("float32", shapes, elements=st.floats(0, 1, width=32))))
def test_track_exports_succeed_or_raise_a_value_error_about_tracks(path, visible):
    path, visible = torch.from_numpy(path), torch.from_numpy(visible)
    for export in (lambda: tracks_to_json(path), lambda: tracks_to_npz(path, visible),
                   lambda: tracks_to_csv(path, visible)):
        try:
            out = export()
        except ValueError as error:
            assert "Track" in str(error)
        else:
            assert out is not None and path.ndim == 3 and path.shape[2] == 2 and torch.isfinite(path).all()
