"""tools.make_data: a complete generated data root in the real formats, with learnable signal."""
import json
import pickle

import numpy as np
import pytest

from tasks.common.paths import DataRoot
from tasks.qa.data import AnswerTable, load_qa_split
from tasks.nlvr2.data import load_nlvr2_split
from tasks.retrieval.data import load_flickr_annotations, load_hard_negatives
from tools.make_data import COLORS, OBJECTS, main, make_data

DIM = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "data"
    make_data(out, images=16, dim=DIM, seed=0)
    return out


def _tsv_rows(path):
    from tasks.common.features import iter_tsv
    return list(iter_tsv(path))


def test_layout_complete(root):
    """Every file is where LXMERT's layout puts it. The lookup falls back to other places (the
    authors' paths, shipped copies), so the found path itself is compared."""
    r = DataRoot(root)
    expected = {("vqa", "ans2label", None): "vqa/trainval_ans2label.json",
                ("gqa", "label2ans", None): "gqa/trainval_label2ans.json",
                ("retrieval", "hard_negatives", None): "flickr30k/hard_negative.pkl",
                ("pretrain", "answers", None): "lxmert/all_ans.json"}
    for split, stem in (("train", "train2014"), ("nominival", "val2014"),
                        ("minival", "val2014"), ("test", "test2015")):
        expected["vqa", "examples", split] = f"vqa/{split}.json"
        expected["vqa", "features", split] = f"mscoco_imgfeat/{stem}_obj36.tsv"
    for split in ("train", "valid", "testdev", "submit"):
        expected["gqa", "examples", split] = f"gqa/{split}.json"
        expected["gqa", "features", split] = ("vg_gqa_imgfeat/gqa_testdev_obj36.tsv"
                                              if split == "testdev" else
                                              "vg_gqa_imgfeat/vg_gqa_obj36.tsv")
    for split in ("train", "valid", "test"):
        expected["nlvr2", "examples", split] = f"nlvr2/{split}.json"
        expected["nlvr2", "features", split] = f"nlvr2_imgfeat/{split}_obj36.tsv"
    for split, stem in (("train", "train2014"), ("test", "test2014")):
        expected["retrieval", "annotations", split] = f"flickr30k/flickr30k_{stem}.json"
        expected["retrieval", "features", split] = f"flickr30k/flickr30k_{stem}.tsv"
    for name in ("mscoco_train", "mscoco_nominival", "mscoco_minival", "vgnococo"):
        expected["pretrain", "corpus", name] = f"lxmert/{name}.json"
    found = {key: r.path(*key).relative_to(root).as_posix() for key in expected}
    assert found == expected
    assert len(json.loads(r.path("pretrain", "answers").read_text())) == 9500
    # --small-model not given: no checkpoint
    assert not (root / "model_LXRT.pth").exists()


def test_vqa_files(root):
    r = DataRoot(root)
    table = AnswerTable.of(r, "vqa")
    train_ids = {row.img_id for row in _tsv_rows(r.path("vqa", "features", "train"))}
    val_ids = {row.img_id for row in _tsv_rows(r.path("vqa", "features", "minival"))}
    assert all(i.startswith("COCO_train2014_") and len(i) == len("COCO_train2014_") + 12
               for i in train_ids)
    qids = set()
    for split in ("train", "nominival", "minival", "test"):
        data = load_qa_split(r.path("vqa", "examples", split), require_label=split != "test")
        assert data
        feats = train_ids if split == "train" else val_ids if split != "test" else None
        for d in data:
            assert isinstance(d["question_id"], int)
            qids.add(d["question_id"])
            if feats is not None:
                assert d["img_id"] in feats
            if split == "test":
                assert "label" not in d
            else:
                assert all(a in table for a in d["label"])
    assert len(qids) == sum(len(load_qa_split(r.path("vqa", "examples", s)))
                            for s in ("train", "nominival", "minival", "test"))
    # minival and nominival use disjoint halves of val2014
    mini = {d["img_id"] for d in load_qa_split(r.path("vqa", "examples", "minival"))}
    nomi = {d["img_id"] for d in load_qa_split(r.path("vqa", "examples", "nominival"))}
    assert mini and nomi and not mini & nomi


def test_gqa_files(root):
    r = DataRoot(root)
    vg = {row.img_id for row in _tsv_rows(r.path("gqa", "features", "train"))}
    td = {row.img_id for row in _tsv_rows(r.path("gqa", "features", "testdev"))}
    assert r.path("gqa", "features", "submit") == r.path("gqa", "features", "valid") != r.path("gqa", "features", "testdev")
    for split, ids in (("train", vg), ("valid", vg), ("testdev", td), ("submit", vg)):
        data = load_qa_split(r.path("gqa", "examples", split), require_label=split != "submit")
        assert all(isinstance(d["question_id"], str) for d in data)
        assert all(d["img_id"] in ids for d in data)


def test_nlvr2_files(root):
    r = DataRoot(root)
    for split in ("train", "valid", "test"):
        ids = {row.img_id for row in _tsv_rows(r.path("nlvr2", "features", split))}
        data = load_nlvr2_split(r.path("nlvr2", "examples", split), require_label=True)
        groups = {}
        for d in data:
            assert d["img0"] in ids and d["img1"] in ids and d["img0"] != d["img1"]
            parts = d["identifier"].split("-")
            assert len(parts) == 4
            groups.setdefault("-".join(parts[:2]), []).append(d)
        assert all(len(g) > 1 for g in groups.values())  # several examples per sentence
        assert all(len({d["sent"] for d in g}) == 1 for g in groups.values())
        labels = [d["label"] for d in data]
        assert 0 < sum(labels) < len(labels)


def test_flickr_files(root):
    r = DataRoot(root)
    for split in ("train", "test"):
        ann = load_flickr_annotations(r.path("retrieval", "annotations", split))
        assert ann.captions_per_image == 5
        tsv_ids = [row.img_id for row in _tsv_rows(r.path("retrieval", "features", split))]
        assert tsv_ids == ann.img_paths  # TSV img_id == img_path, same order
    train = load_flickr_annotations(r.path("retrieval", "annotations", "train"))
    hn = load_hard_negatives(r.path("retrieval", "hard_negatives"))
    assert hn.train_image_list.tolist() == train.image_ids
    assert hn.column0_is_self and hn.pool_size >= 2
    hn.check_images(train.image_ids)


def test_features_carry_the_answer(root):
    """The image's colour is recoverable from its region features (learnable signal)."""
    r = DataRoot(root)
    rows = {row.img_id: row for row in _tsv_rows(r.path("vqa", "features", "train"))}
    data = load_qa_split(r.path("vqa", "examples", "train"))
    colour = {}
    for d in data:
        if d["sent"].startswith("What color"):
            colour[d["img_id"]] = max(d["label"], key=d["label"].get)
    assert len(set(colour.values())) > 1
    # nearest class mean on the summed features separates colours on the training images
    x = {i: rows[i].features.sum(0) for i in colour}
    means = {c: np.mean([x[i] for i in colour if colour[i] == c], axis=0) for c in COLORS
             if c in colour.values()}
    correct = sum(min(means, key=lambda c: np.linalg.norm(x[i] - means[c])) == colour[i]
                  for i in colour)
    assert correct / len(colour) > 0.9
    assert all(row.features.shape == (36, DIM) for row in rows.values())
    assert all(row.features.dtype == np.float32 for row in rows.values())


def test_answers_cover_generated_labels(tmp_path):
    make_data(tmp_path, images=8, dim=8, answers="full")
    for task, n in (("vqa", 3129), ("gqa", 1842)):
        table = AnswerTable.of(DataRoot(tmp_path), task)
        assert table.num_answers == n
    for a in COLORS + OBJECTS + ["yes", "no"]:
        assert a in table


def test_deterministic(tmp_path):
    make_data(tmp_path / "a", images=8, dim=8, seed=3)
    make_data(tmp_path / "b", images=8, dim=8, seed=3)
    for rel in ("vqa/train.json", "mscoco_imgfeat/train2014_obj36.tsv",
                "nlvr2/valid.json", "flickr30k/flickr30k_test2014.tsv"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    with open(tmp_path / "a/flickr30k/hard_negative.pkl", "rb") as f:
        a = pickle.load(f)
    with open(tmp_path / "b/flickr30k/hard_negative.pkl", "rb") as f:
        b = pickle.load(f)
    assert np.array_equal(a["train_hard_pool"], b["train_hard_pool"])


def test_cli_and_small_model(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("lxrt.modeling")
    from lxrt.config import LXRTConfig
    assert main([str(tmp_path), "--images", "8", "--dim", "16", "--small-model"]) == 0
    assert "wrote" in capsys.readouterr().out
    config = LXRTConfig.from_json_file(tmp_path / "bert_config.json")
    assert config.visual_feat_dim == 16 and config.vocab_size == 30522
    assert (config.l_layers, config.x_layers, config.r_layers) == (0, 5, 0)
    assert config.num_qa_labels == 9500
    state = torch.load(tmp_path / "model_LXRT.pth", map_location="cpu")
    assert all(k.startswith("module.") for k in state)
    assert state["module.bert.word_embeddings.weight"].shape == (30522, 16)
    assert state["module.answer_head.logit_fc.3.weight"].shape[0] == 9500
    assert "module.cls.seq_relationship.weight" in state


def test_cli_rejects_bad_args(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--images", "2"])


def test_a_registered_task_generates_its_files_on_the_written_images(tmp_path):
    """A task's registry entry may give `generate`: make_data calls it with the images it
    wrote (ids and latent attributes per feature file), so a new task's data come from its
    own folder."""
    import dataclasses

    from tasks.common import registry
    seen = {}

    def generate(images, root, summary):
        seen.update(images.files)
        img_id, attrs = images.files["flickr30k/flickr30k_test2014.tsv"][0]
        (root / "made_by_a_task.txt").write_text(f"{img_id} {' '.join(images.words(attrs))}")
        summary["made_by_a_task.txt"] = 1

    entry = dataclasses.replace(registry.get("nlvr2"), name="generating", generate=generate)
    registry.register(entry)
    try:
        summary = make_data(tmp_path, images=8, dim=8)
    finally:
        registry.unregister("generating")
    assert summary["made_by_a_task.txt"] == 1
    assert {"mscoco_imgfeat/train2014_obj36.tsv", "vg_gqa_imgfeat/vg_gqa_obj36.tsv",
            "flickr30k/flickr30k_train2014.tsv"} <= set(seen)
    ids = [row.img_id for row in _tsv_rows(tmp_path / "flickr30k" / "flickr30k_test2014.tsv")]
    written = (tmp_path / "made_by_a_task.txt").read_text().split()
    assert written[0] == ids[0] and written[1] in COLORS and written[2] in OBJECTS
    assert [i for i, _ in seen["flickr30k/flickr30k_test2014.tsv"]] == ids
