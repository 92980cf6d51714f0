"""Parity of butd's detector with Hugging Face's PyTorch port of the same Faster R-CNN (the
LXMERT demo's modeling_frcnn.py), both on the same seeded random weights and pictures; the
reference numbers are in tests/fixtures/butd_parity.npz (see tests/fixtures/README.md)."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from butd import BUTDDetector, prepare_image, select_regions
from conftest import FIXTURES
from detector_helpers import (FULL_WIDTH_CONFIG, PARITY_SEED, TINY_CONFIG, parity_images,
                              random_state)

REFERENCE = FIXTURES / "butd_parity.npz"
CASES = [("tiny", TINY_CONFIG, 0), ("tiny", TINY_CONFIG, 1), ("tiny", TINY_CONFIG, 2),
         ("full", FULL_WIDTH_CONFIG, 0)]


@functools.lru_cache(maxsize=None)
def _detector(tag: str) -> BUTDDetector:
    config = TINY_CONFIG if tag == "tiny" else FULL_WIDTH_CONFIG
    # the reference ran all regions through res5 at once; here 64 at a time, or 5 at a time
    model = BUTDDetector(config, ops_backend="torch", region_chunk=64 if tag == "tiny" else 5)
    model.load_state_dict(random_state(config, PARITY_SEED))
    return model.eval()


@functools.lru_cache(maxsize=None)
def _reference() -> dict:
    with np.load(REFERENCE) as z:
        assert int(z["seed"]) == PARITY_SEED
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("tag,config,index", CASES, ids=[f"{t}-{i}" for t, _, i in CASES])
def test_detector_matches_the_reference_port(tag, config, index):
    ref = {k[len(f"{tag}_img{index}_"):]: v for k, v in _reference().items()
           if k.startswith(f"{tag}_img{index}_")}
    picture = parity_images()[index]
    prepared = prepare_image(picture, config)
    assert prepared.size == tuple(ref["size"]) and prepared.original_size == picture.shape[:2]
    output = _detector(tag)(prepared.tensor)
    regions = select_regions(output, prepared.original_size, config, backend="torch")

    # the region proposals: same boxes in the same order, same objectness
    assert output.proposals.shape == ref["proposals"].shape
    np.testing.assert_allclose(output.proposals.numpy(), ref["proposals"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(output.proposal_logits.numpy(), ref["proposal_logits"],
                               rtol=1e-4, atol=1e-4)
    # every proposal's feature, by its norm
    np.testing.assert_allclose(output.features.norm(dim=1).numpy(), ref["all_feature_norms"],
                               rtol=1e-4)
    # the selected regions: the same proposals, classes and attributes, in the same order
    assert regions.proposal_index.tolist() == ref["kept"].tolist()
    assert regions.object_ids.tolist() == ref["object_ids"].tolist()
    assert regions.attr_ids.tolist() == ref["attr_ids"].tolist()
    np.testing.assert_allclose(regions.boxes.numpy(), ref["boxes"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(regions.object_conf.numpy(), ref["object_conf"], rtol=1e-4)
    np.testing.assert_allclose(regions.attr_conf.numpy(), ref["attr_conf"], rtol=1e-4)
    # features within 1e-4 relative
    np.testing.assert_allclose(regions.features.norm(dim=1).numpy(), ref["feature_norms"],
                               rtol=1e-4)
    sliced = regions.features[:, :ref["feature_slice"].shape[1]].numpy()
    scale = np.abs(ref["feature_slice"]).max()
    assert np.abs(sliced - ref["feature_slice"]).max() <= 1e-4 * scale
    assert regions.features.shape == (config.num_regions, config.res5_channels)

