"""Motion embeddings: the position tables' arithmetic against the pairs written out, the identity's exactness, the
file round trip and the refusals."""
from __future__ import annotations

import pytest
import safetensors.torch
import torch

from difftrack_pack.ditcorr.motion_embeddings import MotionEmbeddings, identity_table, modulate


def test_modulation_multiplies_each_channel_pair_by_its_tokens_matrix():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, generator=generator)  # [B, H, L, D]
    table = torch.randn(5, 4, 2, 2, generator=generator)
    expected = torch.empty_like(x)
    for token in range(5):
        for pair in range(4):
            x0, x1 = x[:, :, token, 2 * pair], x[:, :, token, 2 * pair + 1]
            m = table[token, pair]
            expected[:, :, token, 2 * pair] = m[0, 0] * x0 + m[0, 1] * x1
            expected[:, :, token, 2 * pair + 1] = m[1, 0] * x0 + m[1, 1] * x1
    torch.testing.assert_close(modulate(x, table), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_identity_table_leaves_queries_exactly_as_they_are(dtype):
    x = torch.randn(1, 2, 6, 16).to(dtype)
    out = modulate(x, identity_table(6, 16))
    assert out.dtype == dtype and torch.equal(out, x)


def test_a_head_of_odd_size_has_no_pairs():
    with pytest.raises(ValueError, match="no pairs"):
        identity_table(4, 7)


def embeddings(steps: int = 2) -> MotionEmbeddings:
    generator = torch.Generator().manual_seed(1)
    tables = [(torch.randn(12, 4, 2, 2, generator=generator), torch.randn(12, 4, 2, 2, generator=generator))
              for _ in range(steps)]
    return MotionEmbeddings(tables, (3, 2, 2), 8, "Wan 2.1/2.2")


def test_embeddings_round_trip_through_a_file(tmp_path):
    saved = embeddings()
    saved.to_file(str(tmp_path / "motion.safetensors"))
    loaded = MotionEmbeddings.from_file(str(tmp_path / "motion.safetensors"))
    assert (loaded.grid, loaded.head_dim, loaded.model) == (saved.grid, saved.head_dim, saved.model)
    assert len(loaded.tables) == 2
    for (q, k), (q_saved, k_saved) in zip(loaded.tables, saved.tables):
        assert torch.equal(q, q_saved) and torch.equal(k, k_saved)
    assert loaded.table_for(1) is not None and loaded.table_for(2) is None  # later steps: the model's own positions


def test_a_file_without_embeddings_is_refused(tmp_path):
    safetensors.torch.save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="holds no motion embeddings"):
        MotionEmbeddings.from_file(str(tmp_path / "other.safetensors"))


def test_embeddings_for_another_model_or_size_are_refused():
    saved = embeddings()
    saved.check_fits("Wan 2.1/2.2", (3, 2, 2), 8)  # the same: accepted
    with pytest.raises(ValueError, match="learned on a Wan 2.1/2.2 model with heads of 8 channels"):
        saved.check_fits("Wan 2.1/2.2", (3, 2, 2), 128)
    with pytest.raises(ValueError, match="learned on a Wan"):
        saved.check_fits("LTXV", (3, 2, 2), 8)
    with pytest.raises(ValueError, match="generate at the size and length they were learned at"):
        saved.check_fits("Wan 2.1/2.2", (5, 2, 2), 8)
