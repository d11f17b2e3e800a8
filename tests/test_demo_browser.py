"""`jpegrestore demo` driven in headless Chromium: a real JPEG and a clean PNG uploaded, two methods (a tiny QGAC and a
stochastic posterior sampler), metrics, std map and downloaded PNGs checked against `jpegrestore restore`'s files
for the same input and options, metrics recomputed independently (numpy PSNR, scikit-image SSIM).

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them); skipped without them outside CI.
Set JPEGRESTORE_DEMO_SCREENSHOT=PATH to keep the screenshot of the page (docs/images/demo.png is one).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_helpers import write_tiny_checkpoint
from PIL import Image
from posterior_helpers import write_posterior_checkpoint

from jpegrestore import jpeg
from jpegrestore.cli import main as jpegrestore_main

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser test: install Debian's chromium and chromium-driver "
                           "(.ci/run does: apt-get install -y chromium chromium-driver)")
    pytest.skip("headless Chromium is not installed (apt-get install -y chromium chromium-driver)",
                allow_module_level=True)
if os.environ.get("CI"):  # CI installs them (make test): missing is an error there
    import gradio  # noqa: F401
    from selenium import webdriver
else:
    pytest.importorskip("gradio", reason="gradio is not installed (see requirements-demo.txt)")
    webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,2000"]
QGAC_LABEL, POSTERIOR_LABEL = "tiny_qgac · qgac.ckpt", "posterior · post.ckpt"
PNG_QUALITY, PNG_LAYOUT, DRAWS, SEED = 35, "4:2:2", 3, 7
JPEG_QUALITY = 55


def _photo(height: int, width: int) -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()[80:80 + height, 160:160 + width].copy()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("demo")
    clean = folder / "clean.png"
    Image.fromarray(_photo(44, 60)).save(clean)
    source = folder / "source.png"
    Image.fromarray(_photo(40, 52)).save(source)
    real_jpeg = folder / "photo.jpg"  # Pillow's own file: its tables and coefficients
    Image.open(source).save(real_jpeg, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return {"clean": clean, "source": source, "jpeg": real_jpeg,
            "qgac": write_tiny_checkpoint(folder / "qgac.ckpt")[0],
            "posterior": write_posterior_checkpoint(folder / "post.ckpt"), "folder": folder}


def _wait_until_serving(url: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.seek(0)
                pytest.fail(f"jpegrestore demo did not start:\n{log.read()}")
            time.sleep(0.3)


@pytest.fixture(scope="module")
def server(files):
    """`jpegrestore demo` started on a free port (Chromium starts meanwhile; ``browser`` waits for it)."""
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    log = open(files["folder"] / "demo.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "jpegrestore", "demo", "--ckpt", str(files["qgac"]),
                                "--ckpt", str(files["posterior"]), "--host", "127.0.0.1", "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    yield f"http://127.0.0.1:{port}/", process, log
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(files, server):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    downloads = files["folder"] / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    url, process, log = server
    _wait_until_serving(url, process, log)
    driver.demo_url = url
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _open(driver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))


def _upload(driver, elem_id: str, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))
    WebDriverWait(driver, 30).until(lambda d: path.stem in d.find_element(By.ID, elem_id).text)


def _set_number(driver, elem_id: str, value: int) -> None:
    field = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    field.clear()
    field.send_keys(str(value), Keys.TAB)


def _run(driver) -> None:
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 120).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#metrics-table") or "Error" in d.find_element(By.ID, "status").text)


def _metrics(driver) -> dict[str, dict[str, str]]:
    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#metrics-table tbody tr"):
        cells = row.find_elements(By.CSS_SELECTOR, "td[data-metric]")
        rows[row.get_attribute("data-label")] = {c.get_attribute("data-metric"): c.get_attribute("data-value")
                                                 for c in cells}
    return rows


def _download(driver, name: str) -> np.ndarray:
    """Click the download link of ``name`` in the results list and read the file the browser saved."""
    link = driver.find_element(By.CSS_SELECTOR, f'#downloads a[download="{name}"]')
    driver.execute_script("arguments[0].click();", link)
    target = driver.downloads / name
    WebDriverWait(driver, 30).until(lambda d: target.exists() and not Path(f"{target}.crdownload").exists())
    time.sleep(0.2)
    return np.asarray(Image.open(target))


def _shown_image(driver, elem_id: str) -> np.ndarray:
    """The pixels of the image the page shows in ``elem_id`` (fetched from its src)."""
    source = WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f"#{elem_id} img").get_attribute("src"))
    with urllib.request.urlopen(source, timeout=10) as response:
        return np.asarray(Image.open(response).copy())


def _restore(args: list[str]) -> None:
    assert jpegrestore_main(["restore", *args, "-q"]) == 0


def _as_float(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float64) / 255


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((_as_float(a) - _as_float(b)) ** 2)))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(_as_float(a), _as_float(b), gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=1.0, channel_axis=2))


def _psnrb(a: np.ndarray, b: np.ndarray) -> float:
    from jpegrestore.metrics import psnrb

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(_as_float(x).transpose(2, 0, 1)).float()[None]

    return float(psnrb(tensor(a), tensor(b))[0])


def _check_metrics(row: dict[str, str], restored: np.ndarray, clean: np.ndarray) -> None:
    assert float(row["psnr"]) == pytest.approx(_psnr(restored, clean), abs=2e-3)
    assert float(row["ssim"]) == pytest.approx(_ssim(restored, clean), abs=2e-4)
    assert float(row["psnrb"]) == pytest.approx(_psnrb(restored, clean), abs=2e-3)


def test_demo_page_matches_restore(browser, files, tmp_path):
    server = browser.demo_url
    # 1. A clean PNG, compressed on the page at QF 35 4:2:2; both methods, 3 draws, seed 7, projection on.
    _open(browser, server)
    _upload(browser, "upload", files["clean"])
    _set_number(browser, "quality", PNG_QUALITY)
    browser.find_element(By.XPATH, f'//*[@id="layout"]//label[normalize-space()="{PNG_LAYOUT}"]').click()
    _set_number(browser, "draws", DRAWS)
    _set_number(browser, "seed", SEED)
    browser.find_element(By.CSS_SELECTOR, "#project input[type=checkbox]").click()
    _run(browser)
    status = browser.find_element(By.ID, "status").text
    assert f"quality {PNG_QUALITY}, {PNG_LAYOUT}" in status, status

    # The same JPEG made here, restored by `jpegrestore restore` with the same options.
    clean = np.asarray(Image.open(files["clean"]).convert("RGB"))
    coeffs = jpeg.encode(torch.from_numpy(np.ascontiguousarray(clean.transpose(2, 0, 1))).float()[None] / 255, quality=PNG_QUALITY,
                         subsampling=PNG_LAYOUT, rounding="exact")
    made = tmp_path / "clean.jpg"
    jpeg.write(made, coeffs)
    out = tmp_path / "restored"
    _restore([str(made), "-o", str(out / "qgac.png"), "--ckpt", str(files["qgac"]), "--project"])
    _restore([str(made), "-o", str(out / "post.png"), "--ckpt", str(files["posterior"]), "--samples", str(DRAWS),
              "--std-map", "--seed", str(SEED), "--project"])
    qgac = np.asarray(Image.open(out / "qgac.png"))
    draws = [np.asarray(Image.open(out / f"post_s{k}.png")) for k in range(DRAWS)]

    assert np.array_equal(_download(browser, "clean_tiny_qgac_qgac.ckpt.png"), qgac)
    assert np.array_equal(_download(browser, "clean_posterior_post.ckpt_s2.png"), draws[2])
    assert np.array_equal(_shown_image(browser, "std-1"), np.asarray(Image.open(out / "post_std.png")))

    rows = _metrics(browser)
    assert list(rows) == ["JPEG", QGAC_LABEL, POSTERIOR_LABEL]
    decoded = np.asarray(Image.open(made).convert("RGB"))
    _check_metrics(rows["JPEG"], decoded, clean)
    _check_metrics(rows[QGAC_LABEL], qgac, clean)
    _check_metrics(rows[POSTERIOR_LABEL], draws[0], clean)
    assert int(rows[POSTERIOR_LABEL]["draws"]) == DRAWS and int(rows[QGAC_LABEL]["draws"]) == 1
    spread = np.std(np.stack([_as_float(d) for d in draws]), axis=0, ddof=1).mean()
    assert float(rows[POSTERIOR_LABEL]["mean_std"]) == pytest.approx(spread, rel=1e-4)
    assert float(rows[QGAC_LABEL]["seconds"]) > 0

    # The synchronised zoom: a 16-px region at (x 8, y 4) of every image, magnified 16 times.
    for elem_id, value in (("zoom-size", 16), ("zoom-x", 8), ("zoom-y", 4)):
        _set_number(browser, elem_id, value)
    expected = np.kron(qgac[4:20, 8:24], np.ones((16, 16, 1), np.uint8))
    WebDriverWait(browser, 60).until(lambda d: _shown_image(d, "zoom-0").shape == expected.shape
                                     and np.array_equal(_shown_image(d, "zoom-0"), expected))

    # The before/after slider: the JPEG against the first method.
    slider = [urllib.request.urlopen(img.get_attribute("src"), timeout=10).read()
              for img in browser.find_elements(By.CSS_SELECTOR, "#slider img")]
    assert len(slider) == 2
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(slider[0])).convert("RGB")), decoded)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(slider[1]))), qgac)
    try:  # the screenshot shows every image once the browser has drawn them
        WebDriverWait(browser, 30).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('[id^=view-] img, [id^=std-] img, #slider img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"))
    except TimeoutException:
        pass
    screenshot = tmp_path / "demo.png"
    browser.save_screenshot(str(screenshot))
    if os.environ.get("JPEGRESTORE_DEMO_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["JPEGRESTORE_DEMO_SCREENSHOT"])

    # 2. A real JPEG (Pillow, QF 55 4:4:4) with its clean source as reference; one draw of the sampler, seed 5.
    _open(browser, server)
    _upload(browser, "upload", files["jpeg"])
    _upload(browser, "reference", files["source"])
    _set_number(browser, "draws", 1)
    _set_number(browser, "seed", 5)
    _run(browser)
    status = browser.find_element(By.ID, "status").text
    assert f"JPEG 4:4:4, estimated quality {JPEG_QUALITY} (IJG tables)" in status, status
    _restore([str(files["jpeg"]), "-o", str(out / "photo.png"), "--ckpt", str(files["qgac"])])
    _restore([str(files["jpeg"]), "-o", str(out / "photo_post.png"), "--ckpt", str(files["posterior"]), "--seed", "5"])
    restored = np.asarray(Image.open(out / "photo.png"))
    assert np.array_equal(_download(browser, "photo_tiny_qgac_qgac.ckpt.png"), restored)
    assert np.array_equal(_download(browser, "photo_posterior_post.ckpt.png"),
                          np.asarray(Image.open(out / "photo_post.png")))
    rows = _metrics(browser)
    assert list(rows) == ["JPEG", QGAC_LABEL, POSTERIOR_LABEL]
    assert int(rows[POSTERIOR_LABEL]["draws"]) == 1 and rows[POSTERIOR_LABEL]["mean_std"] == "None"
    _check_metrics(rows[QGAC_LABEL], restored, np.asarray(Image.open(files["source"]).convert("RGB")))

    # 3. A file that is no image: a message on the page, no traceback.
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    _open(browser, server)
    _upload(browser, "upload", bad)
    _run(browser)
    status = browser.find_element(By.ID, "status").text
    assert "Error" in status and "notes.png" in status and "Traceback" not in status, status
