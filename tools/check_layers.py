"""Checks that src/ is layered: every `crate::` reference points down.

The order is the one src/lib.rs declares its modules in, lowest first, in
groups headed by a `// layer: NAME` comment. A module may use the modules
declared before it (in its own layer or a lower one), never one declared after
it, nor itself through `crate::`. Every src/*.rs file must be declared.

Each module's doc comment ends with what it uses, which must be true:
`//! Uses: a, b, c.` (the modules it names through `crate::`, sorted) or
`//! Uses nothing from the crate.`

    python tools/check_layers.py           # exit status 1 on a violation
    python tools/check_layers.py --list    # also print the layers
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
LAYER = re.compile(r"^\s*//\s*layer:\s*(.+?)\s*$")
MOD = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")
CRATE_REF = re.compile(r"\bcrate::(\w+)")
# `use crate::{a, b::c}`: each name in the braces is a module.
CRATE_GROUP = re.compile(r"\bcrate::\{([^}]*)\}")


def declared_layers(lib: Path) -> list[tuple[str, list[str]]]:
    """[(layer name, [module, ...]), ...] from lib.rs, lowest first."""
    layers: list[tuple[str, list[str]]] = []
    for line in lib.read_text().splitlines():
        m = LAYER.match(line)
        if m:
            layers.append((m.group(1), []))
            continue
        m = MOD.match(line)
        if m:
            if not layers:
                raise SystemExit(f"{lib}: `mod {m.group(1)};` before any `// layer:` comment")
            layers[-1][1].append(m.group(1))
    return layers


def strip_comments(text: str) -> str:
    """The code without // comments (doc comments mention modules freely)."""
    return "\n".join(re.sub(r"//.*", "", line) for line in text.splitlines())


def references(path: Path) -> set[str]:
    code = strip_comments(path.read_text())
    found = set(CRATE_REF.findall(code))
    for group in CRATE_GROUP.findall(code):
        for part in group.split(","):
            name = part.strip().split("::")[0].strip()
            if name:
                found.add(name)
    return found


USES = re.compile(r"^//! Uses(?::\s*(?P<mods>[^.]*)\.|(?P<none> nothing from the crate\.))", re.M)


def declared_uses(path: Path) -> "set[str] | None":
    """The modules the doc comment says `path` uses; None if it says nothing."""
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("//!"))
    # A list may wrap over several `//!` lines.
    header = re.sub(r",\n//!\s*", ", ", header)
    m = USES.search(header)
    if not m:
        return None
    if m.group("none"):
        return set()
    return {name.strip() for name in m.group("mods").split(",")}


def check(src: Path = SRC) -> list[str]:
    layers = declared_layers(src / "lib.rs")
    order = [m for _, mods in layers for m in mods]
    rank = {m: i for i, m in enumerate(order)}
    problems = []
    if len(rank) != len(order):
        problems.append("lib.rs declares a module twice")
    files = {p.stem for p in src.glob("*.rs")} - {"lib"}
    for missing in sorted(files - set(rank)):
        problems.append(f"src/{missing}.rs is not declared in a layer of src/lib.rs")
    for mod in order:
        path = src / f"{mod}.rs"
        if not path.is_file():
            problems.append(f"src/lib.rs declares `{mod}`, but src/{mod}.rs does not exist")
            continue
        used = {r for r in references(path) if r in rank and r != mod}
        said = declared_uses(path)
        if said is None:
            problems.append(f"src/{mod}.rs: its doc comment does not say what it uses (//! Uses:)")
        elif said != used:
            problems.append(
                f"src/{mod}.rs: the doc comment says it uses {sorted(said)}, "
                f"but it uses {sorted(used)}"
            )
        for ref in sorted(references(path)):
            if ref not in rank:
                continue  # an item of lib.rs itself, or a macro path
            if ref == mod:
                problems.append(f"src/{mod}.rs refers to itself through crate::{ref}")
            elif rank[ref] > rank[mod]:
                problems.append(
                    f"src/{mod}.rs uses crate::{ref}, which is declared above it "
                    f"(an upward or circular reference)"
                )
    return problems


def main() -> int:
    if "--list" in sys.argv[1:]:
        for name, mods in declared_layers(SRC / "lib.rs"):
            print(f"{name}: {', '.join(mods)}")
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"src/ layering ok ({sum(1 for _ in SRC.glob('*.rs')) - 1} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
