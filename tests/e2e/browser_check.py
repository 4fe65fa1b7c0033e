"""Headless-Chromium checks: every page of the built book, and JupyterLab opening a notebook.

    PYTHONPATH=tests python -m e2e.browser_check [--html DIR] [--page GLOB] [--screenshot PNG]
    PYTHONPATH=tests python -m e2e.browser_check lab [--notebook notebooks/X.ipynb] [--screenshot PNG]

(both in ``make e2e``; a developer check, not part of the installed package). Chromium (Debian package ``chromium``) is started with ``--headless
--no-sandbox --disable-gpu``, no network (every host name resolves to nothing) and the
DevTools protocol over a pipe (``--remote-debugging-pipe``: no port, no extra package).

**The book** (:func:`check_book`): every HTML page of the build (not the generated index and
search pages) is loaded and checked:

- the page loads and has a title;
- the results page(s) (default ``notebooks/06_results__*.html``) show at least
  ``--min-tables`` tables with rows and at least one figure;
- every image has loaded (``complete`` and ``naturalWidth > 0``);
- no notebook cell shows an error output (traceback);
- nothing overflows the main column: no table, figure or block sticks out to the right of
  the article, and the page has no horizontal scroll bar (at 1280 px);
- every formula is typeset by MathJax (served from the book itself);
- no JavaScript exception was thrown and no request left the machine (http/https/ws).

Full-page screenshots of the opening page and the results page are written (default
``<html>/../screenshots/``).

**JupyterLab** (:func:`check_lab`): starts ``jupyter lab`` on 127.0.0.1 (token, free port;
:class:`e2e.lab.JupyterServer`), opens a notebook in Chromium and waits until the
notebook is rendered (its cells, its Markdown title) with the project's kernel (``Python
(crapnet)``, registered by ``make lab``) and no dialog (e.g. "select kernel") in the way;
every request must go to the local server. A screenshot is written (default
``_build/screenshots/lab.png``).

Exit status 0 when every check passes, 1 otherwise (each failure printed), 2 when Chromium,
the book or JupyterLab is missing.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Executable names tried in order (``$CHROMIUM`` first when set).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Evaluated in the page: what the checks need, as one JSON-able object.
_PAGE_PROBE = r"""
(() => {
  const main = document.querySelector("main") || document.body;
  const tables = [...main.querySelectorAll("table")];
  const imgs = [...main.querySelectorAll("img")];
  return {
    title: document.title,
    h1: (main.querySelector("h1") || {}).textContent || "",
    tables: tables.length,
    tables_with_rows: tables.filter(t => t.querySelectorAll("tbody tr").length > 0).length,
    images: imgs.length,
    broken_images: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src")),
    error_outputs: main.querySelectorAll(".output.traceback, .output.error, .cell_output .traceback").length,
    math: main.querySelectorAll("span.math, div.math").length,
    math_rendered: main.querySelectorAll(".MathJax_CHTML, .MathJax, mjx-container").length,
    mathjax: !!(window.MathJax && (window.MathJax.Hub || window.MathJax.version)),
    height: Math.ceil(Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)),
    // overflow of the main column: elements sticking out to the right of the article
    overflow: (() => {
      const art = document.querySelector("article.bd-article") || main;
      const right = art.getBoundingClientRect().right;
      return [...art.querySelectorAll("table, img, figure, .cell_output > div, .output, .MathJax_Display")]
        .filter(e => e.getBoundingClientRect().width > 0 && e.getBoundingClientRect().right > right + 2)
        .map(e => `${e.tagName.toLowerCase()}${e.className ? "." + String(e.className).split(" ")[0] : ""}`
                  + ` ${Math.round(e.getBoundingClientRect().right - right)} px`).slice(0, 5);
    })(),
    page_scroll_x: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  };
})()
"""

#: Evaluated in JupyterLab: is the notebook rendered, with which kernel, is a dialog open?
_LAB_PROBE = r"""
(() => {
  const panel = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden)") || document.querySelector(".jp-NotebookPanel");
  const cells = panel ? panel.querySelectorAll(".jp-Cell").length : 0;
  const h1 = panel ? [...panel.querySelectorAll(".jp-MarkdownOutput h1")].map(h => h.textContent.trim()) : [];
  const dialog = document.querySelector(".jp-Dialog");
  const text = document.body ? document.body.innerText : "";
  return {
    title: document.title, cells: cells, h1: h1, failed_load: location.href.startsWith("chrome-error:"),
    dialog: dialog ? dialog.innerText.slice(0, 300) : null,
    kernel_shown: text.includes(KERNEL_NAME),
    kernel_idle: !!document.querySelector(".jp-NotebookPanel [data-status='idle'], .jp-Notebook-ExecutionIndicator[data-status='idle']"),
    height: Math.ceil(document.documentElement.scrollHeight),
  };
})()
"""


class BrowserError(RuntimeError):
    """Chromium could not be started or did not answer."""


def find_browser() -> str | None:
    """Path of a Chromium/Chrome executable (``$CHROMIUM`` first), or None."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).is_file() or shutil.which(env) else None
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """A headless Chromium driven through the DevTools protocol over a pipe (fds 3 and 4).

    Messages are JSON objects separated by NUL bytes; commands carry an ``id`` and get one
    answer with the same ``id``; events have a ``method``. One browser-level connection;
    page commands go to a flattened target session (``sessionId``).
    """

    def __init__(
        self, executable: str, width: int = 1280, height: int = 1600, timeout: float = 60.0, allow_local: bool = False
    ):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="crapnet-chromium-")
        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()
        args = [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--disable-component-update",
            "--disable-default-apps",
            "--mute-audio",
            "--allow-file-access-from-files",
            # no network: no host name resolves (allow_local: except the local server of the JupyterLab check)
            "--host-resolver-rules=MAP * ~NOTFOUND" + (", EXCLUDE 127.0.0.1, EXCLUDE localhost" if allow_local else ""),
            f"--window-size={width},{height}",
            "about:blank",
        ]

        def wire() -> None:  # in the child: the pipe ends become fds 3 (commands) and 4 (answers)
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=wire,
            pass_fds=(3, 4),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._answers: dict[int, dict] = {}
        self.events: queue.Queue[dict] = queue.Queue()
        self.log: list[dict] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._answers[-1] = {"error": {"message": "Chromium closed the DevTools pipe"}}
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._answers[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self.log.append(msg)
                    self.events.put(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its answer; raises :class:`BrowserError` on an error answer."""
        with self._cond:
            self._next_id += 1
            ident = self._next_id
        msg: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + self.timeout
        with self._cond:
            while ident not in self._answers and -1 not in self._answers:
                left = deadline - time.time()
                if left <= 0:
                    raise BrowserError(f"Chromium did not answer {method} within {self.timeout:.0f} s")
                self._cond.wait(left)
            answer = self._answers.pop(ident, None) or self._answers[-1]
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def wait_event(self, method: str, session: str | None = None, timeout: float | None = None) -> dict:
        deadline = time.time() + (timeout or self.timeout)
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise BrowserError(f"no {method} event within {timeout or self.timeout:.0f} s")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev.get("method") == method and (session is None or ev.get("sessionId") == session):
                return ev

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child_w, self._from_child_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


@dataclass
class PageReport:
    url: str
    probe: dict = field(default_factory=dict)
    remote_requests: list[str] = field(default_factory=list)
    js_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    screenshot: str | None = None
    seconds: float = 0.0


def check_page(
    browser: DevTools,
    path: Path,
    min_tables: int = 0,
    min_images: int = 0,
    screenshot: Path | None = None,
    settle: float = 1.0,
) -> PageReport:
    """Load ``path`` in a new tab, probe it, optionally take a full-page screenshot."""
    t0 = time.time()
    url = path.resolve().as_uri()
    report = PageReport(url)
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    mark = len(browser.log)
    for domain in ("Page", "Runtime", "Network"):
        browser.send(f"{domain}.enable", session=session)
    browser.send("Page.navigate", {"url": url}, session=session)
    browser.wait_event("Page.loadEventFired", session=session)
    time.sleep(settle)  # late scripts (theme) finish their work
    busy = "!!(window.MathJax && MathJax.Hub && (MathJax.Hub.queue.pending || MathJax.Hub.queue.running))"
    deadline = time.time() + 10
    while time.time() < deadline:  # MathJax 2 typesets asynchronously
        res = browser.send("Runtime.evaluate", {"expression": busy, "returnByValue": True}, session=session)
        if not res.get("result", {}).get("value"):
            break
        time.sleep(0.2)
    answer = browser.send("Runtime.evaluate", {"expression": _PAGE_PROBE, "returnByValue": True}, session=session)
    report.probe = answer.get("result", {}).get("value") or {}
    for ev in browser.log[mark:]:
        if ev.get("sessionId") != session:
            continue
        if ev.get("method") == "Network.requestWillBeSent":
            req_url = ev["params"]["request"]["url"]
            if req_url.split(":", 1)[0].lower() in ("http", "https", "ws", "wss"):
                report.remote_requests.append(req_url)
        elif ev.get("method") == "Runtime.exceptionThrown":
            det = ev["params"]["exceptionDetails"]
            report.js_errors.append((det.get("exception") or {}).get("description") or det.get("text", "?"))
    p = report.probe
    if not p:
        report.failures.append("the page could not be probed (no document?)")
    else:
        if not p.get("title"):
            report.failures.append("the page has no title")
        if p.get("tables_with_rows", 0) < min_tables:
            report.failures.append(f"{p.get('tables_with_rows', 0)} table(s) with rows, expected at least {min_tables}")
        if p.get("images", 0) < min_images:
            report.failures.append(f"{p.get('images', 0)} figure(s), expected at least {min_images}")
        if p.get("broken_images"):
            report.failures.append(f"images that did not load: {', '.join(p['broken_images'][:5])}")
        if p.get("error_outputs"):
            report.failures.append(f"{p['error_outputs']} error output(s) (tracebacks) in the page")
        if p.get("overflow"):
            report.failures.append(f"wider than the main column: {', '.join(p['overflow'])}")
        if p.get("page_scroll_x", 0) > 2:
            report.failures.append(f"the page scrolls horizontally by {p['page_scroll_x']} px at 1280 px width")
        if p.get("math") and p.get("math_rendered", 0) < p["math"]:
            why = "" if p.get("mathjax") else " (MathJax did not load: install libjs-mathjax and rebuild)"
            report.failures.append(f"{p['math'] - p.get('math_rendered', 0)} of {p['math']} formulas not rendered{why}")
    if report.remote_requests:
        report.failures.append(f"requests to the network: {', '.join(report.remote_requests[:5])}")
    if report.js_errors:
        report.failures.append(f"JavaScript exceptions: {'; '.join(report.js_errors[:3])}")
    if screenshot is not None:
        height = max(800, min(int(p.get("height") or 1600), 16000))
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        time.sleep(0.3)
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        report.screenshot = str(screenshot)
    browser.send("Target.closeTarget", {"targetId": target})
    report.seconds = time.time() - t0
    return report


#: Pages of a jupyter-book build that are not the book's own (Sphinx's generated index and search).
SKIPPED_PAGES = ("genindex.html", "search.html", "py-modindex.html")


def book_pages(html: Path) -> list[Path]:
    """Every page of the built book (``*.html`` outside ``_static``/``_sources``/``_images``), index first."""
    pages = [
        p
        for p in html.rglob("*.html")
        if p.name not in SKIPPED_PAGES and not any(part.startswith("_") for part in p.relative_to(html).parts)
    ]
    return sorted(pages, key=lambda p: (p != html / "index.html", str(p)))


def check_book(
    html_dir: str | os.PathLike,
    page: str = "notebooks/06_results__*.html",
    screenshot: str | os.PathLike | None = None,
    min_tables: int = 2,
    timeout: float = 60.0,
    browser_path: str | None = None,
) -> list[PageReport]:
    """Check every page of a built book (results pages: tables and figures too); one report per page.

    Screenshots: the results page to ``screenshot`` (default ``<html>/../screenshots/results.png``,
    more results pages get ``-1``, ``-2`` ...) and the opening page next to it (``index.png``).
    """
    html = Path(html_dir)
    index = html / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no built book (run crapnet book first)")
    results = sorted(html.glob(page))
    if not results:
        raise FileNotFoundError(f"{html}/{page}: no results page in the built book")
    exe = browser_path or find_browser()
    if not exe:
        raise BrowserError(
            "no Chromium found (tried $CHROMIUM, " + ", ".join(BROWSERS) + "); install the Debian package "
            "`chromium` (apt-get install chromium) or set CHROMIUM to the executable"
        )
    shot = Path(screenshot) if screenshot else html.parent / "screenshots" / "results.png"
    browser = DevTools(exe, timeout=timeout)
    reports = []
    try:
        browser.send("Browser.getVersion")
        for p in book_pages(html):
            if p in results:
                i = results.index(p)
                target = shot if i == 0 else shot.with_name(f"{shot.stem}-{i}{shot.suffix}")
                reports.append(check_page(browser, p, min_tables=min_tables, min_images=1, screenshot=target))
            elif p == index:
                reports.append(check_page(browser, p, min_images=1, screenshot=shot.with_name("index.png")))
            else:
                reports.append(check_page(browser, p, settle=0.3))
    finally:
        browser.close()
    return reports


def check_lab(
    root: str | os.PathLike | None = None,
    notebook: str = "notebooks/06_results.ipynb",
    screenshot: str | os.PathLike | None = None,
    timeout: float = 180.0,
    env: dict | None = None,
    kernel_name: str = "Python (crapnet)",
    browser_path: str | None = None,
) -> PageReport:
    """Start JupyterLab on ``root`` (the repository), open ``notebook`` in headless Chromium, check it renders.

    Passes when, within ``timeout`` seconds, the notebook shows its cells and its rendered
    Markdown title, the kernel ``kernel_name`` is shown and no dialog is open; every request
    of the page must go to the local server. Writes a screenshot (default
    ``<root>/_build/screenshots/lab.png``). ``env``: the server's environment (e.g.
    ``JUPYTER_PATH`` holding the kernelspec).
    """
    from crapnet_core.paths import repo_root

    from .lab import JupyterServer

    root = Path(root) if root else repo_root()
    if not (root / notebook).is_file():
        raise FileNotFoundError(f"{root / notebook}: notebook not found")
    exe = browser_path or find_browser()
    if not exe:
        raise BrowserError(
            "no Chromium found (tried $CHROMIUM, " + ", ".join(BROWSERS) + "); install the Debian "
            "package `chromium` or set CHROMIUM to the executable"
        )
    shot = Path(screenshot) if screenshot else root / "_build" / "screenshots" / "lab.png"
    t0 = time.time()
    # JupyterLab settings of this check only (the user's own are left alone): no autosave (opening a
    # notebook must not rewrite it), no news pop-up; runtime files in a temporary folder too
    scratch = Path(tempfile.mkdtemp(prefix="crapnet-lab-"))
    env = dict(os.environ if env is None else env)
    env.setdefault("JUPYTERLAB_SETTINGS_DIR", str(scratch / "settings"))
    env.setdefault("JUPYTER_RUNTIME_DIR", str(scratch / "runtime"))
    settings = Path(env["JUPYTERLAB_SETTINGS_DIR"])
    for plugin, values in {
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
    try:
        with JupyterServer(root, app="lab", env=env) as server:
            report = _open_in_lab(server, notebook, exe, shot, timeout, kernel_name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report.seconds = time.time() - t0
    return report


def _open_in_lab(server, notebook: str, exe: str, shot: Path, timeout: float, kernel_name: str) -> PageReport:
    from urllib.parse import urlparse

    url = server.lab_url(notebook)
    report = PageReport(url.split("?")[0])
    browser = DevTools(exe, timeout=60.0, allow_local=True)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        browser.send("Page.navigate", {"url": url}, session=session)
        probe = _LAB_PROBE.replace("KERNEL_NAME", json.dumps(kernel_name))
        deadline = time.time() + timeout
        p: dict = {}
        while time.time() < deadline:
            answer = browser.send("Runtime.evaluate", {"expression": probe, "returnByValue": True}, session=session)
            p = answer.get("result", {}).get("value") or {}
            done = p.get("cells", 0) >= 3 and p.get("h1") and p.get("kernel_shown") and p.get("kernel_idle")
            if p.get("failed_load") or p.get("dialog") or done:
                break
            time.sleep(1.0)
        time.sleep(1.0)  # the last paint
        report.probe = p
        local = {"127.0.0.1", "localhost"}
        for ev in browser.log:
            if ev.get("sessionId") != session:
                continue
            if ev.get("method") == "Network.requestWillBeSent":
                req = ev["params"]["request"]["url"]
                parsed = urlparse(req)
                if parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in local:
                    report.remote_requests.append(req)
            elif ev.get("method") == "Runtime.exceptionThrown":
                det = ev["params"]["exceptionDetails"]
                report.js_errors.append((det.get("exception") or {}).get("description") or det.get("text", "?"))
        if p.get("failed_load"):
            report.failures.append(f"Chromium could not load {report.url}")
        if p.get("dialog"):
            report.failures.append(f"a dialog is open instead of the notebook: {p['dialog'][:200]!r}")
        if p.get("cells", 0) < 3:
            report.failures.append(f"the notebook did not render within {timeout:.0f} s ({p.get('cells', 0)} cells)")
        if not p.get("h1"):
            report.failures.append("the notebook's Markdown title did not render")
        if not p.get("kernel_shown"):
            report.failures.append(f"kernel {kernel_name!r} not shown (register it: make kernel)")
        elif not p.get("kernel_idle"):
            report.failures.append(f"kernel {kernel_name!r} did not reach the idle state")
        if report.remote_requests:
            report.failures.append(f"requests to the network: {', '.join(report.remote_requests[:5])}")
        shot_data = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(shot_data["data"]))
        report.screenshot = str(shot)
    finally:
        browser.close()
    return report


def _print_reports(reports: list[PageReport], t0: float) -> int:
    failed = False
    for r in reports:
        p = r.probe
        status = "FAIL" if r.failures else "ok"
        if "cells" in p:  # JupyterLab
            print(
                f"{status:4s} {r.url}: {p.get('cells', 0)} cells, title {p.get('h1')}, kernel shown "
                f"{p.get('kernel_shown')}, idle {p.get('kernel_idle')}, {len(r.remote_requests)} remote requests, "
                f"{r.seconds:.1f} s"
            )
        else:
            print(
                f"{status:4s} {r.url}: {p.get('tables_with_rows', 0)} tables, {p.get('images', 0)} images, "
                f"{p.get('math_rendered', 0)}/{p.get('math', 0)} formulas rendered, "
                f"{len(r.remote_requests)} network requests, {r.seconds:.1f} s"
            )
        for f in r.failures:
            print(f"     - {f}")
        if r.screenshot:
            print(f"     screenshot: {r.screenshot}")
        failed |= bool(r.failures)
    print(f"browser check {'FAILED' if failed else 'passed'} ({len(reports)} page(s)) in {time.time() - t0:.1f} s")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    from crapnet_core.paths import repo_root

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lab"]:
        parser = argparse.ArgumentParser(
            prog="python -m e2e.browser_check lab",
            description="JupyterLab opens and renders a notebook (headless Chromium)",
        )
        parser.add_argument("--notebook", default="notebooks/06_results.ipynb", help="path relative to the repository")
        parser.add_argument("--screenshot", default=None, help="PNG (default: <repo>/_build/screenshots/lab.png)")
        parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the notebook")
        args = parser.parse_args(argv[1:])
        t0 = time.time()
        try:
            report = check_lab(repo_root(), args.notebook, args.screenshot, args.timeout)
        except (FileNotFoundError, BrowserError) as err:
            print(f"browser check: error: {err}", file=sys.stderr)
            return 2
        except Exception as err:  # noqa: BLE001 - the server did not start: say why, exit 2
            print(f"browser check: error: JupyterLab: {err}", file=sys.stderr)
            return 2
        return _print_reports([report], t0)
    parser = argparse.ArgumentParser(prog="python -m e2e.browser_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", default=None, help="the built book (default: <repo>/_build/html)")
    parser.add_argument("--page", default="notebooks/06_results__*.html", help="results page(s), a glob under --html")
    parser.add_argument(
        "--screenshot", default=None, help="PNG of the results page (default: <html>/../screenshots/results.png)"
    )
    parser.add_argument("--min-tables", type=int, default=2, help="tables the results page must show")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for Chromium per step")
    args = parser.parse_args(argv)
    html = Path(args.html) if args.html else repo_root() / "_build" / "html"
    t0 = time.time()
    try:
        reports = check_book(html, args.page, args.screenshot, args.min_tables, args.timeout)
    except (FileNotFoundError, BrowserError) as err:
        print(f"browser check: error: {err}", file=sys.stderr)
        return 2
    return _print_reports(reports, t0)


if __name__ == "__main__":
    sys.exit(main())
