"""Time to parse and evaluate a large config: a generated 3,000-line file, every member forced.

The file mixes what real configs contain: scalar settings, nested blocks, function definitions
called many times (records as results), arrays, array constructors whose elements refer to each
other, string building and conditionals. Goal: parse + evaluate under 1 s. CPU time is printed too, since
the wall time on a shared machine varies with its load.

    python benchmarks/bench_eval.py [--lines 3000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import time

from netlang.compiler.lang.evaluator import force_all, top_scope
from netlang.grammar.parser import parse_text

HEADER = """\
Scale(x, factor=2) = x * factor
Block(width, depth=3) = {
    dims[i:1..depth] = if i == 1 then width else dims[i-1] / 2
    total = dims[1] + dims[depth]
    label = "block_" + Format(width, "") + "x" + Format(depth, "")
}
Clamp(x, lo, hi) = Max(lo, Min(x, hi))
Sum(arr) = if Length(arr) == 0 then 0 else arr[0] + Sum(arr << 1)
"""


def section(k: int) -> list[str]:
    """Ten lines of config, varied by k."""
    return [
        f"s{k} = {{",
        f"    lr = 0.{k % 9 + 1} * Scale({k % 7 + 1})",
        f"    epochs = if {k} % 2 == 0 then {k % 5 + 1} else Clamp({k}, 1, 20)",
        f"    name = \"sect{k}_\" + Format(lr, \".3\")",
        f"    block = Block({k % 64 + 8}, depth={k % 4 + 2})",
        f"    sizes = {k % 3 + 1}:{k % 5 + 2}:{k % 7 + 3}",
        f"    total = Sum(sizes) + block.total",
        "}",
        f"v{k} = s{k}.total + Length(s{k}.name)" + (f" + v{k - 1}" if k % 10 else ""),
        f"w{k} = Substr(s{k}.name, 0, 4) + Chr(65 + {k % 26})",
    ]


def make_config(lines: int) -> str:
    body = [line for k in range(max(1, lines // 10)) for line in section(k)]
    return HEADER + "\n".join(body) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    text = make_config(args.lines)
    top_scope(parse_text("warm = 1"))  # load the parser tables and the standard library once
    print(f"config: {text.count(chr(10))} lines, {len(text)} characters")
    for run in range(1, args.repeat + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        file_ast = parse_text(text, "<bench>")
        parsed = time.perf_counter()
        force_all(top_scope(file_ast))
        done, cpu_done = time.perf_counter(), time.process_time()
        print(f"run {run}: parse {parsed - start:.3f} s + evaluate {done - parsed:.3f} s "
              f"= {done - start:.3f} s wall ({cpu_done - cpu_start:.3f} s CPU)")


if __name__ == "__main__":
    main()
