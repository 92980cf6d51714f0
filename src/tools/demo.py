"""A web page to try a model (Gradio, the `demo` extra):

    python -m tools.demo --load snap/easyvqa/easyvqa/BEST      # or a model folder
        [--features FILE ...] [--extractorWeights FILE] [--host 127.0.0.1] [--port 7860]

VQA/GQA: upload an image or pick one of a feature file, ask a question, see the top answers
with their scores and the attention picture behind the first. NLVR2: two images and a
statement, P(true). Retrieval: a caption ranked over the images of a feature file.

The page serves 127.0.0.1 unless `--host` says otherwise, and names the checkpoint it serves.
Every answer comes from `tools.predictor.Predictor`, the object `tools.predict` uses. An
uploaded photo is described by the extractor the model's features came from (its record next
to the run's features, or in the model folder); `--extractorWeights` gives that extractor's
weights file on this machine (a ResNet backbone's, or the region detector's) when the path in
the record is not here. Bad input (not an image, too large, an empty question) is answered
by a message in the page; the server log keeps anything unexpected.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional

from tools.predictor import ImageInput, Predictor, PredictorError, open_features

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 20 * 2 ** 20    # an upload larger than this is refused with a message
MAX_IMAGE_PIXELS = 40_000_000     # and so is one of more pixels (a decompression bomb)
MAX_LISTED_IMAGES = 2000          # img_ids offered per feature file
TOPK = 5


class DemoError(ValueError):
    """Bad input; the message is what the page shows."""


def check_image(path) -> None:
    """An uploaded file must be an image of a sensible size."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    name = path.name
    size = path.stat().st_size
    if size == 0:
        raise DemoError(f"{name} is empty")
    if size > MAX_IMAGE_BYTES:
        raise DemoError(f"{name} is {size / 2 ** 20:.1f} MB; the limit is "
                        f"{MAX_IMAGE_BYTES // 2 ** 20} MB")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DemoError(f"{name} is {width}x{height} pixels; the limit is "
                                f"{MAX_IMAGE_PIXELS // 10 ** 6} megapixels")
            image.verify()
    except DemoError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as err:
        raise DemoError(f"{name} is not an image that can be read (PNG, JPEG, ...): "
                        f"{type(err).__name__}") from None


class Demo:
    """What the page does, without the page: each method takes what the widgets hold and
    returns what they show, or raises DemoError / PredictorError with the page's message."""

    def __init__(self, predictor: Predictor, feature_files=()):
        self.predictor = predictor
        known = list(feature_files) or predictor.task_info.get("feature_files", [])
        self.feature_files = [str(f) for f in known if Path(f).exists()]
        self._stores: dict = {}

    @property
    def task(self) -> str:
        return self.predictor.task

    @property
    def mode(self) -> str:
        """How the model is questioned (its task's registry entry): answers, verify, rank."""
        return self.predictor.mode

    def title(self) -> str:
        p, c = self.predictor, self.predictor.model.lxrt_encoder.config
        return (f"Serving `{p.checkpoint}` (task {p.task}; {c.l_layers}/{c.x_layers}/"
                f"{c.r_layers} layers, hidden {c.hidden_size}"
                + (f", {len(p.labels)} answers" if p.mode == "answers" else "") + ").")

    # ---- images ---------------------------------------------------------------------------

    def store(self, features: Optional[str]):
        if not features:
            raise DemoError("choose a feature file")
        if features not in self.feature_files:  # the page offers these files only
            raise DemoError(f"{features!r} is not one of this page's feature files")
        if features not in self._stores:
            self._stores[features] = open_features(features)
        return self._stores[features]

    def image_ids(self, features: Optional[str]) -> list[str]:
        return list(self.store(features).img_ids[:MAX_LISTED_IMAGES]) if features else []

    def image(self, upload: Optional[str], features: Optional[str], img_id: Optional[str],
              which: str = "the image") -> ImageInput:
        """An uploaded file, else the picked img_id of the feature file."""
        if upload:
            check_image(upload)
            if self.predictor.extractor_record() is None:
                raise DemoError("this model's features were not made by an extractor this code "
                                "can run on a new image (no extractor record): pick an image "
                                "of a feature file instead")
            return self.predictor.image_from_file(upload)
        if img_id:
            return self.predictor.image_from_features(self.store(features), img_id)
        raise DemoError(f"upload {which} or pick one of a feature file")

    # ---- the three kinds of model ---------------------------------------------------------

    def ask(self, upload, features, img_id, question: str):
        """-> ({answer: score} of the top answers, the attention picture)."""
        from tools.attention_map import draw_attention
        if not (question or "").strip():
            raise DemoError("type a question")
        image = self.image(upload, features, img_id)
        answers = self.predictor.answer(image, [question.strip()], TOPK)[0]
        maps = self.predictor.attention(image, question.strip())
        maps.prediction = answers[0][0]
        return dict(answers), draw_attention(image, maps)

    def verify(self, left_upload, left_id, right_upload, right_id, features, statement: str):
        """-> {"true": P(true), "false": 1 - P(true)} for the statement about the pair."""
        if not (statement or "").strip():
            raise DemoError("type a statement about the two images")
        left = self.image(left_upload, features, left_id, "the left image")
        right = self.image(right_upload, features, right_id, "the right image")
        (_, p_true), = self.predictor.verify([statement.strip()], left, right)
        return {"true": p_true, "false": 1.0 - p_true}

    def rank(self, caption: str, features):
        """-> rows [rank, img_id, P(match)] of the best images of the feature file."""
        if not (caption or "").strip():
            raise DemoError("type a caption")
        found = self.predictor.rank_images(caption.strip(), self.store(features), TOPK)
        return [[k, img_id, round(p, 4)] for k, (img_id, p) in enumerate(found, 1)]


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------

def _gradio():
    """Gradio, imported only when a page is built (it reports usage unless told not to)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio
    return gradio


def _shown(fn):
    """Bad input becomes a message in the page; anything else is logged, and the page says
    that it failed (never a stack trace)."""
    gr = _gradio()

    def call(*args):
        try:
            return fn(*args)
        except (DemoError, PredictorError, FileNotFoundError) as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - the page must not show a stack trace
            log.exception("demo: %s failed", fn.__name__)
            raise gr.Error(f"the model failed on this input ({type(err).__name__}); the "
                           f"server log has the details", print_exception=False) from None
    return call


def _shown_path(path: str) -> str:
    """A path as the page shows it: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _image_inputs(gr, demo: Demo, features, label: str):
    upload = gr.File(label=f"Upload {label}", file_types=["image"], type="filepath")
    # any value passes the widget: the feature store names an img_id it does not hold
    picked = gr.Dropdown(demo.image_ids(features.value), label=f"or pick {label} (img_id)",
                         value=None, allow_custom_value=True)
    features.change(lambda f: gr.Dropdown(choices=demo.image_ids(f), value=None),
                    features, picked, api_visibility="private")
    return upload, picked


def build_app(demo: Demo):
    gr = _gradio()
    with gr.Blocks(title="LXMERT-S demo") as app:
        gr.Markdown(f"## LXMERT-S\n{demo.title()}", elem_id="served")
        features = gr.Dropdown([(_shown_path(f), f) for f in demo.feature_files],
                               label="feature file",
                               value=demo.feature_files[0] if demo.feature_files else None)
        if demo.mode == "answers":
            with gr.Row():
                with gr.Column():
                    upload, picked = _image_inputs(gr, demo, features, "an image")
                    question = gr.Textbox(label="Question", elem_id="question")
                    button = gr.Button("Ask", variant="primary", elem_id="ask")
                with gr.Column():
                    answers = gr.Label(label="Answers", num_top_classes=TOPK, elem_id="answers")
                    picture = gr.Image(label="Attention", type="pil", elem_id="attention")
            inputs = [upload, features, picked, question]
            button.click(_shown(demo.ask), inputs, [answers, picture], api_name="answer")
            question.submit(_shown(demo.ask), inputs, [answers, picture],
                            api_visibility="private")
        elif demo.mode == "verify" and demo.predictor.num_images == 2:
            with gr.Row():
                with gr.Column():
                    left = _image_inputs(gr, demo, features, "the left image")
                with gr.Column():
                    right = _image_inputs(gr, demo, features, "the right image")
            statement = gr.Textbox(label="Statement", elem_id="statement")
            button = gr.Button("Verify", variant="primary")
            verdict = gr.Label(label="Is the statement true?", elem_id="verdict")
            button.click(_shown(demo.verify), [*left, *right, features, statement], verdict,
                         api_name="verify")
        elif demo.mode == "rank":
            caption = gr.Textbox(label="Caption", elem_id="caption")
            button = gr.Button("Rank the images of the feature file", variant="primary")
            ranked = gr.Dataframe(headers=["rank", "img_id", "P(match)"], elem_id="ranked")
            button.click(_shown(demo.rank), [caption, features], ranked, api_name="rank")
        else:
            raise DemoError(f"a {demo.task} model has no demo page (models that answer "
                            f"questions, verify statements about two images or rank images do)")
    return app


def launch(app, host: str, port: Optional[int], block: bool = True):
    """Serve the page; `block=False` returns at once (tests). Local fonts only: the page asks
    nothing of other hosts."""
    gr = _gradio()
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return app.launch(server_name=host, server_port=port, prevent_thread_lock=not block,
                      show_error=True, max_file_size=2 * MAX_IMAGE_BYTES, theme=theme,
                      ssr_mode=False, quiet=not block, footer_links=["api"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--load", required=True,
                   help="a run's checkpoint without .pth (snap/TASK/NAME/BEST) or a model folder")
    p.add_argument("--features", action="append", default=[],
                   help="feature file (TSV or .store) to pick images from / rank; repeatable "
                        "(default: the run's own feature files)")
    p.add_argument("--extractorWeights", "--extractor-weights", dest="extractor_weights",
                   help="weights of the extractor the features came from, for uploaded photos")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cpu")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        _gradio()
    except ImportError:
        print("error: the demo needs Gradio: pip install -e '.[demo]'", file=sys.stderr)
        return 2
    try:
        predictor = Predictor.from_run(args.load, args.device, args.extractor_weights)
        app = build_app(Demo(predictor, args.features))
    except (PredictorError, DemoError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    launch(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
