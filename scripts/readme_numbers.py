"""Write the README's performance table from docs/benchmarks.rst.

    python scripts/readme_numbers.py           # rewrite the table in README.md
    python scripts/readme_numbers.py --check   # exit 1 if README.md is not up to date

docs/benchmarks.rst is written by ``python -m asyncore_rs bench --write-docs``; this
copies, per scenario of its ``SECTION`` (the interpreter users move to), the server CPU
time per request of asyncore-rs (with its share of pure Python's), of the pure-Python
asyncore on that interpreter (pyasyncore) and of uvloop into the table between the two
``perf-table`` markers of README.md. tests/test_docs_claims.py runs --check.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BENCH = ROOT / "docs" / "benchmarks.rst"
BEGIN = "<!-- perf-table begin: python scripts/readme_numbers.py writes it -->"
END = "<!-- perf-table end -->"
# (README column, row label on docs/benchmarks.rst)
COLUMNS = [
    ("asyncore-rs", "asyncore-rs"),
    ("pure Python (pyasyncore)", "pyasyncore"),
    ("uvloop", "uvloop Protocol"),
]
# The page's section the README quotes (its heading line).
SECTION = "CPython 3.14"


def tables(text):
    """{title: {row label: {column header: cell}}} for every list-table of the page."""
    out = {}
    for block in text.split(".. list-table:: ")[1:]:
        title, body = block.split("\n", 1)
        rows = []
        for row in body.split("\n   * - ")[1:]:
            cells = [c.strip() for c in row.split("\n     - ")]
            # The table ends at the first line that is not indented into it.
            last = cells[-1].split("\n\n", 1)[0]
            rows.append([*cells[:-1], last.strip()])
        header, *data = rows
        out[title.strip()] = {r[0]: dict(zip(header, r, strict=False)) for r in data}
    return out


def section(text):
    """The part of the page under the heading SECTION, up to the next heading."""
    _, rest = text.split("\n" + SECTION + "\n" + "-" * len(SECTION) + "\n", 1)
    lines = rest.split("\n")
    for i in range(1, len(lines)):
        if lines[i] and set(lines[i]) == {"-"} and len(lines[i]) == len(lines[i - 1]):
            return "\n".join(lines[: i - 1])
    return rest


def table_lines(text):
    text = section(text)
    lines = [
        "| Scenario | " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for title, rows in tables(text).items():
        cells = []
        for _, label in COLUMNS:
            row = rows[label]
            cell = f"{row['CPU µs/unit']} µs"
            if label == "asyncore-rs":
                cell += f" ({row['% of pure-Py']})"
            cells.append(cell)
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def render(readme, bench):
    head, rest = readme.split(BEGIN + "\n", 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + "\n" + "\n".join(table_lines(bench)) + "\n" + END + tail


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report whether it is current")
    args = ap.parse_args(argv)
    readme = README.read_text(encoding="utf-8")
    new = render(readme, BENCH.read_text(encoding="utf-8"))
    if args.check:
        if new != readme:
            print("README.md's performance table differs from docs/benchmarks.rst;")
            print("run: python scripts/readme_numbers.py")
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
