# Sphinx configuration for asyncore-rs.
#
# No extensions (no autodoc): the pages are written by hand so that the docs build
# without the compiled module.  Build: python -m sphinx -W -b html docs docs/_build/html
# (needs the furo theme: python -m pip install ".[test]").
import re
from pathlib import Path

_cargo = (Path(__file__).resolve().parent.parent / "Cargo.toml").read_text(encoding="utf-8")
_match = re.search(r'^version\s*=\s*"([^"]+)"', _cargo, re.MULTILINE)

project = "asyncore-rs"
author = "the asyncore-rs authors"
copyright = "the asyncore-rs authors"
release = _match.group(1) if _match else "unknown"
version = release

extensions: list[str] = []
root_doc = "index"
exclude_patterns = ["_build"]
highlight_language = "python3"

# Furo (in the [test] extra): a layout that reflows down to narrow windows; code
# lines wrap instead of hiding behind a scrollbar (_static/wrap.css). Checked with
# headless Chromium screenshots of every page at 1280 and 800 px.
html_theme = "furo"
html_title = f"asyncore-rs {release}"
html_static_path = ["_static"]
html_css_files = ["wrap.css"]
