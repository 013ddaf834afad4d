"""``fluxsr serve``: the Gradio app driven by the OS's Chromium (Selenium + chromedriver, headless) and through
``gradio_client`` over HTTP, on trained models of every method; the CLI starting on the tiny preset with no trained
model (the base model, with a note) behind ``--auth``."""

import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from deploying import free_port
from helpers import BIN, bomb_png, stop_process_group, train_tiny_models

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
NO_BROWSER = ("the OS's Chromium and chromedriver are not installed (`make browser` installs the Debian packages "
              "chromium and chromium-driver; it needs root and apt)")


@pytest.fixture(scope="module")
def lr_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "photo.png"
    Image.effect_mandelbrot((20, 24), (-2.0, -1.2, 0.8, 1.2), 60).convert("RGB").save(path)
    return path


class Observed:
    """The app's model loader (``build_app(load=...)``), seen from the test: the real ``load_student``, counting the
    loads per folder, with each student's upscaling timed so that overlapping requests would show."""

    def __init__(self):
        self.loads: list[str | None] = []
        self.running = self.most_at_once = 0
        self.lock = threading.Lock()

    def load(self, cfg, folder):
        from fluxsr_core.student import load_student

        self.loads.append(folder)
        student = load_student(cfg, folder)
        upscale_to_png = student.upscale_to_png

        def observed(*args, **kwargs):
            with self.lock:
                self.running += 1
                self.most_at_once = max(self.most_at_once, self.running)
            try:
                return upscale_to_png(*args, **kwargs)
            finally:
                with self.lock:
                    self.running -= 1

        student.upscale_to_png = observed
        return student


@pytest.fixture(scope="module")
def app(tmp_path_factory, one_torch_thread):
    """The app on a free loopback port, over a root holding a trained model of every method."""
    from fluxsr_core.config import tiny
    from flows.serve import build_app

    root = tmp_path_factory.mktemp("runs")
    models = train_tiny_models(root)
    observed = Observed()
    demo = build_app(tiny(), root=root, load=observed.load)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield {"url": f"http://127.0.0.1:{port}/", "models": models, "root": root, "observed": observed}
    demo.close()


def _label(root, folder) -> str:
    from flows.serve import find_models

    return next(label for label, path in find_models(root) if Path(path) == Path(folder).resolve())


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=NO_BROWSER)
def test_in_a_real_browser_upload_choose_oftsr_run_and_get_a_4x_image(app, lr_image, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no download: the OS's driver
    try:
        wait = WebDriverWait(driver, 120)
        driver.get(app["url"])
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#model input"))).click()
        label = _label(app["root"], app["models"]["oftsr"])
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f'[role=option][aria-label="{label}"]'))).click()
        wait.until(lambda d: d.find_element(By.ID, "model-note").text.startswith("oftsr model"))
        wait.until(lambda d: d.find_element(By.ID, "tau").is_displayed())  # OFTSR's control shown
        assert not driver.find_elements(By.ID, "step-fraction") or not driver.find_element(
            By.ID, "step-fraction").is_displayed()  # FTD's hidden
        driver.find_element(By.CSS_SELECTOR, "#inputs input[type=file]").send_keys(str(lr_image))
        wait.until(lambda d: lr_image.stem in d.find_element(By.ID, "inputs").text)  # the upload is listed
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: "upscaled in" in d.find_element(By.ID, "report").text)
        assert "1 of 1 upscaled" in driver.find_element(By.ID, "report").text
        srcs = [img.get_attribute("src") for img in driver.find_elements(By.CSS_SELECTOR, "#compare img")]
        after = Path(tmp_path / "after.png")
        after.write_bytes(urllib.request.urlopen(srcs[-1], timeout=30).read())
        with Image.open(lr_image) as lr, Image.open(after) as sr:
            assert sr.size == (4 * lr.width, 4 * lr.height)
        shot = tmp_path / "webui.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("FLUXSR_SCREENSHOT"):  # the README's picture: FLUXSR_SCREENSHOT=docs/webui.png
            shutil.copyfile(shot, os.environ["FLUXSR_SCREENSHOT"])
    finally:
        driver.quit()


def test_through_gradio_client_bad_uploads_are_named_models_load_once_and_requests_queue(app, lr_image, tmp_path):
    from gradio_client import Client, handle_file

    bomb = bomb_png(tmp_path / "bomb.png")  # a header declaring 60000 x 60000 pixels
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    client = Client(app["url"], verbose=False)
    folder = str(app["models"]["meanflow"].resolve())
    args = dict(folder=folder, scale=4, tile=0, color_fix="adain", step_fraction=1, tau=0.5, steps=4, guidance=2,
                guidance_scale=1, seed=3, api_name="/upscale")
    compare, downloads, report = client.predict(files=[handle_file(lr_image), handle_file(text), handle_file(bomb)],
                                                **args)
    assert "1 of 3 upscaled" in report
    assert "| notes.png | failed: " in report and "notes.png: not an image" in report
    assert "| bomb.png | failed: " in report and "60000x60000" in report and "infer.max_input_pixels" in report
    assert "Traceback" not in report
    (out,) = downloads
    with Image.open(out) as sr, Image.open(compare[0]) as before:
        assert sr.size == (80, 96) and before.size == sr.size
    observed = app["observed"]
    assert observed.loads.count(folder) == 1
    jobs = [client.submit(files=[handle_file(lr_image)] * 3, **args) for _ in range(2)]  # two people at once
    results = [j.result(timeout=120) for j in jobs]
    assert observed.loads.count(folder) == 1  # the folder was loaded once
    assert observed.most_at_once == 1  # the queue ran them one after the other
    with Image.open(results[0][1][0]) as a, Image.open(results[1][1][0]) as b, Image.open(out) as first:
        assert a.tobytes() == b.tobytes() == first.tobytes()  # same knobs and seed, same image
    with pytest.raises(Exception, match="no trained model at"):  # a typed path that is no model: the page says so
        client.predict(files=[handle_file(lr_image)], **{**args, "folder": str(tmp_path)})
    four = client.predict(files=[handle_file(lr_image)], **{**args, "steps": 1})
    with Image.open(four[1][0]) as one, Image.open(out) as first:
        assert one.tobytes() != first.tobytes()  # 1 step and 4 steps of the same network differ


def test_serve_starts_on_the_tiny_preset_without_a_model_behind_auth(tmp_path):
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(BIN / "fluxsr"), "serve", "--root", str(tmp_path / "empty"), "--port", str(port),
                             "--auth", "ada:secret"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # answering (the login page)
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail((tmp_path / "serve.log").read_text()[-3000:])
                time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url + "/config", timeout=10)
        assert denied.value.code == 401
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        form = urllib.parse.urlencode({"username": "ada", "password": "secret"}).encode()
        opener.open(url + "/login", data=form, timeout=10)
        config = opener.open(url + "/config", timeout=10).read().decode()
        assert "no trained model is selected" in config and "base model (untrained" in config
    finally:
        stop_process_group(proc)
        log.close()
