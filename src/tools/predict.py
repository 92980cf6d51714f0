"""Ask a fine-tuned run about one image (or a pair, or a feature file).

    python -m tools.predict --load snap/easyvqa/NAME/BEST --image shape.png \\
        --question "What color is the shape?" [--question ...] [--questions file.txt] \\
        [--topk 5] [--json] [--attention att.png [--word color] [--layer -1] [--head H]]
    python -m tools.predict --load ... --features data/easyvqa_imgfeat/test_obj36.tsv \\
        --imgId easyvqa_test_0 --question ...
    python -m tools.predict --load snap/vqa/NAME/BEST --image photo.jpg \\
        --extractor mine_obj36.extractor.npz --question ...   (a record of other features)
    statements (NLVR2: true or false about two images; classifying tasks: one of their
    classes): --statement "..." with the task's image(s) (--image A [--image B], or
    --imgId A [--imgId B])
    retrieval: --caption "..." --features FILE   (the top-k images of FILE)

The task, model sizes, vocabulary, answer table and feature extractor come from the run's
run_info.json. VQA/GQA probabilities are each answer's own sigmoid score, the function the
head was trained with (BCE per answer; they need not sum to 1); `--normalise softmax` reports a
softmax over the answer table instead. P(true), P(match) and class probabilities are the
softmax of their heads. How a task's model is questioned comes from its registry entry.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools.predictor import NORMALISATIONS, Predictor, PredictorError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.predict",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--load", required=True, help="checkpoint without .pth (snap/TASK/NAME/BEST) "
                                                 "or a model folder (tools.export)")
    p.add_argument("--extractorWeights", "--extractor-weights", dest="extractor_weights",
                   help="weights of the extractor the model's features came from, on this "
                        "machine, for --image when the path its record names is not here")
    p.add_argument("--image", action="append", default=[], help="image file (twice for NLVR2)")
    p.add_argument("--features", help="feature TSV (or converted .store) for --imgId/--caption")
    p.add_argument("--extractor", help="describe --image as this record says (an "
                                       "<features>.extractor.npz), instead of the record of "
                                       "the run's own features")
    p.add_argument("--imgId", "--img-id", dest="img_ids", action="append", default=[],
                   help="img_id in --features (twice for NLVR2)")
    p.add_argument("--question", action="append", default=[], help="repeatable")
    p.add_argument("--questions", help="a text file, one question per line")
    p.add_argument("--statement", action="append", default=[],
                   help="a statement to verify (NLVR2) or classify; repeatable")
    p.add_argument("--caption", help="retrieval: rank the images of --features")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--normalise", choices=NORMALISATIONS, default="sigmoid",
                   help="VQA/GQA: sigmoid per answer (as trained, default) or softmax over "
                        "answers")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g = p.add_argument_group("attention picture (models that answer questions: VQA/GQA)")
    g.add_argument("--attention", help="write the attention picture of the first question here")
    g.add_argument("--word", help="show this word piece's attention instead of the text [CLS]")
    g.add_argument("--layer", type=int, default=-1, help="cross-modality layer (-1: last)")
    g.add_argument("--head", type=int, default=None, help="one head (default: mean over heads)")
    return p


def read_questions(args) -> list[str]:
    questions = list(args.question)
    if args.questions:
        path = Path(args.questions)
        if not path.is_file():
            raise PredictorError(f"--questions {path}: no such file")
        data = path.read_bytes()
        try:
            if b"\x00" in data:
                raise UnicodeDecodeError("utf-8", data, data.index(b"\x00"),
                                         data.index(b"\x00") + 1, "a NUL byte")
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise PredictorError(f"--questions {path}: not a UTF-8 text file ({err.reason} at "
                                 f"byte {err.start}); expected one question per line") from None
        questions += [line.strip() for line in text.splitlines() if line.strip()]
    return questions


def images(predictor: Predictor, args, count: int) -> list:
    if args.image and args.img_ids:
        raise PredictorError("give images either as --image files or as --imgId, not both")
    if args.img_ids and not args.features:
        raise PredictorError("--imgId needs --features FILE (the TSV or store holding it)")
    found = ([predictor.image_from_file(p, args.extractor) for p in args.image] or
             [predictor.image_from_features(args.features, i) for i in args.img_ids])
    if len(found) != count:
        raise PredictorError(f"a {predictor.task} model takes {count} image(s) (--image or "
                             f"--imgId), got {len(found)}")
    return found


def run(args) -> dict:
    """Everything the command prints, as one dict (also what --json prints)."""
    predictor = Predictor.from_run(args.load, args.device, args.extractor_weights)
    task, mode = predictor.task, predictor.mode
    if args.attention and mode != "answers":
        raise PredictorError(f"--attention draws one image's regions for a question: models "
                             f"that answer questions only, this is a {task} model")
    if mode == "rank":
        if not args.caption or not args.features:
            raise PredictorError(f"a {task} model ranks images: give --caption and --features")
        return {"task": task, "mode": mode, "caption": args.caption,
                "images": predictor.rank_images(args.caption, args.features, args.topk)}
    if mode in ("verify", "classify"):
        if not args.statement:
            raise PredictorError(f"a {task} model judges statements: give --statement")
        shown = images(predictor, args, predictor.num_images)
        result = {"task": task, "mode": mode, "images": [i.img_id for i in shown]}
        if mode == "verify":
            verdicts = predictor.verify(args.statement, *shown)
            result["statements"] = [{"statement": s, "true": t, "p_true": p}
                                    for s, (t, p) in zip(args.statement, verdicts)]
        else:
            labels = predictor.classify(args.statement, shown)
            result["statements"] = [{"statement": s, "label": label, "probabilities": probs}
                                    for s, (label, probs) in zip(args.statement, labels)]
        return result
    questions = read_questions(args)
    if not questions:
        raise PredictorError(f"a {task} model answers questions: give --question or --questions")
    (image,) = images(predictor, args, 1)
    answers = predictor.answer(image, questions, args.topk, args.normalise)
    result = {"task": task, "mode": mode, "image": image.img_id, "normalise": args.normalise,
              "questions": [{"question": q, "answers": a} for q, a in zip(questions, answers)]}
    if args.attention:
        from tools.attention_map import draw_attention
        maps = predictor.attention(image, questions[0], args.layer, args.head, args.word)
        maps.prediction = answers[0][0][0]
        draw_attention(image, maps, args.attention)
        result["attention"] = {"file": args.attention, "query": maps.query,
                               "layer": maps.layer, "head": maps.head,
                               "visual_cls_share": maps.visual_cls_share,
                               "region_weights": maps.region_weights.tolist(),
                               "tokens": maps.tokens,
                               "token_weights": maps.token_weights.tolist()}
        if image.labels:
            result["attention"]["region_labels"] = image.labels
    return result


def format_table(result: dict) -> str:
    if result["mode"] == "rank":
        lines = [f"caption: {result['caption']}", "rank  P(match)  img_id"]
        lines += [f"{k:>4}  {p:8.4f}  {i}" for k, (i, p) in enumerate(result["images"], 1)]
        return "\n".join(lines)
    if result["mode"] == "verify":
        lines = [f"images: {' + '.join(result['images'])}"]
        lines += [f"{'True ' if s['true'] else 'False'}  P(true)={s['p_true']:.4f}  "
                  f"{s['statement']}" for s in result["statements"]]
        return "\n".join(lines)
    if result["mode"] == "classify":
        lines = [f"image(s): {' + '.join(result['images'])}"]
        for s in result["statements"]:
            probs = "  ".join(f"{name} {p:.4f}" for name, p in s["probabilities"].items())
            lines.append(f"{s['label']:<14} ({probs})  {s['statement']}")
        return "\n".join(lines)
    what = ("sigmoid score per answer (as trained; need not sum to 1)"
            if result["normalise"] == "sigmoid" else "softmax over the answer table")
    lines = [f"image {result['image']}; probabilities: {what}"]
    for item in result["questions"]:
        lines.append(f"Q: {item['question']}")
        lines += [f"  {k}. {a:<20} {p:.4f}" for k, (a, p) in enumerate(item["answers"], 1)]
    if "attention" in result:
        att = result["attention"]
        lines.append(f"attention picture: {att['file']} ({att['query']} -> regions, layer "
                     f"{att['layer']}; visual [CLS] share {att['visual_cls_share']:.1%})")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except (PredictorError, OSError, ValueError) as err:  # OSError: missing / foreign files
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
