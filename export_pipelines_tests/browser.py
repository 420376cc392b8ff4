"""Debian's Chromium driven by Playwright, and the screenshots a browser test leaves behind.

Playwright's own browser download (`playwright install`) is never used: the system
Chromium (`make system-deps` installs it where it can) is launched by path, with a fresh
profile, so a test sees the UI exactly as a first-time visitor does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",  # tests may run as root in a container, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}


def chromium_or_skip() -> None:
    """Skip when Playwright or Chromium is missing — except in CI, where that is a failure."""
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is not installed (pip install -e '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"{CHROMIUM} is missing (make system-deps installs Debian's chromium)")
    if problems:
        message = "browser test cannot run: " + "; ".join(problems)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def chromium_page() -> Iterator:
    """A page in headless Chromium with a profile of its own, removed afterwards."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data_dir=profile,
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport=VIEWPORT,
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


class Screenshots:
    """Numbered screenshots in `folder`, copied to `$EXPORT_TEST_ARTIFACTS/<name>/` when set.

    Used as a context manager: a failure inside it is photographed first, since the page as
    the test left it is what explains a failing browser test.
    """

    def __init__(self, page, folder: Path, name: str):
        self.page, self.folder, self.name = page, folder, name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def take(self, label: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{label}.png"
        self.page.screenshot(path=path)
        return path

    def __enter__(self) -> Screenshots:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None:
            with contextlib.suppress(Exception):  # never hide the test's own error
                self.take("failure")
        target = os.environ.get("EXPORT_TEST_ARTIFACTS")
        if target:
            shutil.copytree(self.folder, Path(target) / self.name, dirs_exist_ok=True)
