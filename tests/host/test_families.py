"""Conformance of the family table (difftrack_devkit/families.py) with the adapters (nodes/adapters/)."""
import pytest

from difftrack_devkit.families import CASES, FAMILIES, missing_rows
from difftrack_devkit.models import random_model
from difftrack_pack.nodes.adapters import ADAPTERS, adapter_for


def test_every_adapter_has_a_family_row():
    assert missing_rows(ADAPTERS) == [], "add a row for it to devkit/families.py: tiny configs, q/k reference, sizes"
    assert set(FAMILIES) <= {type(adapter).__name__ for adapter in ADAPTERS}, "a row names no adapter"


def test_a_missing_row_is_caught():
    without_wan = {name: row for name, row in FAMILIES.items() if name != "WanAdapter"}
    assert missing_rows(ADAPTERS, without_wan) == ["WanAdapter"]


@pytest.mark.parametrize("case", list(CASES))
def test_each_tiny_case_is_handled_by_its_rows_adapter(case):
    diffusion_model = random_model(case).get_model_object("diffusion_model")
    assert type(adapter_for(diffusion_model)).__name__ == CASES[case].adapter
