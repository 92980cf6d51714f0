"""Checkpoint loading: path conventions, prefixes, strictness and every error message."""
import pytest
import torch

from lxrt.loading import CheckpointError, convert_answer, load_finetuned, \
    load_pretrained_encoder, read_state_dict, resolve_pretrained_path, to_authors_layout
from lxrt.modeling import LXRTEncoder
from parity_utils import CHECKPOINT, small_config
from tasks.qa.model import QAModel


@pytest.fixture()
def authors_checkpoint():
    return torch.load(CHECKPOINT, weights_only=True)


def _save(state, path):
    torch.save(state, path)
    return path


def test_prefix_convention_and_readme_file_name(tmp_path, authors_checkpoint):
    _save(authors_checkpoint, tmp_path / "model_LXRT.pth")
    assert resolve_pretrained_path(tmp_path / "model") == tmp_path / "model_LXRT.pth"
    readme = _save(authors_checkpoint, tmp_path / "mode_LXRT.bin")
    assert resolve_pretrained_path(readme) == readme
    (tmp_path / "model_LXRT.pth").unlink()
    assert resolve_pretrained_path(tmp_path / "model") == readme  # data/model -> mode_LXRT.bin


def test_missing_file_names_the_paths_tried_and_the_source(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_pretrained_encoder(LXRTEncoder(small_config()), tmp_path / "model")
    message = str(err.value)
    assert str(tmp_path / "model_LXRT.pth") in message and "mode_LXRT.bin" in message
    assert "LXMERT-S" in message


def test_with_and_without_module_prefix(tmp_path, authors_checkpoint):
    plain = {k[len("module."):]: v for k, v in authors_checkpoint.items()}
    for name, state in (("a", authors_checkpoint), ("b", plain)):
        encoder = LXRTEncoder(small_config())
        report = load_pretrained_encoder(encoder, _save(state, tmp_path / f"{name}_LXRT.pth"))
        assert len(report.loaded) == len(encoder.bert.state_dict())
        torch.testing.assert_close(encoder.bert.visual_cls_feat,
                                   plain["bert.word_embeddings.weight"][101])


def test_not_a_state_dict(tmp_path):
    path = _save([1, 2, 3], tmp_path / "x_LXRT.pth")
    with pytest.raises(CheckpointError, match="expected a state dict"):
        read_state_dict(path)


def test_truncated_and_corrupt_files(tmp_path, authors_checkpoint):
    data = CHECKPOINT.read_bytes()
    truncated = tmp_path / "t_LXRT.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_pretrained_encoder(LXRTEncoder(small_config()), truncated)
    garbage = tmp_path / "g_LXRT.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=str(garbage)):
        read_state_dict(garbage)


def test_missing_keys_are_listed(tmp_path, authors_checkpoint):
    state = dict(authors_checkpoint)
    del state["module.bert.pooler_f.dense.weight"]
    path = _save(state, tmp_path / "m_LXRT.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): pooler_f.dense.weight"):
        load_pretrained_encoder(LXRTEncoder(small_config()), path)


def test_unexpected_keys_are_listed(tmp_path, authors_checkpoint):
    state = dict(authors_checkpoint)
    state["module.bert.encoder.extra.weight"] = torch.zeros(2)
    state["module.something_else.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match="something_else.weight"):
        load_pretrained_encoder(LXRTEncoder(small_config()), _save(state, tmp_path / "u_LXRT.pth"))
    del state["module.something_else.weight"]
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): encoder.extra.weight"):
        load_pretrained_encoder(LXRTEncoder(small_config()), _save(state, tmp_path / "v_LXRT.pth"))


def test_shape_mismatch_names_key_expected_and_found(tmp_path, authors_checkpoint):
    state = dict(authors_checkpoint)
    state["module.bert.pooler.dense.bias"] = torch.zeros(65)
    with pytest.raises(CheckpointError,
                       match=r"shape mismatch for pooler.dense.bias: expected \[64\], found \[65\]"):
        load_pretrained_encoder(LXRTEncoder(small_config()), _save(state, tmp_path / "s_LXRT.pth"))


def test_finetuned_checkpoint_in_the_authors_layout_with_data_parallel(tmp_path):
    config = small_config()
    trained = QAModel(config, num_answers=5)
    authors = to_authors_layout(trained.state_dict(), config)
    # --multiGPU wrapped the encoder: lxrt_encoder.model.module.bert.*
    authors = {k.replace("lxrt_encoder.model.", "lxrt_encoder.model.module."): v
               for k, v in authors.items()}
    _save(authors, tmp_path / "BEST.pth")
    fresh = QAModel(config, num_answers=5)
    load_finetuned(fresh, tmp_path / "BEST", config)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)
    with pytest.raises(FileNotFoundError, match="LAST.pth"):
        load_finetuned(fresh, tmp_path / "LAST", config)
    with pytest.raises(CheckpointError, match="shape mismatch for logit_fc.3.weight"):
        load_finetuned(QAModel(config, num_answers=6), tmp_path / "BEST", config)


@pytest.mark.parametrize("raw, converted", [
    ("A Dog.", "dog"), ("grey", "gray"), ("The Man", "man"), ("two", "2"), ("an apple", "apple"),
    ("", ""), ("a woman", "woman"), ("yes", "yes")])
def test_answer_normalisation(raw, converted):
    assert convert_answer(raw) == converted
