"""Headless Chromium for the report card tests: opens a card's file:// URL with the page's
`#test-click=N:T` hook (which clicks word T of case N through the page's own click handler) and
returns what the hook wrote into <pre id="test-result">.

No network: a proxy at 127.0.0.1:9 (nothing listens there) catches any request, and the page
itself loads nothing (images are data URIs, script and styles inline).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
  for name in BROWSERS:
    path = shutil.which(name)
    if path:
      return path
  return None


def click_word(page: str, case: int, token: int, timeout: float = 60.0,
               filter_by: tuple[str, str] | None = None) -> dict:
  """The hook's JSON result after clicking word `token` of case `case` in the page at `page`
  (and, with `filter_by` = (keyword, where), after choosing that filter)."""
  browser = find_browser()
  if browser is None:
    raise RuntimeError("no chromium on PATH")
  url = f"file://{os.path.abspath(page)}#test-click={case}:{token}"
  if filter_by is not None:
    url += f"&test-filter={filter_by[0]}:{filter_by[1]}"
  with tempfile.TemporaryDirectory() as profile:
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--disable-background-networking",
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
         f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=timeout, check=False)
  m = re.search(r'<pre id="test-result">(.*?)</pre>', proc.stdout, re.S)
  if m is None:
    raise AssertionError(f"no test result in the dumped DOM (exit {proc.returncode}); "
                         f"stderr tail: {proc.stderr[-2000:]}")
  return json.loads(html.unescape(m.group(1)))
