"""A fine-tuned run as a Python object: answer questions, verify or classify statements about
images, rank images for a caption, and read the attention maps behind an answer.

    from tools.predictor import Predictor
    p = Predictor.from_run("snap/easyvqa/easyvqa/BEST", device="cpu")
    image = p.image_from_file("shape.png")          # or p.image_from_features(tsv, img_id)
    p.answer(image, ["What color is the shape?"])   # -> [[("red", 0.998), ("blue", 0.001), ...]]

Everything the model needs besides the weights comes from the run's `run_info.json` (written
next to BEST.pth/LAST.pth): the task, the model sizes, the vocabulary, the answer table and the
feature files, whose `.extractor.npz` record says how a new image file is described. The task's
registry entry says how its model is built and questioned (`predict`: answers, verify,
classify or rank).

Probabilities. VQA/GQA heads are trained with a sigmoid (BCE) per answer, so the faithful
number is each answer's own sigmoid score (`normalise="sigmoid"`, the default): scores of
different answers are independent and need not sum to 1. `normalise="softmax"` rescales the
logits over the answer table instead (sums to 1; the ranking is the same). The heads of the
other modes are softmax classifiers: P(true), P(match) and the class probabilities are their
softmax.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from lxrt.config import LXRTConfig
from lxrt.folder import VOCAB_NAME, FolderError, is_model_folder, read_folder_config
from lxrt.loading import load_finetuned, resolve_finetuned_path
from lxrt.tokenization import LXRTTokenizer
from tasks.common import registry
from tasks.common.features import FeatureStore, open_feature_store, read_manifest
from tasks.common.model_setup import MAX_SEQ_LENGTH
from tasks.common.run_record import answers_sha1, file_sha1
from tasks.common.runtime import resolve_device
from tasks.common.tsv_format import normalise_boxes
from tasks.qa.data import AnswerTable

log = logging.getLogger(__name__)

# what run_info.json's task_info must hold for each way of questioning a model
MODE_KEYS = {"answers": ["num_answers", "ans2label", "label2ans"], "classify": ["class_names"]}
NORMALISATIONS = ("sigmoid", "softmax")
# an attribute is named with its object when the detector gives it at least this probability
# (the threshold of bottom-up-attention's own demo)
ATTRIBUTE_SHOWN = 0.1


class PredictorError(ValueError):
    """Bad input to the predictor: the message says which file, id or value and why."""


@dataclass
class ImageInput:
    """One image as the model sees it: regions and boxes, plus what drawing needs."""
    img_id: str
    feats: np.ndarray           # float32 [O, D]
    boxes: np.ndarray           # float32 [O, 4], normalised x1, y1, x2, y2
    img_h: int
    img_w: int
    path: Optional[str] = None  # the image file, when the image came as one
    labels: Optional[list] = None   # detector regions: "attribute object" names, else None

    @property
    def pixel_boxes(self) -> np.ndarray:
        return self.boxes * np.array([self.img_w, self.img_h, self.img_w, self.img_h],
                                     dtype=np.float32)


def read_run_info(load: str | os.PathLike) -> tuple[Path, dict]:
    """(checkpoint file, run_info.json's "task_info") of `--load snap/<task>/<name>/BEST`."""
    try:
        checkpoint = resolve_finetuned_path(load)
    except FileNotFoundError as err:
        raise PredictorError(str(err)) from None
    info_path = checkpoint.parent / "run_info.json"
    if not info_path.is_file():
        raise PredictorError(f"{info_path}: missing; the predictor reads the task and model "
                             f"sizes of {checkpoint} from the run_info.json of its run")
    try:
        info = json.loads(info_path.read_text())
    except ValueError as err:
        raise PredictorError(f"{info_path}: not valid JSON ({err})") from None
    task_info = info.get("task_info") or {}
    entry = registry.entries().get(task_info.get("task"))
    if (entry is not None and entry.predict is None) or checkpoint.name.endswith("_LXRT.pth") \
            or "stage" in (info.get("args") or {}):
        stem = str(checkpoint)
        stem = stem[:-len("_LXRT.pth")] if stem.endswith("_LXRT.pth") else stem
        raise PredictorError(
            f"{checkpoint} is a pre-training checkpoint (the encoder and the pre-training "
            f"heads); tools.predict answers with a fine-tuned model. Fine-tune from it first "
            f"(e.g. bash run/vqa_finetune.bash 0 NAME --loadLXMERT {stem}), then --load "
            f"snap/<task>/NAME/BEST")
    required = ["task", "model_config", "vocab_file"]
    if "task" in task_info:
        required += MODE_KEYS.get(task_entry(task_info["task"], info_path).predict, [])
    for key in required:
        if key not in task_info:
            raise PredictorError(f"{info_path}: no task_info.{key} (a run made before runs "
                                 f"recorded it); run the test command once with --load "
                                 f"{load} and --output {checkpoint.parent} to record it")
    return checkpoint, task_info


EXTRACTOR_RECORD = "extractor.npz"  # a model folder's copy of its features' extractor record


def read_folder_info(folder: str | os.PathLike) -> dict:
    """What `read_run_info` gives for a run, from a model folder's config.json: the task,
    sizes, vocabulary, answers (labels) and the extractor record copied into the folder."""
    try:
        config = read_folder_config(folder)
    except FolderError as err:
        raise PredictorError(str(err)) from None
    folder = Path(folder)
    info = {"task": config.task, "model_config": config.model_config,
            "vocab_file": str(folder / VOCAB_NAME), "labels": config.labels,
            **config.model_args}
    if (folder / EXTRACTOR_RECORD).is_file():
        info["extractor_record"] = str(folder / EXTRACTOR_RECORD)
    return info


def extractor_records(task_info: dict) -> list[Path]:
    """Where the record of how the model's features were extracted may be."""
    from tools.extract_features import sidecar_path
    if task_info.get("extractor_record"):
        return [Path(task_info["extractor_record"])]
    return [sidecar_path(f) for f in task_info.get("feature_files", [])]


def task_entry(task: str, info_path: Path | str = "run_info.json") -> registry.TaskEntry:
    """The registry entry of a run's task; a task tools.predict cannot question is an error."""
    try:
        entry = registry.get(task)
    except registry.UnknownTaskError as err:
        raise PredictorError(f"{info_path}: {err}") from None
    if entry.build_model is None:
        raise PredictorError(f"{info_path}: a {task} model cannot be built by tools.predict; "
                             f"it builds "
                             f"{sorted(n for n, e in registry.entries().items() if e.build_model)}")
    return entry


def build_task_model(task: str, config: LXRTConfig, task_info: dict) -> torch.nn.Module:
    return task_entry(task).build_model(config, task_info)


def open_features(path: str | os.PathLike) -> FeatureStore:
    """A feature TSV (converted to a store on first use) or a converted `.store` folder."""
    path = Path(path)
    if path.is_dir():
        if read_manifest(path) is None:
            raise PredictorError(f"--features {path}: not a converted feature store")
        return FeatureStore(path)
    if not path.is_file():
        raise PredictorError(f"--features {path}: no such file")
    return open_feature_store(path, progress=False)


def check_sentences(sentences: Sequence[str]) -> None:
    if isinstance(sentences, str) or not sentences:
        raise PredictorError("give at least one question/statement (a list of strings)")
    for s in sentences:
        if not isinstance(s, str) or not s.strip():
            raise PredictorError(f"empty question/statement {s!r}")


def check_vocabulary(task_info: dict, info_path: Path) -> None:
    """The vocabulary file must be the one the run was trained with (runs that recorded its
    sha1; a reordered or edited file gives words other ids)."""
    vocab = Path(task_info["vocab_file"])
    if not vocab.is_file():
        raise PredictorError(f"{info_path}: the run's vocabulary {vocab} is missing")
    recorded = task_info.get("vocab_sha1")
    if recorded and file_sha1(vocab) != recorded:
        raise PredictorError(
            f"{vocab} is not the vocabulary the model was trained with (sha1 {recorded[:12]} "
            f"recorded in {info_path}, {file_sha1(vocab)[:12]} now): a reordered or edited "
            f"vocabulary gives words other ids. Restore the file of the training run")


def trained_answers(task_info: dict, info_path: Path) -> list[str]:
    """The answer list the model was trained with: recorded in run_info.json (checked against
    its sha1 and the model's answer count), or, for runs made before it was recorded, read from
    the answer table files the run names (then only their length can be checked)."""
    count = int(task_info["num_answers"])
    answers = task_info.get("answers")
    if answers is not None:
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers) \
                or len(answers) != count or (task_info.get("answers_sha1") and
                                             answers_sha1(answers) != task_info["answers_sha1"]):
            raise PredictorError(f"{info_path}: task_info.answers is not the list of "
                                 f"{count} answers recorded at training (edited?)")
        return answers
    try:
        table = AnswerTable(task_info["ans2label"], task_info["label2ans"])
    except (OSError, ValueError) as err:
        raise PredictorError(f"{info_path}: the run's answer table cannot be read: {err}") \
            from None
    if table.num_answers != count:
        raise PredictorError(
            f"the answer table {table.label2ans_path} has {table.num_answers} answers but the "
            f"model was trained with {count} (recorded in {info_path}): it changed since "
            f"training. Restore the table of the training run")
    log.warning("%s records no answer list (a run made before answer lists were recorded): "
                "answers are named by %s as it is now, unchecked", info_path,
                table.label2ans_path)
    return table.label2ans


class Predictor:
    def __init__(self, model: torch.nn.Module, task_info: dict, tokenizer: LXRTTokenizer,
                 device: torch.device, checkpoint: Path, answers: Optional[list] = None,
                 extractor_weights=None):
        self.model, self.task_info, self.tokenizer = model.eval(), task_info, tokenizer
        self.task, self.device, self.checkpoint = task_info["task"], device, checkpoint
        self.entry = task_entry(self.task)
        self.mode, self.num_images = self.entry.predict, self.entry.num_images
        self.extractor_weights = extractor_weights
        self._featurizers: dict = {}
        self.answers = None
        if self.mode == "answers":
            self.answers = answers if answers is not None else \
                trained_answers(task_info, checkpoint.parent / "run_info.json")
        # a run records its class names, a model folder its labels
        names = task_info.get("class_names") or task_info.get("labels")
        self.class_names = list(names) if self.mode == "classify" and names else []

    @property
    def labels(self) -> Optional[list]:
        """What each output of the model's head means (the answers of a VQA/GQA model, the
        classes of a classifying one)."""
        if self.answers is not None:
            return list(self.answers)
        fixed = getattr(self.model, "default_labels", None)
        return list(fixed) if fixed else (list(self.class_names) or None)

    @classmethod
    def from_run(cls, load: str | os.PathLike, device: str = "cpu",
                 extractor_weights: str | os.PathLike | None = None) -> "Predictor":
        """`load`: a run's checkpoint (snap/TASK/NAME/BEST, with its run_info.json) or a model
        folder (tools.export). `extractor_weights`: the weights file of the extractor the
        model's features came from (a backbone, or the detector) on this machine, for
        `image_from_file` when the path its record names is not here."""
        if is_model_folder(load):
            folder = Path(load)
            task_info = read_folder_info(folder)
            return cls.from_task_info(folder, task_info, folder / "config.json", device,
                                      extractor_weights, task_info.get("labels"))
        checkpoint, task_info = read_run_info(load)
        info_path = checkpoint.parent / "run_info.json"
        check_vocabulary(task_info, info_path)
        return cls.from_task_info(checkpoint, task_info, info_path, device, extractor_weights)

    @classmethod
    def from_task_info(cls, checkpoint: Path, task_info: dict, where, device: str = "cpu",
                       extractor_weights=None, answers: Optional[list] = None) -> "Predictor":
        """The model of `task_info` (recorded in `where`) with the weights of `checkpoint`;
        a VQA/GQA model's `answers` default to those its run recorded."""
        if task_entry(task_info["task"], where).predict == "answers" and answers is None:
            answers = trained_answers(task_info, Path(where))
        config = LXRTConfig.from_dict(task_info["model_config"])
        model = build_task_model(task_info["task"], config, task_info)
        try:
            load_finetuned(model, checkpoint, config)
        except (RuntimeError, ValueError, KeyError) as err:
            raise PredictorError(
                f"{checkpoint} does not fit the {task_info['task']} model of sizes "
                f"{_sizes(config)} recorded in {where} (a checkpoint of another task or "
                f"size?): {err}") from None
        try:
            device = resolve_device(device)
        except SystemExit as err:
            raise PredictorError(str(err)) from None
        tokenizer = LXRTTokenizer(task_info["vocab_file"], MAX_SEQ_LENGTH)
        return cls(model.to(device), task_info, tokenizer, device, checkpoint, answers,
                   extractor_weights)

    # ---- images ---------------------------------------------------------------------------

    def extractor_record(self) -> Optional[Path]:
        """The record of how the model's features were extracted, if it is on this machine."""
        return next((s for s in extractor_records(self.task_info) if s.is_file()), None)

    def featurizer(self, record: Optional[str | os.PathLike] = None):
        """Describes an image file as the model's features were, or as `record` (another
        extractor record, e.g. of a detector extraction) says; built once per record."""
        from tools.extract_features import ImageFeaturizer
        if record is not None and not Path(record).is_file():
            raise PredictorError(f"--extractor {record}: no such file")
        chosen = Path(record) if record is not None else self.extractor_record()
        if chosen is None:
            records = [str(s) for s in extractor_records(self.task_info)]
            raise PredictorError(
                f"--image needs the record of how this model's features were extracted "
                f"(<features>.extractor.npz, written by tools.extract_features / "
                f"tools.easyvqa; {EXTRACTOR_RECORD} in a model folder); none at "
                f"{records or 'the run (no feature files)'}. Without it: use --features "
                f"FILE --imgId ID; for features made elsewhere (e.g. LXMERT's released "
                f"TSVs), extract the picture with tools.extract_features --detector butd and "
                f"give that TSV's record as --extractor FILE")
        if chosen not in self._featurizers:
            self._featurizers[chosen] = ImageFeaturizer(chosen, self.extractor_weights,
                                                        device=str(self.device))
        return self._featurizers[chosen]

    def image_from_file(self, path: str | os.PathLike,
                        record: Optional[str | os.PathLike] = None) -> ImageInput:
        """Describe an image file with the extractor the run's features were made with, or
        with the one `record` (an `.extractor.npz`) names."""
        if not Path(path).is_file():
            raise PredictorError(f"--image {path}: no such file")
        row = self.featurizer(record)(path)
        return ImageInput(str(Path(path).stem), row.features,
                          normalise_boxes(row.boxes, row.img_h, row.img_w), row.img_h,
                          row.img_w, str(path), detector_labels(row))

    def image_from_features(self, features: str | os.PathLike, img_id: str) -> ImageInput:
        store = features if isinstance(features, FeatureStore) else open_features(features)
        if img_id not in store:
            raise PredictorError(f"--imgId {img_id!r}: not in {store.store_dir} "
                                 f"({len(store)} images, e.g. {store.img_ids[:3]})")
        feats, boxes = store[img_id]
        h, w = store.image_size(img_id)
        labels = detector_labels(store.get_row(store.index_of(img_id)))
        return ImageInput(img_id, feats, boxes, h, w, labels=labels)

    # ---- text -----------------------------------------------------------------------------

    def encode(self, sentences: Sequence[str]) -> dict:
        """Token tensors cut to the longest sentence (as the evaluator's batches), plus tokens."""
        check_sentences(sentences)
        batch = self.tokenizer.encode_batch(list(sentences), return_tokens=True)
        length = int(batch.input_mask.sum(1).max())
        out = {k: torch.from_numpy(getattr(batch, k)[:, :length]).to(self.device)
               for k in ("input_ids", "token_position", "input_mask")}
        out["tokens"] = batch.tokens
        return out

    def _visual(self, images: Sequence[ImageInput], repeat: int = 1):
        feats = torch.from_numpy(np.stack([i.feats for i in images])).float().to(self.device)
        boxes = torch.from_numpy(np.stack([i.boxes for i in images])).float().to(self.device)
        expected = self.model.lxrt_encoder.config.visual_feat_dim
        if feats.shape[-1] != expected:
            raise PredictorError(f"image {images[0].img_id!r} has {feats.shape[-1]}-dim "
                                 f"region features; this model takes {expected}")
        return feats.repeat_interleave(repeat, 0), boxes.repeat_interleave(repeat, 0)

    def _require(self, mode: str, what: str) -> None:
        if self.mode != mode:
            raise PredictorError(f"{self.checkpoint} is a {self.task} model; {what} needs a "
                                 f"{'/'.join(registry.with_mode(mode))} model")

    # ---- predictions ----------------------------------------------------------------------

    @torch.no_grad()
    def answer_scores(self, image: ImageInput, questions: Sequence[str],
                      normalise: str = "sigmoid", batch_size: int = 256) -> torch.Tensor:
        """[Q, answers] probabilities of every answer for each question about `image`, the
        questions going through the model `batch_size` at a time (memory stays flat for any
        number of questions)."""
        self._require("answers", what="answering questions")
        if normalise not in NORMALISATIONS:
            raise PredictorError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
        check_sentences(questions)  # every question, before the first batch
        out = []
        for start in range(0, len(questions), batch_size):
            part = questions[start:start + batch_size]
            text = self.encode(part)
            feats, boxes = self._visual([image], len(part))
            logits = self.model(text["input_ids"], text["token_position"], text["input_mask"],
                                feats, boxes).float().cpu()
            out.append(torch.sigmoid(logits) if normalise == "sigmoid" else logits.softmax(-1))
        return torch.cat(out)

    def answer(self, image: ImageInput, questions: Sequence[str], topk: int = 5,
               normalise: str = "sigmoid") -> list[list[tuple[str, float]]]:
        """For each question, its `topk` answers with probabilities, best first."""
        if topk < 1:
            raise PredictorError(f"topk must be at least 1, got {topk}")
        scores = self.answer_scores(image, questions, normalise)
        values, labels = scores.topk(min(topk, scores.shape[1]), dim=1)
        return [[(self.answers[int(i)], float(v)) for v, i in zip(vs, ls)]
                for vs, ls in zip(values, labels)]

    @torch.no_grad()
    def class_scores(self, statements: Sequence[str], images: Sequence[ImageInput]) -> torch.Tensor:
        """[S, classes] softmax probabilities of each statement about `images` (as many as
        the task takes per example)."""
        if len(images) != self.num_images:
            raise PredictorError(f"a {self.task} model takes {self.num_images} image(s), got "
                                 f"{len(images)}")
        text = self.encode(statements)
        feats, boxes = self._visual(images)
        n = len(statements)
        if self.num_images > 1:  # one example holds them all: [S, images, O, D]
            feats, boxes = feats[None], boxes[None]
        feats = feats.expand(n, *feats.shape[1:])
        boxes = boxes.expand(n, *boxes.shape[1:])
        logits = self.model(text["input_ids"], text["token_position"], text["input_mask"],
                            feats, boxes)
        return logits.float().softmax(-1).cpu()

    def verify(self, statements: Sequence[str], left: ImageInput,
               right: ImageInput | None = None) -> list[tuple[bool, float]]:
        """For each statement about the image(s), (true?, P(true)); class 1 is "true"."""
        self._require("verify", what="verifying a statement")
        images = [left] if right is None else [left, right]
        return [(bool(p > 0.5), float(p)) for p in self.class_scores(statements, images)[:, 1]]

    def classify(self, statements: Sequence[str], images: Sequence[ImageInput]
                 ) -> list[tuple[str, dict]]:
        """For each statement about `images`, (its class, {class name: probability})."""
        self._require("classify", what="classifying a statement")
        out = []
        for row in self.class_scores(statements, images):
            probs = {name: float(p) for name, p in zip(self.class_names, row)}
            out.append((self.class_names[int(row.argmax())], probs))
        return out

    @torch.no_grad()
    def rank_images(self, caption: str, features: str | os.PathLike, topk: int = 5,
                    batch_size: int = 256) -> list[tuple[str, float]]:
        """Retrieval: the `topk` images of a feature file for `caption`, with P(match)."""
        self._require("rank", what="ranking images for a caption")
        store = features if isinstance(features, FeatureStore) else open_features(features)
        text = self.encode([caption])
        scores = []
        for start in range(0, len(store), batch_size):
            images = [self.image_from_features(store, i)
                      for i in store.img_ids[start:start + batch_size]]
            feats, boxes = self._visual(images)
            b = len(images)
            logits = self.model(*(text[k].expand(b, -1) for k in
                                  ("input_ids", "token_position", "input_mask")), feats, boxes)
            scores.append(logits.float().softmax(-1)[:, 1].cpu())
        scores = torch.cat(scores)
        values, order = scores.topk(min(topk, len(scores)))
        return [(store.img_ids[int(i)], float(v)) for v, i in zip(values, order)]

    # ---- attention ------------------------------------------------------------------------

    def attention(self, image: ImageInput, sentence: str, layer: int = -1,
                  head: Optional[int] = None, word: Optional[str] = None):
        """The cross-modality attention behind one prediction (see tools.attention_map)."""
        from tools.attention_map import read_attention
        return read_attention(self, image, sentence, layer, head, word)


def detector_labels(row) -> Optional[list]:
    """Names of a row's regions ("white dog", or "dog" when no attribute is confident) when
    they come from the detector; None for grid regions, whose rows carry one constant
    confidence and no detector labels."""
    conf = np.asarray(row.objects_conf)
    if conf.size == 0 or np.all(conf == conf[0]):
        return None
    from butd.vocab import attribute_name, object_name
    return [f"{attribute_name(int(a))} {object_name(int(o))}" if c >= ATTRIBUTE_SHOWN
            else object_name(int(o))
            for o, a, c in zip(row.objects_id, row.attrs_id, row.attrs_conf)]


def _sizes(config: LXRTConfig) -> str:
    return (f"hidden {config.hidden_size}, {config.num_attention_heads} heads, layers "
            f"{config.l_layers}/{config.x_layers}/{config.r_layers}, visual features "
            f"{config.visual_feat_dim}")
