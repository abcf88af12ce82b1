"""The dashboard in a real browser: headless Debian chromium driven by Playwright."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.ui

SCREENSHOT = Path(__file__).resolve().parents[2] / "build" / "screenshots" / "dashboard.png"

# Methods in the data sources of the accuracy plots (sources with a standard-error column) that
# are reachable from the document's roots: replaced plots stay in ``all_models`` for a while.
PLOTTED_METHODS = """() => {
  const isModel = (v) => v !== null && typeof v === "object" && "id" in v && "attributes" in v;
  const seen = new Set();
  const stack = [];
  const visit = (v) => {
    if (v === null || typeof v !== "object" || ArrayBuffer.isView(v)) return;
    if (isModel(v)) { if (!seen.has(v)) { seen.add(v); stack.push(v); } return; }
    if (Array.isArray(v)) v.forEach(visit);
    else if (v instanceof Map) v.forEach((x, k) => { visit(k); visit(x); });
    else if (Object.getPrototypeOf(v) === Object.prototype) Object.values(v).forEach(visit);
  };
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) doc.roots().forEach(visit);
  while (stack.length) Object.values(stack.pop().attributes).forEach(visit);
  const methods = new Set();
  for (const model of seen) {
    const data = model.data instanceof Map ? Object.fromEntries(model.data) : model.data;
    if (!data || !("se" in data) || !("method" in data)) continue;
    for (const m of Array.from(data.method)) methods.add(String(m));
  }
  return Array.from(methods).sort();
}"""


def plotted_methods(page) -> list[str]:
    return page.evaluate(PLOTTED_METHODS)


def test_method_selection_updates_the_plots(page, dashboard_url):
    page.goto(dashboard_url)
    checkbox = page.get_by_label("allele_frequency", exact=True)
    checkbox.wait_for(timeout=30_000)
    page.wait_for_function(f"({PLOTTED_METHODS})().length === 3", timeout=30_000)
    assert plotted_methods(page) == ["allele_frequency", "beagle", "minimac4"]
    assert page.get_by_text("r² by MAF bin").count() == 0  # titles are drawn on canvas
    status = page.get_by_text("Showing sim_genotypes_quick")
    assert "3 method(s)" in status.inner_text()

    checkbox.click()
    page.wait_for_function(f"({PLOTTED_METHODS})().length === 2", timeout=30_000)
    assert plotted_methods(page) == ["beagle", "minimac4"]
    page.get_by_text("Hidden: allele_frequency").wait_for(timeout=10_000)
    assert "2 method(s)" in status.inner_text()
    assert not checkbox.is_checked()

    page.wait_for_timeout(500)  # let the canvases repaint before the picture
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000
