"""The rendered site (``make report``): the findings text read from saved tables, and the built site in a browser.

The unit tests give :mod:`kgdistill.study.report` small synthetic csv tables (numbers appear, a
missing or empty table gives its one-line note). The browser test builds the smoke site with
``scripts/build_report.py`` from what a fresh clone has (the committed smoke-executed notebooks;
the tables and figures of ``results/smoke`` when a smoke reproduction left them, else the
committed cpu ones, copied into a scratch results folder, so that the findings have numbers to
check), serves it on 127.0.0.1 and loads pages in headless Chromium (selenium with Debian's
``chromium`` and ``chromium-driver``, nothing downloaded): no broken image, every local link
answers 200, and a number of the findings page equals its csv. It skips where Chromium is missing.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from kgdistill.study import report
from kgdistill.study.report import Site

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def write(folder: Path, name: str, frame: pd.DataFrame, index: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{name}.csv", index=index)


def comparison() -> pd.DataFrame:
    return pd.DataFrame({"dataset": ["Kinship"], "source rank": [100], "best alternative (valid)": ["KD"],
                         "valid MRR MetaSD": [0.5638], "valid MRR alt.": [0.7575], "test MRR Δ": [-0.202346],
                         "95% interval": ["[-0.2327, -0.1720]"], "per-seed Δ": ["-0.16 -0.18"], "seeds": [5],
                         "verdict": ["KD better than MetaSD"], "best at equal size (valid)": ["KD"]})


def setting() -> pd.DataFrame:
    return pd.DataFrame({"basis": ["full size", "equal size", "equal size"], "converged": ["5/5", "4/5 †", "5/5"],
                         "size": [30800, 3080, 3080], "MRR": [0.864339, 0.552459, 0.754805]},
                        index=["source", "MetaSD", "KD"])


def test_equal_size_finding_reads_its_numbers_from_the_tables(tmp_path):
    write(tmp_path, "equal_size_comparison", comparison())
    write(tmp_path, "equal_size_Kinship_r100", setting(), index=True)
    text = report.equal_size_finding(Site(tmp_path, notebooks=("08_equal_size",)))
    for number in ("-0.2023", "[-0.2327, -0.1720]", "0.5525", "0.7548", "3080"):
        assert number in text, number
    assert "**1 of 1** settings the interval lies below 0" in text
    assert "Kinship / 100 <table-equal_size_kinship_r100>`†" in text  # the setting's † mark, linked
    assert "[notebook 08](notebooks/08_equal_size.ipynb)" in text


def test_a_missing_or_empty_table_gives_one_line(tmp_path):
    site = Site(tmp_path)
    for finding in (report.equal_size_finding, report.official_code_finding):
        text = finding(site)
        assert "\n" not in text and "not saved" in text
    assert report.distile_stage2_finding(site).count("is not saved for this profile") == 2
    page = report.findings_page("demo", "a demo profile.", site, ["built now"], {"demo": 0})
    assert "## Findings of this study" in page and "No table is saved" in page
    (tmp_path / "equal_size_comparison.csv").write_text(",".join(comparison().columns) + "\n")
    text = report.equal_size_finding(site)
    assert "\n" not in text and "has no rows" in text
    write(tmp_path, "distile_table6", pd.DataFrame({"model": ["TransE"], "score": [0.1]}))  # another layout
    assert report.guarded(report.distile_stage2_finding, Site(tmp_path)).startswith("*This finding could not be read")


def test_official_code_finding_shows_both_evaluations_and_untrained_datasets(tmp_path):
    def cells(recipe: str, mrr: tuple[float, float]) -> list[dict]:
        return [{"row": recipe, "eval": "pruned", "rate": 0.9, "selected on": "valid", "MRR": mrr[0],
                 "read / source": 0.1, "cell": "measured"},
                {"row": recipe, "eval": "official_dense", "rate": 0.8, "selected on": "valid", "MRR": mrr[1],
                 "read / source": 0.7839, "cell": "measured"}]
    write(tmp_path, "official_code_Kinship",
          pd.DataFrame(cells("paper equations", (0.497986, 0.70796)) + cells("official code", (0.4044, 0.6312))))
    write(tmp_path, "official_code_WN18RR", pd.DataFrame([{"row": "official code", "eval": "pruned", "rate": 0.9,
                                                           "selected on": "valid", "cell": "run not trained yet"}]))
    write(tmp_path, "official_code_selection_Kinship", pd.DataFrame({"rule": ["valid"]}))  # not a main table
    text = report.official_code_finding(Site(tmp_path))
    assert "0.4980" in text and "0.7080" in text and "0.6312" in text and "78%" in text and "10%" in text
    assert "no run trained yet" in text and "official_code_WN18RR" in text
    assert "selection" not in text


def test_distile_finding_computes_stage_2_and_ds_differences(tmp_path):
    table6 = pd.DataFrame({"model": ["TransE"] * 3, "dim": [32] * 3, "method": ["DS", "-S1", "-S2"],
                           "converged": ["yes", "not trained yet", "yes"], "MRR": [0.163687, None, 0.170093],
                           "MRR paper": [0.201, 0.196, 0.193]})
    table3 = pd.DataFrame({"model": ["ComplEx"] * 2, "dim": [8] * 2, "method": ["no-DS", "DS"],
                           "converged": ["yes", "no †"], "MRR": [0.240138, 0.263206], "MRR paper": [0.046, 0.137]})
    write(tmp_path, "distile_table6", table6)
    write(tmp_path, "distile_table3", table3)
    text = report.distile_stage2_finding(Site(tmp_path))
    assert "-0.0064" in text and "0.0080" in text  # DS − −S2, measured and paper
    assert "1 of 3 rows not trained yet" in text and "**1 of 1** measured pairs" in text
    assert "0.2632†" in text and "0.0231" in text and "0.0910" in text and "**1 of 1** pairs" in text


def test_coverage_counts_measured_untrained_and_budget_rows(tmp_path):
    write(tmp_path, "table1_X", pd.DataFrame({"converged": ["no †", "yes", "not trained yet"],
                                              "MRR": [0.2, 0.3, None]}))
    text = report.coverage_table(Site(tmp_path, notebooks=("01_main_results",)))
    assert "| 3 | 2 | 1 | 1 |" in text and "[notebook 01](notebooks/01_main_results.ipynb)" in text


def test_executed_notebooks_fall_back_to_the_committed_ones_for_smoke_only(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for name in ("00_a.ipynb", "01_b.ipynb"):
        (tmp_path / "notebooks" / name).write_text("{}")
    results = tmp_path / "results" / "smoke"
    assert report.executed_notebooks(results, "smoke", tmp_path) == (
        tmp_path / "notebooks", [tmp_path / "notebooks" / "00_a.ipynb", tmp_path / "notebooks" / "01_b.ipynb"])
    assert report.executed_notebooks(tmp_path / "results" / "cpu", "cpu", tmp_path)[1] == []
    (results / "notebooks").mkdir(parents=True)
    (results / "notebooks" / "00_a.ipynb").write_text("{}")
    (results / "notebooks" / "01_b.failed.ipynb").write_text("{}")
    assert report.executed_notebooks(results, "smoke", tmp_path)[1] == [results / "notebooks" / "00_a.ipynb"]


# --- the built site in a browser ----------------------------------------------------------------
def browser():
    """Headless Chromium through selenium and Debian's chromedriver (no Selenium Manager download)."""
    pytest.importorskip("sphinx", reason="the site needs sphinx: pip install -e .[report]")
    pytest.importorskip("myst_nb", reason="the site needs myst-nb: pip install -e .[report]")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e .[dev]")
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"no Chromium ({CHROMIUM}) or chromedriver ({CHROMEDRIVER}): "
                    "apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900")
    for flag in flags:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The smoke site built into a scratch folder and served on a free port of 127.0.0.1."""
    driver = browser()
    scratch = tmp_path_factory.mktemp("site")
    smoke = ROOT / "results" / "smoke"
    source = smoke if (smoke / "tables" / "equal_size_comparison.csv").is_file() else ROOT / "results" / "cpu"
    for sub in ("tables", "figures"):
        if (source / sub).is_dir():
            shutil.copytree(source / sub, scratch / "results" / sub)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_report.py"), "--profile", "smoke",
                           "--results-dir", str(scratch / "results"), "--out", str(scratch / "out"),
                           "--work", str(scratch / "work")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    handler = functools.partial(QuietHandler, directory=str(scratch / "out"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield driver, f"http://127.0.0.1:{server.server_address[1]}/", scratch / "results" / "tables"
    finally:
        driver.quit()
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def check_page(driver, url: str, base: str) -> None:
    """The page loads, every image has pixels, every local href and src answers 200."""
    driver.get(url)
    assert driver.execute_script("return document.readyState") == "complete"
    broken = driver.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
    assert broken == [], f"{url}: broken images {broken}"
    links = driver.execute_script(
        "return Array.from(document.querySelectorAll('[href], [src]')).map(e => e.href || e.src)")
    local = sorted({link.split("#")[0] for link in links if isinstance(link, str) and link.startswith(base)})
    assert local, f"{url}: no local link"
    failed = []
    for link in local:
        try:
            with urllib.request.urlopen(link, timeout=10) as answer:
                if answer.status != 200:
                    failed.append(f"{link}: {answer.status}")
        except urllib.error.HTTPError as error:
            failed.append(f"{link}: {error.code}")
    assert failed == [], f"{url}: broken links {failed}"


def test_the_site_has_no_broken_image_or_link_and_its_findings_match_the_csv(served):
    driver, base, tables = served
    check_page(driver, base + "index.html", base)
    row = pd.read_csv(tables / "equal_size_comparison.csv").iloc[0]
    cells = driver.execute_script(
        "return Array.from(document.querySelectorAll('tr')).map(r => Array.from(r.cells).map(c => c.innerText.trim()))")
    setting = next(c for c in cells if c and c[0].startswith(f"{row['dataset']} / {int(row['source rank'])}"))
    assert report.fmt(row["test MRR Δ"]) in setting and row["95% interval"] in setting
    notebooks = driver.execute_script(
        "return Array.from(document.querySelectorAll('a[href*=\"notebooks/08_\"]')).map(a => a.href)")
    assert notebooks, "the findings link notebook 08's page"
    check_page(driver, base + "figures.html", base)
    check_page(driver, notebooks[0].split("#")[0], base)
    assert "Compression at equal size" in driver.title
    assert driver.execute_script("return document.querySelectorAll('.cell_output img').length") > 0
