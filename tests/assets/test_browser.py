"""What a person sees, in a real browser: Debian's chromium, driven by Playwright, against `dagster
dev` serving a labelling run of the tiny model. The launchpad shows each resource field's
description, the pass-rate picture is the first metadata entry and says it is a picture, and the
run's log shows the engine start-up under the step it delayed. Screenshots land in the test's
folder (kept by pytest under its basetemp) for a person to look at."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from assets.deployment import resources
from assets.jobs import all_assets, probe_assets
from assets.metadata import picture_key
from assets.resources import TargetModel, TransformersEngineResource
from tests.assets.test_dagster_dev import LAUNCHER, REPO, free_port, get, loaded_location, stop, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason="no chromium binary: on Debian, apt-get install chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'")

LABELLING = ["problems", "quarantined_problems", "unique_problems", "duplicate_problems", "rollouts",
             "rollout_allocation", "rewards", "pass_rates"]
# The first visit to a fresh instance opens a newsletter dialog over the page.
INSTANCE = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
CURSOR_ON = """name => { const cm = document.querySelector('.CodeMirror').CodeMirror;
  for (let i = 0; i < cm.lineCount(); i++) { const at = cm.getLine(i).indexOf(name + ':');
    if (at >= 0) { cm.focus(); cm.setCursor({line: i, ch: at + 1}); return i; } } return -1; }"""


@pytest.fixture
def served(tmp_path, home, tiny_llama):
    """`dagster dev` on a Dagster home that holds one labelling run of the tiny model."""
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(INSTANCE)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "GRADUS_HOME": str(home),
           "GRADUS_MODEL_PATH": tiny_llama.path, "GRADUS_ENGINE": "transformers"}
    deployed = resources(env, engine=TransformersEngineResource(batch_size=8),
                         target_model=TargetModel(model_path=tiny_llama.path, max_tokens=4))
    config = {"ops": {"problems": {"config": {"generators": [{"name": "chain_sum", "levels": [0], "size_per_level": 3}]}},
                      "rollouts": {"config": {"samples_per_problem": 2}}}}
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        run = materialize(all_assets + probe_assets, selection=LABELLING, resources=deployed, instance=instance,
                          run_config=config)
    assert run.success
    port = free_port()
    dagster_cli = str(Path(sys.executable).with_name("dagster"))
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, dagster_cli, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(f"{base}/server_info"), 150, "no answer on /server_info", proc)
        wait_for(lambda: loaded_location(base), 60, "the code location did not load", proc)
        yield base, run.run_id
    finally:
        stop(proc)


@pytest.mark.timeout(300)
def test_a_person_sees_descriptions_pictures_and_progress(served, tmp_path):
    base, run_id = served
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(60_000)

        page.goto(f"{base}/locations/assets.definitions/jobs/label_job/playground", wait_until="networkidle")
        page.wait_for_selector(".CodeMirror")
        assert page.evaluate(CURSOR_ON, "temperature") >= 0
        sync_api.expect(page.get_by_text("sampling temperature; pass rates depend on it")).to_be_visible()
        page.screenshot(path=tmp_path / "launchpad.png")

        page.goto(f"{base}/assets/pass_rates", wait_until="networkidle")
        key = picture_key("pass-rate histogram per category")
        sync_api.expect(page.get_by_text(key, exact=True)).to_be_visible()
        table = page.locator("table", has_text=key).first
        assert table.locator("tbody tr").first.inner_text().startswith(key)
        table.get_by_text("[Show Markdown]").first.click()
        picture = page.locator('[role="dialog"] img[src^="data:image/png;base64,"]')
        sync_api.expect(picture).to_be_visible()
        assert picture.evaluate("img => img.naturalWidth") > 200
        page.screenshot(path=tmp_path / "pass_rates.png")
        page.keyboard.press("Escape")

        page.goto(f"{base}/runs/{run_id}", wait_until="networkidle")
        page.get_by_placeholder("Filter").first.fill("engine")  # the log list renders only what is in view
        sync_api.expect(page.get_by_text("transformers engine ready in").first).to_be_visible()
        page.screenshot(path=tmp_path / "run.png")
        browser.close()
