import pytest

from difftrack_pack.ditcorr import parse_indices


def test_forms():
    assert parse_indices("15") == [15]
    assert parse_indices(" 13, 17 ,21") == [13, 17, 21]
    assert parse_indices("10-12, 3") == [3, 10, 11, 12]
    assert parse_indices("") == []


@pytest.mark.parametrize("text, message", [("a", "Cannot read block 'a'"), ("5-3", "backwards"), ("1;2", "Cannot read")])
def test_errors_name_the_part(text, message):
    with pytest.raises(ValueError, match=message):
        parse_indices(text, "block")
