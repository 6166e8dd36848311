import pytest

from difftrack_pack.ditcorr import plan_chunks


@pytest.mark.parametrize("frames", [1, 5, 13, 14, 25, 30, 49, 81, 200])
@pytest.mark.parametrize("reference", [0, "last"])
def test_every_frame_covered_reference_first_equal_sizes(frames, reference):
    reference = frames - 1 if reference == "last" else reference
    chunks = plan_chunks(frames, 13, reference)
    assert {f for chunk in chunks for f in chunk} == set(range(frames))
    assert all(chunk[0] == reference and chunk.count(reference) == 1 for chunk in chunks)
    assert len({len(chunk) for chunk in chunks}) == 1
    assert all(len(chunk) == min(13, frames) for chunk in chunks)
    assert all(chunk[1:] == sorted(chunk[1:]) and len(set(chunk)) == len(chunk) for chunk in chunks)


def test_strided_chunks_span_the_video():
    chunks = plan_chunks(49, 13)
    assert chunks[0] == [0, 1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45]
    assert len(chunks) == 4


def test_zero_means_one_chunk():
    assert plan_chunks(40, 0) == [list(range(40))]


@pytest.mark.parametrize("args, message", [((0,), "at least one frame"), ((5, 13, 5), "outside"), ((20, 1), "at least 2")])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        plan_chunks(*args)
