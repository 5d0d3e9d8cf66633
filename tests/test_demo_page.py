"""The demo page in headless Debian Chromium (selenium + /usr/bin/chromedriver; no browser is
downloaded): choose two photos, see both aligned crops, the similarity, the verdict and what the
numbers mean; the page offers the model's calibrated operating points with its default
preselected, so it gives the verdict POST /verify gives without options."""

from __future__ import annotations

import shutil

import httpx
import pytest
from service_fixtures.server import LiveServer
from service_fixtures.model import crop_shape, default_operating_point, lfw_image

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]  # a server and a browser start-up

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def server(served_model, tmp_path_factory):
    with LiveServer(served_model, tmp_path_factory.mktemp("demo") / "gallery") as srv:
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
    wait = WebDriverWait(browser, 60)  # the operating points arrive from /health
    wait.until(lambda d: Select(d.find_element(By.ID, "operating_point")).first_selected_option.get_attribute("value"))
    browser.find_element(By.ID, "image1").send_keys(str(a))
    browser.find_element(By.ID, "image2").send_keys(str(b))
    if operating_point:
        Select(browser.find_element(By.ID, "operating_point")).select_by_value(operating_point)
    browser.find_element(By.ID, "verify").click()
    WebDriverWait(browser, 120).until(lambda d: d.find_element(By.ID, "result").is_displayed() or d.find_element(By.ID, "error").is_displayed())
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
    assert default_operating_point() in driver.find_element(By.ID, "threshold_source").text
    height, width = crop_shape()
    for crop in ("crop1", "crop2"):  # both aligned crops decoded and shown at the model's template size
        size = driver.execute_script(
            "const i = document.getElementById(arguments[0]); return [i.complete, i.naturalWidth, i.naturalHeight];", crop)
        assert size == [True, width, height]
    # previews of the chosen photos
    assert driver.execute_script("return document.getElementById('preview1').naturalWidth") == 150


def test_the_page_offers_the_models_operating_points_and_gives_the_apis_verdict(browser, server):
    """Colin Powell 0001 vs 0003 (for the current default model, between its far_1e-2 and far_1e-3
    thresholds): the page, untouched, must say what POST /verify with no options says, and explain it."""
    from selenium.webdriver.support.ui import Select

    health = httpx.get(server.url + "/health").json()["model"]
    a, b = lfw_image("Colin_Powell", 1), lfw_image("Colin_Powell", 3)
    driver, By, _, _ = run_page(browser, server, a, b)
    select = Select(driver.find_element(By.ID, "operating_point"))
    assert [o.get_attribute("value") for o in select.options] == [p["name"] for p in health["operating_points"]]
    assert select.first_selected_option.get_attribute("value") == health["default_operating_point"] == default_operating_point()
    api = httpx.post(server.url + "/verify", files={"image1": a.read_bytes(), "image2": b.read_bytes()}).json()
    assert driver.find_element(By.ID, "verdict").text == ("Same person" if api["same_person"] else "Different people")
    assert driver.find_element(By.ID, "threshold").text == f"{api['threshold']:.4f}"
    assert api["threshold_source"]["operating_point"] == health["default_operating_point"]
    meaning = driver.find_element(By.ID, "meaning").text  # the numbers explained next to the verdict
    assert f"{api['similarity']:.4f}" in meaning and f"{api['threshold']:.4f}" in meaning and health["default_operating_point"] in meaning
    point = next(p for p in health["operating_points"] if p["name"] == health["default_operating_point"])
    if point["far"]:
        assert f"1 in {round(1 / point['far']):,}" in meaning


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
