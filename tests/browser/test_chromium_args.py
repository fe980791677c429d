"""The flags the tests and benchmarks launch Debian's Chromium with.

Our `--disable-features` replaces Playwright's own (Chromium keeps the last such switch), so it
must carry every feature the installed Playwright turns off; and it must stop Chromium from
loading the address bar's popup pages for each new browser context, which cost about a second
of CPU beside every page the tests and benchmarks measure.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.servers.voila import CHROMIUM_ARGS, VIEWPORT

pytestmark = pytest.mark.integration


def disabled_features() -> set[str]:
    switch = [a for a in CHROMIUM_ARGS if a.startswith("--disable-features=")]
    assert len(switch) == 1, CHROMIUM_ARGS
    return set(switch[0].split("=", 1)[1].split(","))


def playwright_disabled_features() -> set[str]:
    """The names in the `disabledFeatures = [...]` list of Playwright's Node driver."""
    import playwright

    bundle = Path(playwright.__file__).parent / "driver/package/lib/coreBundle.js"
    text = bundle.read_text(encoding="utf-8")
    found = re.search(r"disabledFeatures = \[(.*?)\]\.filter", text, re.S)
    assert found, f"{bundle}: no disabledFeatures list (Playwright changed its layout)"
    body = re.sub(r"//[^\n]*", "", found.group(1))
    return set(re.findall(r'"([A-Za-z0-9]+)"', body))


def test_our_switch_keeps_every_feature_playwright_disables() -> None:
    theirs = playwright_disabled_features()
    assert len(theirs) >= 10
    missing = theirs - disabled_features()
    assert not missing, f"add to PLAYWRIGHT_DISABLED_FEATURES in tests/servers/voila.py: {missing}"


def test_a_new_context_opens_no_browser_ui_page(chromium: Any) -> None:
    session = chromium.new_browser_cdp_session()
    context = chromium.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto("data:text/html,<p>one page</p>")
        page.wait_for_timeout(1500)  # the popups used to load within a second
        targets = session.send("Target.getTargets")["targetInfos"]
    finally:
        context.close()
        session.detach()
    kinds = sorted((t["type"], t["url"]) for t in targets)
    assert ("page", "data:text/html,<p>one page</p>") in kinds
    assert not [k for k in kinds if k[0] == "browser_ui" or k[1].startswith("chrome://")], kinds
