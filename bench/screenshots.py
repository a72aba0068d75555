"""Screenshots of every page at 1280 and 390 px into docs/screenshots/ (named in README).

    .venv/bin/python -m bench.screenshots [--var VAR_DIR] [--benchmark mini] [--out docs/screenshots]

The pages show real results: by default the tests' `mini` benchmark built through the
real commands (bench/_common.py mini_template: 300 train / 200 eval MNIST digits, the
references control, down50 and adv-trained), plus, when --upload is given (default: the
tests' tiny CNN), that model ranked on it with `manage.py rank`. The built folder is
copied first, so the cache is never changed. A user `alice` owns the upload (for the
profile page); the server is `manage.py run --no-worker --no-build` with that benchmark as
the default. Full-page PNGs, reduced to 256 colours (text stays sharp, files stay small).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from bench import _common as c

WIDTHS = (1280, 390)
CHROMIUM = "/usr/bin/chromium"


def prepare(args) -> Path:
    source = Path(args.var) if args.var else c.mini_template()[0]
    work = c.copy_var(source, c.CACHE / "screenshots-var")
    os.environ["DEFAULT_BENCHMARK"] = args.benchmark
    d = c.deployment(work)
    d.manage("migrate")
    if args.upload and args.upload != "none":
        model = Path(args.upload) if args.upload != "tiny" else c.tiny_cnn_dir()
        d.manage("rank", str(model), "--name", "tiny-cnn", "--benchmark", args.benchmark, timeout=1800)
    return work


def pages(benchmark_name: str) -> dict[str, str]:
    from leaderboard.models import Benchmark, Network

    bench = Benchmark.objects.get(name=benchmark_name)
    ladder = list(bench.ladder or [])
    upload = Network.objects.filter(benchmark=bench, is_reference=False, status="ranked").order_by("pk").first()
    out = {"leaderboard": "/", "benchmark": "/benchmark/", "matrix": "/matrix/",
           "reference": f"/networks/{ladder[len(ladder) // 2]}/"}
    if upload is not None:
        out["network"] = f"/networks/{upload.pk}/"
    out.update({"methodology": "/methodology/", "upload": "/networks/upload/", "profile": "/accounts/profile/",
                "not-found": "/networks/999999/"})
    return out


def shoot(page, path: Path) -> None:
    from PIL import Image

    page.screenshot(path=str(path), full_page=True)
    image = Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    image.save(path, optimize=True)


def settle(page) -> None:
    page.wait_for_load_state("load")
    if page.locator(".plot[data-figure]").count():
        page.wait_for_function("Array.from(document.querySelectorAll('.plot[data-figure]'))"
                               ".every(p => p.querySelector('svg.main-svg'))")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    page.wait_for_timeout(400)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var", help="a built VAR_DIR (default: the cached mini benchmark)")
    parser.add_argument("--benchmark", default="mini")
    parser.add_argument("--upload", default="tiny", help="a SavedModel to rank first; 'none' to skip")
    parser.add_argument("--out", default=str(c.ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    work = prepare(args)
    c.django_setup(work, DEFAULT_BENCHMARK=args.benchmark)
    from django.contrib.auth.models import User

    from leaderboard.models import Network

    alice = User.objects.filter(username="alice").first() or User.objects.create_user("alice", password="pw-alice-123")
    Network.objects.filter(benchmark__name=args.benchmark, is_reference=False).update(owner=alice)
    urls = pages(args.benchmark)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    d = c.deployment(work)
    d.start_web()
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            for width in WIDTHS:
                context = browser.new_context(viewport={"width": width, "height": 900})
                page = context.new_page()
                for name, path in (("login", "/accounts/login/"), ("signup", "/accounts/signup/")):
                    page.goto(d.base_url + path)
                    settle(page)
                    shoot(page, out / f"{name}-{width}.png")
                page.goto(d.base_url + "/accounts/login/")
                page.fill("#id_username", "alice")
                page.fill("#id_password", "pw-alice-123")
                with page.expect_navigation():
                    page.click("form button[type=submit]:has-text('Log in')")
                for name, path in urls.items():
                    page.goto(d.base_url + path)
                    settle(page)
                    shoot(page, out / f"{name}-{width}.png")
                    print(f"  {name}-{width}.png", flush=True)
                context.close()
            browser.close()
    finally:
        d.stop()
    total = sum(p.stat().st_size for p in out.glob("*.png"))
    print(f"{len(list(out.glob('*.png')))} screenshots, {total / 1e6:.1f} MB, in {out}")


if __name__ == "__main__":
    main()
