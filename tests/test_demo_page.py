"""The demo page in headless Debian Chromium (selenium + /usr/bin/chromedriver; no browser is
downloaded): choose two photos, see both aligned crops, the similarity and the verdict."""

from __future__ import annotations

import shutil

import httpx
import pytest
from service_fixtures.server import LiveServer
from service_fixtures.tiny_model import cached, lfw_image

pytestmark = pytest.mark.timeout(600)

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def tiny_model(request):
    return cached(request.config)


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with LiveServer(tiny_model, tmp_path_factory.mktemp("demo") / "gallery") as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def run_page(browser, server, a, b, operating_point=None):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(server.url + "/")  # redirects to /demo/
    assert browser.current_url.endswith("/demo/")
    browser.find_element(By.ID, "image1").send_keys(str(a))
    browser.find_element(By.ID, "image2").send_keys(str(b))
    if operating_point:
        Select(browser.find_element(By.ID, "operating_point")).select_by_value(operating_point)
    browser.find_element(By.ID, "verify").click()
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: d.find_element(By.ID, "result").is_displayed() or d.find_element(By.ID, "error").is_displayed())
    return browser, By, wait, EC


def test_demo_page_shows_crops_similarity_and_verdict(browser, server):
    a, b = lfw_image("George_W_Bush", 49), lfw_image("George_W_Bush", 50)
    driver, By, wait, _ = run_page(browser, server, a, b)
    assert driver.find_element(By.ID, "result").is_displayed(), driver.find_element(By.ID, "error").text
    api = httpx.post(server.url + "/verify", files={"image1": a.read_bytes(), "image2": b.read_bytes()}).json()
    assert driver.find_element(By.ID, "similarity").text == f"{api['similarity']:.4f}"
    assert driver.find_element(By.ID, "threshold").text == f"{api['threshold']:.4f}"
    assert driver.find_element(By.ID, "verdict").text == ("Same person" if api["same_person"] else "Different people")
    assert api["same_person"] is True
    assert "far_1e-3" in driver.find_element(By.ID, "threshold_source").text
    for crop in ("crop1", "crop2"):  # both aligned crops decoded and shown at the model's 112x96
        size = driver.execute_script(
            "const i = document.getElementById(arguments[0]); return [i.complete, i.naturalWidth, i.naturalHeight];", crop)
        assert size == [True, 96, 112]
    # previews of the chosen photos
    assert driver.execute_script("return document.getElementById('preview1').naturalWidth") == 150


def test_demo_page_different_people(browser, server):
    driver, By, _, _ = run_page(browser, server, lfw_image("George_W_Bush", 49), lfw_image("Donald_Rumsfeld", 49),
                                operating_point="best_accuracy")
    assert driver.find_element(By.ID, "verdict").text == "Different people"
    assert "best_accuracy" in driver.find_element(By.ID, "threshold_source").text
    assert float(driver.find_element(By.ID, "similarity").text) < float(driver.find_element(By.ID, "threshold").text)


def test_demo_page_shows_typed_errors(browser, server, tmp_path):
    note = tmp_path / "note.jpg"
    note.write_text("this is a text file renamed .jpg\n" * 10)
    driver, By, _, _ = run_page(browser, server, note, lfw_image("George_W_Bush", 49))
    error = driver.find_element(By.ID, "error")
    assert error.is_displayed() and error.text.startswith("unsupported_media_type (image1)")
    assert not driver.find_element(By.ID, "result").is_displayed()
    assert server.alive() and httpx.get(server.url + "/health").status_code == 200
