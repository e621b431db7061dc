"""``python benches/bench.py`` is ``python -m asyncore_rs bench``: the suite ships in the
package (asyncore_rs/_bench.py, the load generator in src/loadgen.rs)."""

import sys

from asyncore_rs._bench import main

if __name__ == "__main__":
    sys.exit(main(prog="python benches/bench.py"))
