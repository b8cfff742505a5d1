"""The book's page checker: every built page opened in a headless Chromium through the Chrome DevTools
protocol (broken links, missing images, notebook chapters without a figure, unrendered math, error outputs,
placeholder text are problems; shrunk figures and cut-off tables are warnings; a full-page screenshot of each
page), plus a static check that needs no browser. kalm_lib/book.py builds the book and calls it.

Why our own small DevTools client (``_CDP``, on tornado's websocket, which ipykernel already installs) and not
Playwright: Playwright drives its own downloaded browser builds (``playwright install``, a network download that these
machines and air-gapped clusters cannot do); with a system Chromium it needs a matching channel, and it adds
a large dependency for the five DevTools calls used here (navigate, evaluate, screenshot, metrics, network
events). Nor websocket-client (now installed as a JupyterLab dependency): it would replace only the websocket, not
the protocol code (ids, sessions, events) that makes up most of ``_CDP``. The client is tested by
tests/test_book.py and tests/test_book_browser.py whenever a Chromium is present.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse


CHROMIUM_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"]
SCREEN_WIDTH = 1280           # CSS px: the book's desktop layout (left navigation, text column, right TOC)
MAX_SHOT_HEIGHT = 30000       # CSS px; longer pages are cut (and the report says so)
# A figure drawn at matplotlib's 100 dpi with 10–12 pt text has 14–17 px letters; shown below 60 % of its
# width they shrink under about 9 px, which a reader cannot read without zooming.
MIN_FIGURE_SCALE = 0.6


class BookError(SystemExit):
    """The book cannot be built or fails its checks; the message says which file and what to do."""

    def __init__(self, msg: str):
        super().__init__(f"[book] {msg}")


def book_pages(html_dir: Path) -> list[str]:
    """The book's pages (relative paths): Sphinx's index and search pages and redirects (index.html) excluded."""
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    return sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
                  if not p.relative_to(html_dir).parts[0].startswith("_") and p.name not in skip
                  and 'http-equiv="Refresh"' not in p.read_text(encoding="utf-8", errors="replace")[:500])


LOCAL_MATHJAX_SRC = "_static/mathjax/tex-chtml.js"   # the book's own copy (kalm_lib/book.py, copy_mathjax)


def check_static_html(html_dir: Path, mathjax_src: str = LOCAL_MATHJAX_SRC) -> list[str]:
    """Without a browser: a page with math loads the book's MathJax (``mathjax_src``: its own copy, or the CDN
    URL when built without one), and no page loads any other script or style from the network."""
    problems = []
    for page in book_pages(html_dir):
        html = (html_dir / page).read_text(encoding="utf-8", errors="replace")
        urls = re.findall(r"<script\b[^>]*?\bsrc=\"([^\"]+)\"", html)
        urls += [h for tag in re.findall(r"<link\b[^>]*>", html) if "stylesheet" in tag
                 for h in re.findall(r"\bhref=\"([^\"]+)\"", tag)]
        problems += [f"{page}: loads {u} from the network" for u in urls
                     if re.match(r"(https?:)?//", u) and u != mathjax_src]
        if 'class="math' in html and mathjax_src not in html:
            problems.append(f"{page}: has math but does not load the book's MathJax ({mathjax_src})")
        problems += [f"{page}: shows the machine path {p} (write it relative to the project or as "
                     f"$KALM_DATA_DIR/…: kalm_lib.paths.display_path)" for p in machine_paths(html)]
    return problems


def machine_paths(html: str) -> list[str]:
    """Absolute paths of this machine in a page's text: the project folder, the data and Hub mirrors, the home
    folder (the book is read elsewhere; issue 15 item 8)."""
    text = re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    roots = {str(Path.cwd().resolve()), str(Path(__file__).resolve().parents[1]), os.path.expanduser("~")}
    roots |= {str(Path(os.environ[v]).resolve()) for v in ("KALM_DATA_DIR", "KALM_HUB_DIR") if os.environ.get(v)}
    found = []
    for r in sorted(r for r in roots if len(r) > 1):
        for m in re.finditer(re.escape(r) + r"(?=[/\s'\"<,;)]|$)", text):
            found.append(text[m.start():m.start() + len(r) + 40].split()[0])
    return sorted(set(found))


# ============================================================================ browser check
def find_chromium() -> str | None:
    """$KALM_CHROMIUM, else the first Chromium / Chrome on PATH."""
    env = os.environ.get("KALM_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageReport:
    page: str
    title: str = ""
    images: int = 0
    figures: int = 0           # images inside notebook cell outputs
    math: int = 0              # math elements (inline and display)
    math_rendered: int = 0     # of those, rendered by MathJax
    tables: int = 0
    height: int = 0
    screenshot: str | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # legibility: figures shrunk, outputs cut off


@dataclass
class BookReport:
    html_dir: Path
    pages: list[PageReport]
    problems: list[str]          # broken: links, images, missing figures, math, errors, placeholders
    seconds: float
    warnings: list[str] = field(default_factory=list)   # hard to read: shrunk figures, outputs cut off

    def summary(self) -> str:
        lines = [f"[book] browser check: {len(self.pages)} pages in {self.seconds:.0f}s, "
                 f"{len(self.problems)} problem(s), {len(self.warnings)} legibility warning(s); screenshots in "
                 f"{Path(self.pages[0].screenshot).parent if self.pages and self.pages[0].screenshot else '-'}"]
        for p in self.pages:
            lines.append(f"  {p.page:32s} figures {p.figures:2d}  images {p.images:2d}  math {p.math_rendered:3d}/"
                         f"{p.math:<3d} tables {p.tables:2d}  height {p.height:5d}px  "
                         f"{'PROBLEMS' if p.problems else 'WARNINGS' if p.warnings else 'OK'}")
        lines += [f"  problem: {x}" for x in self.problems] + [f"  warning: {x}" for x in self.warnings]
        return "\n".join(lines)


# Runs in the page after MathJax has typeset it. Math counts: Sphinx wraps TeX in span.math / div.math;
# MathJax replaces the TeX inside with an <mjx-container>.
_PAGE_PROBE = r"""
(() => {
  const main = document.querySelector('main') || document.body;
  const imgs = Array.from(document.images).map(i => ({
      src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, h: i.naturalHeight,
      shown: Math.round(i.getBoundingClientRect().width), output: !!i.closest('.cell_output'),
      alt: i.alt || ''}));
  const math = Array.from(document.querySelectorAll('.math'));
  const clone = main.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, textarea, .cell_input').forEach(e => e.remove());
  const text = clone.textContent || '';
  return {
    title: document.title,
    images: imgs,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
    math: math.length,
    mathRendered: math.filter(e => e.querySelector('mjx-container')).length,
    mjxErrors: document.querySelectorAll('mjx-merror').length,
    mathjax: (window.MathJax && window.MathJax.version) || null,
    rawMath: ['$$', '\\(', '\\[', '\\begin{'].filter(s => text.includes(s)),
    errorOutputs: document.querySelectorAll(
        '.cell_output .traceback, .cell_output .output.error, .cell_output .stderr, #papermill-error-cell').length,
    traceback: (main.innerText || '').includes('Traceback (most recent call last)'),
    placeholder: (text.match(/\b(TODO|TBD|FIXME|XXX|lorem ipsum|placeholder)\b/i) || [null])[0],
    tables: main.querySelectorAll('table').length,
    // Tables, outputs and prose code blocks that do not fit the text column and scroll sideways (a notebook's
    // own code cells may: they are code, shown as written).
    cutOff: Array.from(main.querySelectorAll('*')).filter(e => {
        if (e.closest('.cell_input, mjx-container, .math, math')) return false;
        if (!(e.scrollWidth > e.clientWidth + 4 && e.clientWidth > 0)) return false;
        return ['auto', 'scroll', 'hidden'].includes(getComputedStyle(e).overflowX);
      }).map(e => ({
        hidden: e.scrollWidth - e.clientWidth, width: e.scrollWidth,
        text: (e.innerText || '').trim().split(/\s+/).slice(0, 6).join(' ')})),
    height: Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)),
  };
})()
"""

_WAIT_TYPESET = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  if (document.fonts && document.fonts.ready) { await document.fonts.ready; }
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return true;
})()
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _CDP:
    """A minimal Chrome DevTools protocol client (one browser websocket, flat sessions) on tornado."""

    def __init__(self, conn):
        self.conn, self.next_id, self.pending, self.events = conn, 0, {}, []
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, ws_url: str) -> "_CDP":
        from tornado.websocket import websocket_connect

        return cls(await websocket_connect(ws_url, max_message_size=512 * 1024 * 1024))

    async def _read(self):
        while True:
            msg = await self.conn.read_message()
            if msg is None:
                for fut in self.pending.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("the browser closed the DevTools connection"))
                return
            m = json.loads(msg)
            if "id" in m and m["id"] in self.pending:
                fut = self.pending.pop(m["id"])
                if not fut.done():
                    fut.set_result(m)
            elif "method" in m:
                self.events.append(m)

    async def call(self, method: str, params: dict | None = None, session: str | None = None,
                   timeout: float = 60.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.conn.write_message(json.dumps(msg))
        m = await asyncio.wait_for(fut, timeout)
        if "error" in m:
            raise RuntimeError(f"DevTools {method}: {m['error'].get('message')}")
        return m.get("result", {})

    async def wait_event(self, method: str, session: str, timeout: float = 60.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events:
                if e.get("method") == method and e.get("sessionId") == session:
                    self.events.remove(e)
                    return e
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {method} within {timeout:.0f}s")

    def close(self):
        self.reader.cancel()
        self.conn.close()


def _launch_chromium(chrome: str, profile_dir: Path) -> tuple[subprocess.Popen, str]:
    args = [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-default-apps", "--hide-scrollbars", "--mute-audio",
            "--force-device-scale-factor=1", f"--user-data-dir={profile_dir}", "--remote-debugging-port=0",
            "about:blank"]
    log = open(profile_dir / "chromium.log", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    port_file = profile_dir / "DevToolsActivePort"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise BookError(f"{chrome} exited with code {proc.returncode}; its log: {profile_dir / 'chromium.log'}")
        if port_file.is_file():
            lines = port_file.read_text().split()
            if len(lines) >= 2:
                return proc, f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.1)
    _stop(proc)
    raise BookError(f"{chrome} did not open its DevTools port within 60 s")


def _stop(proc: subprocess.Popen) -> None:
    """End the Chromium we started: its own process group (start_new_session), so its renderers go too."""
    import signal

    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def check_book(html_dir: str | os.PathLike, shots_dir: str | os.PathLike | None = None, *,
               chrome: str | None = None, pages: list[str] | None = None,
               mathjax_cdn: str | None = None) -> BookReport:
    """Open every page of a built book in headless Chromium and check it as a reader would see it.

    Per page: no failed request (missing image, script, style) and no request leaving the book; no JavaScript
    error; every image loaded; a notebook chapter shows at least one figure; every math element rendered by
    MathJax with no TeX error and no raw ``$$`` / ``\\(`` / ``\\[`` left in the text; no error output or
    traceback; no placeholder text. Across pages: every internal link (and #anchor) resolves. With
    ``shots_dir``, a full-page PNG screenshot of each page is saved there. ``mathjax_cdn``: the book was built
    without a local MathJax and loads it from this URL; what that costs offline (the request, math left
    unrendered) is then a warning, not a problem.
    """
    html_dir = Path(html_dir).resolve()
    chrome = chrome or find_chromium()
    if chrome is None:
        raise BookError("no Chromium found (run `make book-deps` or set KALM_CHROMIUM)")
    pages = pages or book_pages(html_dir)
    shots = Path(shots_dir) if shots_dir is not None else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(html_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kalm-chromium-", ignore_cleanup_errors=True) as tmp:
        proc, ws = _launch_chromium(chrome, Path(tmp))
        try:
            reports, probes = asyncio.run(_check_pages(ws, base, pages, shots))
        finally:
            _stop(proc)
            server.shutdown()
            server.server_close()
    if mathjax_cdn:
        for r in reports:
            cdn = [p for p in r.problems if mathjax_cdn in p or "MathJax" in p or "math elements" in p]
            r.problems = [p for p in r.problems if p not in cdn]
            r.warnings += [f"{p} (MathJax from its CDN: no local copy)" for p in cdn]
    problems = [f"{r.page}: {p}" for r in reports for p in r.problems]
    warnings = [f"{r.page}: {w}" for r in reports for w in r.warnings]
    problems += _link_problems(html_dir, base, probes)
    if not any(r.math_rendered for r in reports):
        (warnings if mathjax_cdn else problems).append("no page has rendered math (the introduction's equations "
                                                       "should be)")
    return BookReport(html_dir, reports, problems, time.perf_counter() - t0, warnings)


async def _check_pages(ws: str, base: str, pages: list[str], shots: Path | None):
    cdp = await _CDP.connect(ws)
    reports, probes = [], {}
    try:
        for page in pages:
            r, probe = await _check_page(cdp, base, page, shots)
            reports.append(r)
            probes[page] = probe
    finally:
        cdp.close()
    return reports, probes


async def _check_page(cdp: _CDP, base: str, page: str, shots: Path | None):
    t0 = time.perf_counter()
    rep = PageReport(page)
    target = (await cdp.call("Target.createTarget", {"url": "about:blank"}))["targetId"]
    sid = (await cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
    probe: dict = {}
    try:
        for domain in ("Page", "Network", "Runtime"):
            await cdp.call(f"{domain}.enable", session=sid)
        await cdp.call("Emulation.setDeviceMetricsOverride",
                       {"width": SCREEN_WIDTH, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session=sid)
        await cdp.call("Page.navigate", {"url": base + page}, session=sid)
        await cdp.wait_event("Page.loadEventFired", sid, timeout=90)
        await cdp.call("Runtime.evaluate", {"expression": _WAIT_TYPESET, "awaitPromise": True}, session=sid,
                       timeout=90)
        res = await cdp.call("Runtime.evaluate", {"expression": _PAGE_PROBE, "returnByValue": True}, session=sid)
        probe = res.get("result", {}).get("value") or {}
        if not probe:
            rep.problems.append(f"the page probe returned nothing ({res.get('exceptionDetails', {}).get('text')})")
        if shots is not None and probe:
            h = min(int(probe.get("height") or 1000), MAX_SHOT_HEIGHT)
            await cdp.call("Emulation.setDeviceMetricsOverride",
                           {"width": SCREEN_WIDTH, "height": h, "deviceScaleFactor": 1, "mobile": False}, session=sid)
            await cdp.call("Runtime.evaluate", {"expression": _WAIT_TYPESET, "awaitPromise": True}, session=sid)
            # The viewport is already the page's height: capturing "beyond the viewport" would make Chromium
            # resize it once more, which can re-trigger the theme's responsive layout mid-capture.
            shot = await cdp.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False},
                                  session=sid, timeout=120)
            import base64

            out = shots / (page.removesuffix(".html").replace("/", "__") + ".png")
            out.write_bytes(base64.b64decode(shot["data"]))
            rep.screenshot = str(out)
            if probe.get("height", 0) > MAX_SHOT_HEIGHT:
                rep.problems.append(f"page is {probe['height']} px tall; the screenshot shows the first "
                                    f"{MAX_SHOT_HEIGHT} px")
    finally:
        events = [e for e in cdp.events if e.get("sessionId") == sid]
        cdp.events = [e for e in cdp.events if e.get("sessionId") != sid]
        await cdp.call("Target.closeTarget", {"targetId": target})
    rep.problems += _network_problems(events, base)
    rep.title = probe.get("title", "")
    imgs = probe.get("images", [])
    rep.images, rep.figures = len(imgs), sum(1 for i in imgs if i["output"])
    rep.math, rep.math_rendered = probe.get("math", 0), probe.get("mathRendered", 0)
    rep.tables, rep.height = probe.get("tables", 0), probe.get("height", 0)
    for i in imgs:
        if not i["ok"]:
            rep.problems.append(f"image not loaded: {i['src']}")
        elif i["output"] and min(i["shown"], i["w"]) < 300:
            rep.problems.append(f"figure {i['src']} is shown {i['shown']} px wide ({i['w']} px image): too small to read")
        elif i["output"] and i["shown"] < MIN_FIGURE_SCALE * i["w"]:
            rep.warnings.append(f"figure {_short(i['src'])} is {i['w']} px wide and "
                                f"shown at {i['shown']} px ({100 * i['shown'] / i['w']:.0f} %): its text shrinks "
                                f"below legibility; draw it narrower (at most about {i['shown'] / 100:.1f} in at "
                                f"100 dpi) or as several rows")
    seen = set()
    for c in probe.get("cutOff", []):
        if c["text"] not in seen:
            seen.add(c["text"])
            rep.warnings.append(f"a table or output is {c['width']} px wide, {c['hidden']} px of it hidden to the "
                                f"right (scrolls sideways): starts with {c['text']!r}")
    if page.startswith("notebooks/") and rep.figures == 0:
        rep.problems.append("a notebook chapter with no figure in its outputs")
    if rep.math and not probe.get("mathjax"):
        rep.problems.append("the page has math but MathJax did not load")
    if rep.math_rendered < rep.math:
        rep.problems.append(f"{rep.math - rep.math_rendered} of {rep.math} math elements not rendered by MathJax")
    if probe.get("mjxErrors"):
        rep.problems.append(f"{probe['mjxErrors']} TeX error(s) in rendered math")
    if probe.get("rawMath"):
        rep.problems.append(f"raw TeX delimiters in the text: {probe['rawMath']}")
    if probe.get("errorOutputs") or probe.get("traceback"):
        rep.problems.append("error output or a traceback in a cell")
    if probe.get("placeholder"):
        rep.problems.append(f"placeholder text: {probe['placeholder']!r}")
    rep.seconds = round(time.perf_counter() - t0, 1)
    return rep, probe


def _short(url: str) -> str:
    return url.rsplit("/", 1)[-1][:16] + "…" if "/_images/" in url else url


def _network_problems(events: list[dict], base: str) -> list[str]:
    urls, out = {}, []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Network.requestWillBeSent":
            url = p["request"]["url"]
            urls[p["requestId"]] = url
            if not url.startswith((base, "data:", "blob:", "about:")):
                out.append(f"request leaves the book: {url}")
        elif e["method"] == "Network.responseReceived" and p["response"]["status"] >= 400:
            if not p["response"]["url"].endswith("/favicon.ico"):   # Chromium asks for it on its own
                out.append(f"HTTP {p['response']['status']} for {p['response']['url']}")
        elif e["method"] == "Network.loadingFailed" and not p.get("canceled"):
            url = urls.get(p["requestId"], "?")
            if not url.endswith("/favicon.ico"):
                out.append(f"failed to load {url}: {p.get('errorText')}")
        elif e["method"] == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(f"JavaScript error: {d.get('exception', {}).get('description') or d.get('text')}")
    return list(dict.fromkeys(out))


def _link_problems(html_dir: Path, base: str, probes: dict[str, dict]) -> list[str]:
    """Internal links must reach an existing file, and an #anchor an element id on the target page."""
    ids = {page: set(p.get("ids", [])) for page, p in probes.items()}
    out = []
    for page, probe in probes.items():
        for href in probe.get("links", []):
            if not href.startswith(base):
                continue
            url, frag = urldefrag(href)
            rel = unquote(urlparse(url).path).lstrip("/")
            target = html_dir / rel
            if target.is_dir():
                target, rel = target / "index.html", (rel.rstrip("/") + "/index.html").lstrip("/")
            if not target.is_file():
                out.append(f"{page}: broken link to {rel}")
            elif frag and rel in ids and frag not in ids[rel]:
                out.append(f"{page}: link to {rel}#{frag}, an anchor that page does not have")
    return list(dict.fromkeys(out))
