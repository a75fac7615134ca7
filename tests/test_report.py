"""The report: rebuilt from a planted results directory alone, checked as HTML and in headless Chromium."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from tests_helpers import simulate_results

from synscale.report.html import write_report

EVIL = "<b>boot</b> & $x$ <script>window.pwned=1</script>"
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", EVIL]
K = {"real": [0.3] * 10, "syn-a": [0.05, 0.05, 0.3, 0.3, 0.45, 0.45, 0.2, 0.2, 0.35, 0.1],
     "syn-b": [0.1, 0.2, 0.1, 0.2, 0.1, 0.2, 0.1, 0.2, 0.1, 0.2]}
PERF = {"real": [1.0] * 10, "syn-a": [0.0, 0.1, 2.0, 2.1, 0.5, 0.6, 1.0, 1.1, 1.5, 0.8], "syn-b": [0.5] * 10}
SECTIONS = ["summary", "generation", "ability", "quality", "scaling", "ood", "per-class", "predictor", "forecasts",
            "samples", "clip", "findings", "points", "method"]
FIGURES = ["1", "2", "3", "4", "6", "7", "A5", "A13", "k-pred", "r"]  # drawn from the planted results (no probes, no CLIP)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("study")
    simulate_results(w / "results", K, PERF, CLASSES, per_class_eval=300)
    _sets_on_disk(w)
    (w / "study.json").write_text('{"name": "planted", "fit": {"bootstrap": 100, "saturating_bootstrap": 10}}')
    return write_report(w, "planted <study>")


def _sets_on_disk(w: Path) -> None:
    """A real training set and syn-a's generated set as shards (dark real images, bright generated ones), so
    the report draws its sample grids."""
    import json

    import numpy as np

    from synscale.data.shards import ShardWriter
    from synscale.labels import LabelSet

    labels = LabelSet(tuple(CLASSES))
    for name, level in (("real", 40), ("syn-a", 220)):
        with ShardWriter(w / "sets" / name, labels, shard_size=100) as writer:
            for c in range(len(CLASSES)):
                for i in range(8):
                    writer.write(f"{name}-{c}-{i}", np.full((28, 28), level, np.uint8), c)
    gen = pd.read_parquet(w / "results" / "generation.parquet")
    gen.loc[gen.config == "syn-a", "set_path"] = str(w / "sets" / "syn-a")
    gen.to_parquet(w / "results" / "generation.parquet", index=False)
    meta = json.loads((w / "results" / "meta.json").read_text())
    (w / "results" / "meta.json").write_text(json.dumps({**meta, "real_train_path": str(w / "sets" / "real")}))


def _registered() -> list[str]:
    from synscale.report.figures import FIGURES as REGISTRY

    return [key for key, _ in REGISTRY.entries()]


@pytest.mark.parametrize("key", _registered())
def test_every_registered_figure_is_in_its_section(report, key):
    """Each figure of the registry is on the page once, drawn or left out with its reason, inside the section it
    declares."""
    from synscale.report.figures import FIGURES as REGISTRY

    page = report.read_text()
    assert (f'id="fig-{key}"' in page) != (f'id="missing-fig-{key}"' in page)
    section = page.split(f'<section id="{REGISTRY.get(key).section}"', 1)[1].split("</section>", 1)[0]
    assert f'fig-{key}"' in section
    assert (key in FIGURES) == (f'id="fig-{key}"' in page)


def test_report_is_rebuilt_from_results_alone(report):
    results = report.parent.parent / "results"
    for name in ("fits", "per_class", "correlations", "predictions", "forecasts", "forecast_calibration", "exchange"):
        assert (results / f"{name}.parquet").exists()
    page = report.read_text()
    for s in SECTIONS:
        assert f'<section id="{s}"' in page
    for f in FIGURES:
        assert f'id="fig-{f}"' in page
        assert not (report.parent / "missing").exists()
    for stem in ("fig1_scaling_ability", "fig3_scaling_val", "fig6_per_class", "figA5_deciles"):
        assert (report.parent / f"{stem}.png").stat().st_size > 5000 and (report.parent / f"{stem}.svg").exists()
    # a figure whose inputs do not exist is left out with a sentence, never drawn empty
    assert 'id="missing-fig-8"' in page and "no CLIP training results" in page
    assert 'id="missing-fig-probe"' in page
    # the guidance-scale comparison exists (syn-a cfg 2, syn-b cfg 4); no two configurations differ only in prompts
    assert 'id="table-A6"' in page and 'id="missing-table-A4"' in page
    # the forecasts: their calibration and the exchange rates as tables, a summary line on what an image is worth
    forecasts = page.split('<section id="forecasts"', 1)[1].split("</section>", 1)[0]
    assert 'id="forecast-calibration"' in forecasts and 'id="exchange"' in forecasts and "Coverage of the 90%" in forecasts
    assert "real images (read off the real curve)" in page or "real images (forecast by the real power law)" in page
    # user text is escaped everywhere: the raw markup never reaches the page
    assert EVIL not in page and "window.pwned" not in page.replace("window.pwned=1&lt;", "")
    assert "&lt;b&gt;boot&lt;/b&gt; &amp; $x$ &lt;script&gt;" in page
    assert "planted &lt;study&gt;" in page
    # rebuilding without the analysis tables reruns the analysis and gives the same fits
    fits = pd.read_parquet(results / "fits.parquet")
    (results / "fits.parquet").unlink()
    write_report(report.parent.parent, "planted <study>")
    pd.testing.assert_frame_equal(pd.read_parquet(results / "fits.parquet"), fits)


def test_report_tells_the_two_lpips_apart(report):
    """The reference network's LPIPS-style distance (`lpips_ref`) is headed and described as such, never as the
    paper's LPIPS (AlexNet, `lpips_alex`)."""
    page = report.read_text()
    assert ">LPIPS-style distance (reference network)</th>" in page  # the metrics and per-class tables
    assert "<code>lpips_ref</code>" in page and "not the paper's LPIPS" in page and "LPIPS (AlexNet, paper)" in page
    assert "lpips_ref is the LPIPS-style distance on the reference network, not the paper&#x27;s LPIPS" in page  # A13
    assert ">lpips<" not in page and ">lpips_ref</th>" not in page


def _driver(tmp: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/test.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp / 'profile'}", "--window-size=1280,1600"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver_bin))


def test_report_renders_in_headless_chromium(report, tmp_path):
    from selenium.webdriver.common.by import By

    driver = _driver(tmp_path)
    try:
        driver.get(report.resolve().as_uri())
        assert "planted <study>" in driver.title
        for s in SECTIONS:
            assert driver.find_element(By.ID, s).is_displayed()
        # every figure's image decoded to real pixels
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) == len(FIGURES) + 1  # and syn-a's sample grid (syn-b's set is not on disk: said so)
        for alt, complete, w, h in images:
            assert complete and w > 200 and h > 100, alt
        # the sample grid: a row per class, real (dark) on the left, generated (bright) on the right, and the
        # configuration with a curve is open
        grid = driver.find_element(By.CSS_SELECTOR, "img.samples")
        assert grid.is_displayed() and grid.get_attribute("alt") == "samples of syn-a"
        assert "is not on this machine" in driver.find_element(By.ID, "samples").text
        # the findings: six rows, each with a verdict
        rows = driver.find_elements(By.CSS_SELECTOR, "#findings-table tbody tr")
        assert len(rows) == 6
        assert all(r.find_elements(By.TAG_NAME, "td")[2].text in ("holds", "does not hold", "not measurable")
                   for r in rows)
        # self-contained: nothing was fetched from anywhere but the page itself (figures are data: URIs)
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(u.startswith("data:") for u in fetched), fetched
        # the class name from the user's file is text, not markup: no script ran, no <b> was made of it
        assert driver.execute_script("return window.pwned === undefined")
        cells = driver.execute_script(
            "return Array.from(document.querySelectorAll('#per-class-table td')).map(td => td.textContent)")
        assert EVIL in cells
        # the tables sort on a click: the per-class table by k, ascending then descending
        table = driver.find_element(By.ID, "per-class-table")
        headers = table.find_elements(By.TAG_NAME, "th")
        col = [h.text for h in headers].index("k")
        headers[col].click()
        ks = [float(r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-v"))
              for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert ks == sorted(ks) and len(ks) == 30  # three configurations x ten classes
        headers[col].click()
        ks = [float(r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-v"))
              for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert ks == sorted(ks, reverse=True)
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
    finally:
        driver.quit()


def test_report_of_a_single_scale_leaves_out_what_needs_fits(tmp_path):
    """One scale: nothing can be fitted. The report still builds, and every figure that needs a fit
    says why it is left out instead of being drawn empty."""
    simulate_results(tmp_path / "results", {"real": [0.3] * 3, "syn": [0.2] * 3}, {"real": [1.0] * 3, "syn": [0.5] * 3},
                     ["a", "b", "c"], scales=(1000,))
    page = write_report(tmp_path, "one scale").read_text()
    for fig in ("1", "k-pred", "8"):
        assert f'id="missing-fig-{fig}"' in page
    assert "No per-class fits" in page and 'id="fig-3"' in page  # the points themselves are still drawn
    assert 'id="fig-2"' in page  # the paper's figure 2 is a one-scale grid: it needs no fit
    assert pd.read_parquet(tmp_path / "results" / "fits.parquet").empty


def test_sample_grid_puts_real_beside_generated_per_class(report):
    """syn-a's grid: one row per class, real images (level 40) left of the generated ones (level 220), and the
    row labels carry the class's category and recognizability."""
    import numpy as np
    from PIL import Image

    from synscale.report import samples as S

    png = np.asarray(Image.open(report.parent / "samples" / "syn-a.png").convert("L"))
    head, row = 16, S.CELL + 2
    assert png.shape[0] == head + len(CLASSES) * row
    for c in range(len(CLASSES)):
        y = head + c * row + S.CELL // 2
        real = png[y, S.LABEL_W: S.LABEL_W + S.REAL * S.CELL]
        gen = png[y, S.LABEL_W + S.REAL * S.CELL + 10: S.LABEL_W + S.REAL * S.CELL + 10 + S.GENERATED * S.CELL]
        assert (real == 40).all() and (gen == 220).all()
    labels = S._row_labels("syn-a", pd.read_parquet(report.parent.parent / "results" / "per_class.parquet"),
                           pd.read_parquet(report.parent.parent / "results" / "metrics_per_class.parquet"))
    assert len(labels) == len(CLASSES) and all("recog." in v for v in labels.values())
    assert any(v.startswith(("scaling", "easy", "poor")) for v in labels.values())


def test_figure6_says_where_a_configuration_has_no_metrics(tmp_path):
    """A mix has per-class fits but no metrics of its own: its diversity and recognizability panels say so
    instead of being drawn as empty axes (a figure is never drawn empty)."""
    import matplotlib

    from synscale.report.figures import FIGURES, Tables

    rows = []
    for config, measured in (("syn-a", True), ("mix-a", False)):
        for c in range(6):
            rows.append({"config": config, "source": config, "eval_set": "val", "class_name": f"c{c}", "k": 0.1 * c,
                         "perf_at_DI": -c / 3, "category": "other", "perf_at_max": -c / 4,
                         "diversity": 0.5 + c / 20 if measured else float("nan"),
                         "recognizability": 0.4 + c / 20 if measured else float("nan")})
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text, so the SVG can be read
        fig = FIGURES.get("6").draw(Tables(per_class=pd.DataFrame(rows)), tmp_path)
    svg = next(p for p in fig.paths if p.suffix == ".svg").read_text()
    assert not fig.missing
    assert "mix-a: no diversity measured" in svg and "mix-a: no recognizability measured" in svg
    assert "syn-a: no" not in svg and "mix-a: coloured by −log L at largest D" in svg
