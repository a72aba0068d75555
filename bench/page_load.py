"""Page load in the browser (Debian's chromium through Playwright): network page and matrix.

    .venv/bin/python -m bench.page_load [--rounds 5] [--mbit 20] [--rtt-ms 40]

A fresh VAR_DIR with a file SQLite database; devkit/fakes.py's fake_suite stores 10
references and 2 uploads with every pair of the matrix (no TensorFlow). The real web
server (`manage.py run --no-worker --no-build`: collectstatic, waitress, whitenoise) is
started on it, and Chromium loads each page --rounds times per profile:

- profiles: `localhost` (no throttling) and `throttled` (Chrome DevTools network
  emulation, --mbit down / half up, --rtt-ms round trip), each with a cold cache (a new
  browser context) and a warm one (the same page again in that context);
- figures per load: the load event and the moment every heatmap of the page is drawn
  (milliseconds from navigation start, `performance` timeline), bytes over the wire
  (transferSize of the document and every resource; 0 for what came from the cache),
  and the Plotly bundle's size on the wire / decoded with its Cache-Control header.

Medians over rounds are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.request

from bench import _common as c

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-extensions", "--no-first-run", "--mute-audio"]

# Every heatmap of the page drawn (Plotly puts the heatmap image in .heatmaplayer).
PLOTS_DRAWN = """() => {
  const plots = Array.from(document.querySelectorAll('.plot[data-figure]'));
  return plots.length > 0 && plots.every(p => p.querySelector('svg.main-svg') && p.querySelector('.heatmaplayer image'));
}"""

TIMINGS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const resources = performance.getEntriesByType('resource');
  const plotly = resources.find(r => /plotly/.test(r.name));
  return {
    load: nav.loadEventEnd, dcl: nav.domContentLoadedEventEnd, drawn: performance.now(),
    bytes: nav.transferSize + resources.reduce((s, r) => s + r.transferSize, 0),
    plotly_url: plotly ? plotly.name : null,
    plotly_wire: plotly ? plotly.transferSize : 0, plotly_decoded: plotly ? plotly.decodedBodySize : 0,
  };
}"""


def measure(context, url: str, throttle: dict | None) -> dict:
    page = context.new_page()
    if throttle:
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", throttle)
    page.goto(url, wait_until="load")
    page.wait_for_function(PLOTS_DRAWN, timeout=120_000)
    data = page.evaluate(TIMINGS)
    page.close()
    return data


def header_of(url: str, name: str) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30) as r:
        return r.headers.get(name, "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mbit", type=float, default=20.0, help="throttled profile: download Mbit/s")
    parser.add_argument("--rtt-ms", type=float, default=40.0, help="throttled profile: round-trip time")
    args = parser.parse_args()
    c.header("page load in Chromium", "python -m bench.page_load " + " ".join(sys.argv[1:]))

    work = c.CACHE / "page-load"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    d = c.deployment(work)
    d.manage("migrate")
    c.django_setup(work)
    from devkit.fakes import fake_suite

    suite = fake_suite(references=10, uploads=2)
    pages = {"network page": f"/networks/{suite.uploads[0].pk}/", "matrix": "/matrix/"}
    throttle = {"offline": False, "latency": args.rtt_ms,
                "downloadThroughput": args.mbit * 1e6 / 8, "uploadThroughput": args.mbit * 1e6 / 16}
    profiles = {"localhost": None, f"throttled {args.mbit:g} Mbit/s, {args.rtt_ms:g} ms": throttle}

    from playwright.sync_api import sync_playwright

    d.start_web()
    results: dict[tuple[str, str, str], list[dict]] = {}
    try:
        for path in pages.values():  # warm the server (templates, figure caches)
            urllib.request.urlopen(d.base_url + path, timeout=60).read()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            for rnd in range(args.rounds):
                for profile, conditions in profiles.items():
                    for name, path in pages.items():
                        context = browser.new_context(viewport={"width": 1280, "height": 800})
                        for cache in ("cold", "warm"):
                            r = measure(context, d.base_url + path, conditions)
                            results.setdefault((name, profile, cache), []).append(r)
                        context.close()
                print(f"  round {rnd + 1} done", flush=True)
            browser.close()
        plotly_url = next(r[0]["plotly_url"] for r in results.values() if r[0]["plotly_url"])
        cache_control = header_of(plotly_url, "Cache-Control")
        encoding = ""
        req = urllib.request.Request(plotly_url, method="HEAD", headers={"Accept-Encoding": "br, gzip"})
        with urllib.request.urlopen(req, timeout=30) as r:
            encoding = r.headers.get("Content-Encoding", "identity")
    finally:
        d.stop()

    rows = []
    for (name, profile, cache), runs in results.items():
        med = lambda key: c.median([r[key] for r in runs])  # noqa: E731
        rows.append((name, profile, cache, round(med("dcl")), round(med("load")), round(med("drawn")),
                     f"{med('bytes') / 1024:.0f}", f"{med('plotly_wire') / 1024:.0f} / {med('plotly_decoded') / 1024:.0f}"))
    print()
    print(f"Plotly bundle: {plotly_url.replace(d.base_url, '')}, Cache-Control: {cache_control!r}, "
          f"Content-Encoding offered for br/gzip: {encoding}")
    print(f"medians of {args.rounds} rounds; N = 12 networks (fake_suite 10 + 2), viewport 1280x800")
    print(c.table(rows, ["page", "profile", "cache", "DOMContentLoaded ms", "load ms", "heatmaps drawn ms",
                         "KB over the wire", "Plotly KB wire / decoded"]))
    print("JSON " + json.dumps({f"{k[0]}|{k[1]}|{k[2]}": {key: c.median([r[key] for r in v])
                                                          for key in ("dcl", "load", "drawn", "bytes")}
                                for k, v in results.items()}))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"# {time.perf_counter() - started:.0f} s")
