"""Check the built docs for content cut off at common window widths, in headless Chromium.

    python -m sphinx -W -b html docs docs/_build/html
    python scripts/docs_layout.py [--widths 1280 800] [--screenshots DIR]

Every page of docs/_build/html is loaded at each width with a script that lists what
does not fit: a page wider than the window, and any element whose content is wider
than its box while the box hides or scrolls the rest (a code block behind a scrollbar,
a table in a scrolling wrapper). Exit status 1 if anything is listed. With
--screenshots, a full-page PNG of every page at every width goes to DIR as well.

Needs a Chromium binary (Debian: ``apt-get install chromium``); not part of
scripts/check.sh for that reason.
"""

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "docs" / "_build" / "html"
SKIP = {"genindex.html", "search.html", "py-modindex.html"}

# Runs in the page after load; appends its findings to the DOM, which --dump-dom prints.
PROBE = r"""
window.addEventListener('load', function () {
  var out = [], doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1)
    out.push('page is ' + doc.scrollWidth + ' px wide');
  document.querySelectorAll('body *').forEach(function (e) {
    var st = getComputedStyle(e);
    if (st.display === 'none' || st.visibility === 'hidden') return;
    // Screen-reader-only text is clipped on purpose.
    if (e.classList.contains('visually-hidden')) return;
    var ox = st.overflowX;
    if (['auto', 'scroll', 'hidden', 'clip'].indexOf(ox) >= 0 &&
        e.scrollWidth > e.clientWidth + 1) {
      out.push(e.tagName.toLowerCase() + ' shows ' + e.clientWidth + ' of ' + e.scrollWidth +
               ' px: ' + (e.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 70));
    }
  });
  out.push('height ' + doc.scrollHeight);
  var d = document.createElement('pre');
  d.textContent = 'LAYOUT-BEGIN\n' + out.join('\n') + '\nLAYOUT-END';
  document.body.appendChild(d);
});
"""


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("docs_layout: no chromium binary found (apt-get install chromium)")


def run(browser, args, url):
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def probe(browser, page, width):
    dom = run(
        browser, [f"--window-size={width},1000", "--virtual-time-budget=3000", "--dump-dom"], page
    )
    found = re.search(r"LAYOUT-BEGIN\n(.*?)\nLAYOUT-END", dom, re.DOTALL)
    if not found:
        return ["the probe did not run"], 0
    lines = html.unescape(found.group(1)).splitlines()
    height = int(lines.pop().split()[1])
    return lines, height


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[1280, 800])
    ap.add_argument("--screenshots", type=Path, help="also save full-page PNGs here")
    ap.add_argument(
        "--build", type=Path, default=BUILD, help="the HTML build (default: %(default)s)"
    )
    args = ap.parse_args(argv)
    build = args.build
    if not (build / "index.html").is_file():
        sys.exit(f"docs_layout: build the docs first ({build} has no index.html)")
    browser = chromium()
    problems = 0
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "html"
        shutil.copytree(build, copy)
        (copy / "_layout_probe.js").write_text(PROBE, encoding="utf-8")
        pages = sorted(p for p in copy.rglob("*.html") if p.name not in SKIP)
        for page in pages:
            rel = page.relative_to(copy)
            script = "../" * (len(rel.parts) - 1) + "_layout_probe.js"
            text = page.read_text(encoding="utf-8")
            page.write_text(text.replace("</body>", f'<script src="{script}"></script></body>'))
            for width in args.widths:
                issues, height = probe(browser, page.as_uri(), width)
                status = "ok" if not issues else f"{len(issues)} cut off"
                print(f"{rel} at {width} px: {status}")
                for issue in issues:
                    print(f"    {issue}")
                problems += len(issues)
                if args.screenshots and height:
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                    name = "_".join(rel.with_suffix("").parts) + f"_{width}.png"
                    shot = (args.screenshots / name).resolve()
                    # The original page (no probe), as tall as its content.
                    original = (build / rel).resolve().as_uri()
                    run(
                        browser,
                        [f"--window-size={width},{height + 20}", f"--screenshot={shot}"],
                        original,
                    )
    print(f"{problems} element(s) cut off" if problems else "nothing cut off")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
