"""tools.demo: its functions on tiny models, the server on 127.0.0.1 asked through its HTTP
API, and (marked `browser`) the page in a real headless Chromium."""
import json
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from generated import ROOT
from tools.demo import MAX_IMAGE_PIXELS, Demo, DemoError, build_parser, check_image
from tools.predictor import Predictor, PredictorError

pytestmark = pytest.mark.slow  # a trained run, a served page, a browser: not in the fast tier

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
QUESTION = "What shape is in the image?"


@pytest.fixture(scope="module")
def easyvqa_run(tmp_path_factory):
    """(checkpoint, feature file, test image) of a 1-epoch easy-VQA model (real images, grid
    features with their extractor record); LXRT_DEMO_LOAD=snap/easyvqa/NAME/BEST puts a
    trained one in its place (the README's screenshot)."""
    easy_vqa = pytest.importorskip("easy_vqa")
    image = easy_vqa.get_test_image_paths()[0]
    if os.environ.get("LXRT_DEMO_LOAD"):
        load = Path(os.environ["LXRT_DEMO_LOAD"])
        info = json.loads((load.parent / "run_info.json").read_text())["task_info"]
        return load, Path(info["feature_files"][0]), image
    from tasks.vqa.main import main as vqa_main
    from tools import easyvqa
    base = tmp_path_factory.mktemp("easyvqa")
    root, out = base / "data", base / "run"
    easyvqa.convert(root, limit_images=12, verbose=False)
    vqa_main(["--task", "easyvqa", "--dataRoot", str(root), "--modelConfig",
              str(ROOT / "run" / "configs" / "easyvqa_cpu.json"), "--xlayers", "2", "--device",
              "cpu", "--numWorkers", "0", "--batchSize", "16", "--output", str(out),
              "--fromScratch", "--train", "train", "--valid", "valid", "--epochs", "1",
              "--lr", "1e-3"])
    return out / "BEST", root / "easyvqa_imgfeat" / "test_obj36.tsv", image


@pytest.fixture(scope="module")
def demo(easyvqa_run):
    load, features, _ = easyvqa_run
    return Demo(Predictor.from_run(load), [features])


def test_ask_gives_the_predictors_answers_and_the_attention_picture(demo, easyvqa_run):
    _, features, image = easyvqa_run
    answers, picture = demo.ask(str(image), None, None, QUESTION)
    expected = demo.predictor.answer(demo.predictor.image_from_file(image), [QUESTION], 5)[0]
    assert list(answers.items()) == expected
    assert picture.size == (624, 468)
    first = demo.image_ids(str(features))[0]
    picked, _ = demo.ask(None, str(features), first, QUESTION)
    stored = demo.predictor.image_from_features(features, first)
    assert list(picked.items()) == demo.predictor.answer(stored, [QUESTION], 5)[0]
    assert "Serving `" in demo.title() and str(demo.predictor.checkpoint) in demo.title()


def test_bad_input_gets_a_message(demo, easyvqa_run, tmp_path):
    _, features, image = easyvqa_run
    (tmp_path / "notes.png").write_text("not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    big = tmp_path / "big.png"
    Image.new("L", (8000, MAX_IMAGE_PIXELS // 8000 + 1)).save(big)
    cases = [((str(image), None, None, "   "), "type a question"),
             ((None, None, None, QUESTION), "upload the image or pick one"),
             ((str(tmp_path / "notes.png"), None, None, QUESTION), "notes.png is not an image"),
             ((str(tmp_path / "empty.png"), None, None, QUESTION), "empty.png is empty"),
             ((str(big), None, None, QUESTION), "megapixels"),
             ((None, "/etc/passwd", "x", QUESTION), "not one of this page's feature files")]
    for args, message in cases:
        with pytest.raises(DemoError, match=message):
            demo.ask(*args)
    with pytest.raises(PredictorError, match="'nope': not in"):
        demo.ask(None, str(features), "nope", QUESTION)


def _task_predictor(task, model, features):
    from lxrt.tokenization import LXRTTokenizer, find_vocab_file
    info = {"task": task, "feature_files": [str(features)]}
    return Predictor(model.eval(), info, LXRTTokenizer(find_vocab_file(None), 20),
                     torch.device("cpu"), Path(f"{task}/BEST.pth"))


def test_nlvr2_and_retrieval_pages_functions(small_root):
    from tasks.nlvr2.model import NLVR2Model
    from tasks.retrieval.model import RetrievalModel
    from lxrt.config import LXRTConfig
    config = LXRTConfig.from_json_file(small_root / "bert_config.json")
    nlvr2_features = sorted((small_root / "nlvr2_imgfeat").glob("*.tsv"))[0]
    nlvr2 = Demo(_task_predictor("nlvr2", NLVR2Model(config), nlvr2_features))
    left, right = nlvr2.image_ids(str(nlvr2_features))[:2]
    verdict = nlvr2.verify(None, left, None, right, str(nlvr2_features), "two dogs")
    assert verdict["true"] + verdict["false"] == pytest.approx(1)
    with pytest.raises(DemoError, match="upload the right image"):
        nlvr2.verify(None, left, None, None, str(nlvr2_features), "two dogs")
    flickr = sorted(small_root.rglob("*flickr*/*.tsv"))[0]
    retrieval = Demo(_task_predictor("retrieval", RetrievalModel(config), flickr))
    rows = retrieval.rank("a dog runs", str(flickr))
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert rows == sorted(rows, key=lambda r: -r[2])
    with pytest.raises(DemoError, match="type a caption"):
        retrieval.rank("", str(flickr))
    pytest.importorskip("gradio")
    from tools.demo import build_app
    for page in (nlvr2, retrieval):  # the pages of both build
        build_app(page)


def test_check_image_accepts_a_real_photo(easyvqa_run):
    check_image(easyvqa_run[2])


def test_binds_to_loopback_by_default():
    assert build_parser().parse_args(["--load", "x"]).host == "127.0.0.1"


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo):
    pytest.importorskip("gradio")
    from tools.demo import build_app, launch
    port = _free_port()
    app = build_app(demo)
    launch(app, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}"
    app.close()


def _call(url: str, api: str, data: list) -> tuple[str, object]:
    """The HTTP API: POST the inputs, then read the event stream -> (event, data)."""
    request = urllib.request.Request(f"{url}/gradio_api/call/{api}",
                                     json.dumps({"data": data}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{url}/gradio_api/call/{api}/{event_id}", timeout=120) as r:
        lines = r.read().decode().splitlines()
    event = [x[len("event: "):] for x in lines if x.startswith("event: ")][-1]
    payload = [x[len("data: "):] for x in lines if x.startswith("data: ")][-1]
    return event, json.loads(payload)


def _upload(url: str, path: Path) -> dict:
    boundary = "lxrtdemo"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\""
            f"{path.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + \
        path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/gradio_api/upload", body,
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        (stored,) = json.loads(response.read())
    return {"path": stored, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def test_server_answers_through_its_http_api(server, demo, easyvqa_run, tmp_path):
    _, features, image = easyvqa_run
    with urllib.request.urlopen(f"{server}/config", timeout=30) as response:
        assert str(demo.predictor.checkpoint) in response.read().decode()
    event, data = _call(server, "answer", [_upload(server, Path(image)), str(features), None,
                                           QUESTION])
    assert event == "complete"
    expected, _ = demo.ask(str(image), None, None, QUESTION)
    assert data[0]["label"] == next(iter(expected))
    assert [c["label"] for c in data[0]["confidences"]] == list(expected)
    (tmp_path / "notes.png").write_text("not an image")
    for inputs, message in (([None, str(features), None, "  "], "type a question"),
                            ([_upload(server, tmp_path / "notes.png"), str(features), None,
                              QUESTION], "notes.png is not an image")):
        event, data = _call(server, "answer", inputs)
        assert event == "error" and message in data["error"] and "Traceback" not in data["error"]


# ---------------------------------------------------------------------------------------------
# The page in a real browser
# ---------------------------------------------------------------------------------------------

def _browser(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1100",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    return webdriver.Chrome(options=options, service=service)


def _wait(condition, seconds: float = 90.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError("the page did not show what was expected in time")


@pytest.mark.browser
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver")
def test_the_page_in_a_real_browser(server, demo, easyvqa_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    _, _, image = easyvqa_run
    driver = _browser(tmp_path / "profile")
    try:
        driver.get(server)
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#question textarea"))
        assert str(demo.predictor.checkpoint) in driver.find_element(By.ID, "served").text
        driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(image))
        _wait(lambda: Path(image).name in driver.page_source)
        driver.find_element(By.CSS_SELECTOR, "#question textarea").send_keys(QUESTION)
        driver.find_element(By.ID, "ask").click()
        shown = _wait(lambda: driver.find_element(By.ID, "answers").text.strip().split("\n")
                      if driver.find_elements(By.CSS_SELECTOR, "#attention img") else None)
        expected, _ = demo.ask(str(image), None, None, QUESTION)
        top = shown[shown.index("Answers") + 1]  # the label's caption, then the top answer
        assert top == next(iter(expected)) and all(answer in shown for answer in expected)
        time.sleep(1.0)  # let the attention picture finish drawing
        shot = tmp_path / "demo.png"
        driver.save_screenshot(str(shot))
        assert Image.open(shot).size[0] > 0
        if os.environ.get("LXRT_DEMO_SCREENSHOT"):  # keep it (the README's picture)
            shutil.copyfile(shot, os.environ["LXRT_DEMO_SCREENSHOT"])
        question = driver.find_element(By.CSS_SELECTOR, "#question textarea")
        question.send_keys(Keys.CONTROL, "a")
        question.send_keys(Keys.BACKSPACE, "   ")  # typed, so the page sees the change
        driver.find_element(By.ID, "ask").click()
        _wait(lambda: "type a question" in driver.page_source)
        assert "Traceback" not in driver.page_source
    finally:
        driver.quit()
