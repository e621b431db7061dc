# Sphinx configuration for asyncore-rs.
#
# No extensions (no autodoc): the pages are written by hand so that the docs build
# without the compiled module.  Build: python -m sphinx -W -b html docs docs/_build/html
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
pygments_style = "sphinx"

html_theme = "alabaster"
html_title = f"asyncore-rs {release}"
html_theme_options = {"description": "CPython 3.11's asyncore and asynchat, in Rust"}
