"""Look at the pipeline's artifacts, logs and deployment parameters in the Prefect UI, in a real browser (issue 20
§5, §6): headless Chromium from the system (design §10: never `playwright install`) driven by Playwright, against a
running Prefect server that already holds an `fmnist run` / `fmnist search` / `fmnist deploy`.

    PREFECT_UI_API_URL=http://127.0.0.1:4311/api .venv/bin/prefect server start --port 4311 &
    PREFECT_API_URL=http://127.0.0.1:4311/api .venv/bin/fmnist run --preset quick   # (and search, deploy)
    PREFECT_API_URL=http://127.0.0.1:4311/api .venv/bin/python benchmarks/ui_look.py /tmp/ui-shots

On a port other than 4200 the server needs PREFECT_UI_API_URL, or its UI calls 4200 and shows only "Can't connect
to Server API" (every header below then comes back empty). Needs `pip install playwright` (not a project
dependency) and /usr/bin/chromium (Debian's `chromium`). Writes one PNG per page and prints, per page, the table
headers and first rows the browser shows, for a person to read.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

API = os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api").rstrip("/")
UI = API.removesuffix("/api")
CHROMIUM = "/usr/bin/chromium"


def post(path: str, body: dict | None = None) -> list[dict]:
    request = urllib.request.Request(f"{API}{path}", data=json.dumps(body or {}).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def pages() -> list[tuple[str, str, str]]:
    """(name, URL, tab to click) of each page to look at: the latest artifact of each fmnist key, its flow run's Artifacts and
    Logs tabs, and each fmnist deployment's Parameters tab."""
    found: list[tuple[str, str, str]] = []
    latest: dict[str, dict] = {}
    for artifact in post("/artifacts/filter", {"sort": "CREATED_DESC", "limit": 200}):
        if (artifact.get("key") or "").startswith("fmnist-"):
            latest.setdefault(artifact["key"], artifact)
    flow_runs = []
    for key, artifact in sorted(latest.items()):
        found.append((f"artifact-{key}", f"{UI}/artifacts/artifact/{artifact['id']}", ""))
        if artifact["flow_run_id"] not in flow_runs:
            flow_runs.append(artifact["flow_run_id"])
    for number, flow_run in enumerate(flow_runs):
        found.append((f"flowrun{number}-artifacts", f"{UI}/runs/flow-run/{flow_run}", "Artifacts"))
        found.append((f"flowrun{number}-logs", f"{UI}/runs/flow-run/{flow_run}", "Logs"))
    for deployment in post("/deployments/filter", {"limit": 50}):
        found.append((f"deployment-{deployment['name']}-parameters",
                      f"{UI}/deployments/deployment/{deployment['id']}", "Parameters"))
    return found


def main(out: Path) -> int:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        for name, url, tab in pages():
            page.goto(url, wait_until="networkidle", timeout=30_000)
            if tab:  # the flow run's and the deployment's tabs are <li class=p-tab>, not addresses
                page.locator("li.p-tab", has_text=tab).first.click()
                page.wait_for_load_state("networkidle")
            page.wait_for_timeout(2000)
            if tab == "Logs":  # the records scroll inside the page: show where training starts
                starting = page.get_by_text("starting on", exact=False)
                if starting.count():
                    starting.first.scroll_into_view_if_needed()
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            headers = page.eval_on_selector_all("th", "cells => cells.map(c => c.innerText.trim())")
            first = page.eval_on_selector_all("tbody tr:first-child td", "cells => cells.map(c => c.innerText.trim())")
            print(f"{name}: {url} {tab}\n  headers: {headers}\n  first row: {first}")
            if tab == "Logs":  # every record the tab shows, as the browser renders it
                (out / f"{name}.txt").write_text(page.inner_text("body"))
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ui-look")))
