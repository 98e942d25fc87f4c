"""Mutation testing: does the suite fail when the product breaks?

Each mutant changes one thing in one module (a comparison flipped, ``and`` for ``or``, a
``not`` dropped, a constant changed, ``break`` for ``continue``, a call statement removed)
and runs that module's tests against it, in a private copy of the tree. A mutant the tests
catch is *killed*; one they miss *survives* and is listed with its line, to be read: either
a test is missing or the mutant changes nothing observable.

    python bench/mutation.py                       # every target module, 2 processes
    python bench/mutation.py bridge/intake/spool.py       # one module
    python bench/mutation.py --planted             # the six bugs an audit planted by hand
    python bench/mutation.py --list bridge/pipeline/worker.py   # show the mutants, run nothing

Not run in CI: a full run takes the better part of an hour on two cores.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parent.parent

# Each module with the tests that speak for it, fastest first (-x stops at the first kill).
TARGETS: dict[str, list[str]] = {
    "parsers/debbugs.py": ["tests/test_debbugs.py"],
    "parsers/transcript.py": ["tests/test_debbugs.py"],
    "parsers/dak.py": ["tests/test_dak.py"],
    "parsers/changes.py": ["tests/test_dak.py"],
    "bridge/sdk.py": [
        "tests/test_sdk.py",
        "tests/test_plugins.py",
        "tests/test_debbugs.py",
        "tests/test_dak.py",
    ],
    "bridge/intake/spool.py": [
        "tests/test_spool.py",
        "tests/test_durability.py",
        "tests/test_worker.py",
        "tests/test_hostile.py::test_damaged_spool_records_are_kept_aside_and_every_valid_one_is_processed",
        "tests/test_hostile.py::test_a_wiped_spool_under_a_kept_journal_does_not_skip_new_mail",
    ],
    "bridge/intake/segment.py": [
        "tests/test_spool.py",
        "tests/test_hostile.py::test_damaged_spool_records_are_kept_aside_and_every_valid_one_is_processed",
    ],
    "bridge/journal/sqlite.py": [
        "tests/test_journal.py",
        "tests/test_replay_endpoint.py",
        "tests/test_sdk.py::test_an_mbox_of_three_sources_gives_events_from_all_three_and_queries_find_them",
        "tests/test_worker.py",
        "tests/test_query.py",
        "tests/test_durability.py::test_the_spool_position_never_moves_without_its_events",
        "tests/test_hostile.py::test_a_damaged_journal_is_refused_in_one_line_and_fsck_salvages_it",
        "tests/test_replay_mbox.py",
    ],
    "bridge/pipeline/worker.py": [
        "tests/test_worker.py",
        "tests/test_durability.py::test_the_spool_position_never_moves_without_its_events",
        "tests/test_hostile.py",
    ],
    "bridge/intake/smtp.py": [
        "tests/test_durability.py",
        "tests/test_smtp.py",
        "tests/test_hostile.py",
    ],
}

# The audit's six bugs, as (module, text, replacement).
PLANTED = [
    ("bridge/intake/spool.py", "            os.fdatasync(self._fd)\n", ""),
    (
        "parsers/dak.py",
        '[subject.action, body["source"], body["version"], "+".join(body["architecture"])]',
        '[subject.action, body["source"], body["version"]]',
    ),
    (
        "parsers/debbugs.py",
        'return spool.group(1) != "submit" or bool(spool.group(3))',
        'return spool.group(1) == "submit" or bool(spool.group(3))',
    ),
    (
        "parsers/debbugs.py",
        "        if not match:\n            break\n",
        "        if not match:\n            continue\n",
    ),
    ("parsers/dak.py", '            or header(message, "Debian-Suite")\n', ""),
    (
        "bridge/intake/smtp.py",
        'self.addresses = {e.lower() for e in entries if not e.startswith("@")}',
        'self.addresses = {e for e in entries if not e.startswith("@")}',
    ),
]

SWAPS = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE,
    ast.LtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.And: ast.Or, ast.Or: ast.And, ast.Add: ast.Sub, ast.Sub: ast.Add,
}  # fmt: skip
QUIET_CALLS = {"debug", "info", "warning", "error", "exception", "critical", "echo"}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int
    line: int
    what: str
    source: str


class Mutator(ast.NodeTransformer):
    """Walks a module; with *target* set, applies the target-th mutation it meets."""

    def __init__(self, target: int = -1):
        self.target = target
        self.count = 0
        self.found: list[tuple[int, str]] = []

    def _hit(self, node: ast.AST, what: str) -> bool:
        here = self.count
        self.count += 1
        self.found.append((getattr(node, "lineno", 0), what))
        return here == self.target

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        call = node.value
        if isinstance(call, ast.Call) and not _quiet(call):
            what = f"drop the call {ast.unparse(call)[:60]}"
            return ast.Pass() if self._hit(node, what) else self.generic_visit(node)
        return self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        for i, op in enumerate(node.ops):
            swap = SWAPS.get(type(op))
            if swap and self._hit(node, f"{type(op).__name__} -> {swap.__name__}"):
                node.ops[i] = swap()
        return self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        swap = SWAPS[type(node.op)]
        if self._hit(node, f"{type(node.op).__name__} -> {swap.__name__}"):
            node.op = swap()
        return self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        swap = SWAPS.get(type(node.op))
        if swap and self._hit(node, f"{type(node.op).__name__} -> {swap.__name__}"):
            node.op = swap()
        return self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if isinstance(node.op, ast.Not) and self._hit(node, "drop not"):
            return self.generic_visit(node.operand)
        return self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, bool):
            if self._hit(node, f"{node.value} -> {not node.value}"):
                return ast.copy_location(ast.Constant(not node.value), node)
        elif isinstance(node.value, int) and self._hit(node, f"{node.value} -> {node.value + 1}"):
            return ast.copy_location(ast.Constant(node.value + 1), node)
        return node

    def visit_Break(self, node: ast.Break) -> ast.AST:
        return ast.Continue() if self._hit(node, "break -> continue") else node

    def visit_Continue(self, node: ast.Continue) -> ast.AST:
        return ast.Break() if self._hit(node, "continue -> break") else node

    # Not mutated: docstrings, messages, annotations, log lines.
    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is not None:
            node.value = self.visit(node.value)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.body = [self.visit(n) for n in node.body]
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815 - ast's naming


def _quiet(call: ast.Call) -> bool:
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    return name in QUIET_CALLS


def mutants(module: str) -> list[Mutant]:
    text = (ROOT / module).read_text()
    survey = Mutator()
    survey.visit(ast.parse(text))
    found = []
    for index, (line, what) in enumerate(survey.found):
        tree = Mutator(index).visit(ast.parse(text))
        found.append(
            Mutant(module, index, line, what, ast.unparse(ast.fix_missing_locations(tree)))
        )
    return found


def planted() -> list[Mutant]:
    found = []
    for index, (module, old, new) in enumerate(PLANTED):
        text = (ROOT / module).read_text()
        assert text.count(old) == 1, f"the planted bug no longer applies: {module}: {old!r}"
        line = text[: text.index(old)].count("\n") + 1
        found.append(
            Mutant(module, index, line, f"planted: {old.strip()[:70]}", text.replace(old, new))
        )
    return found


def copy_tree(into: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    for name in files.split():
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return into


def run_tests(
    tree: Path, tests: list[str], timeout: float, test_timeout: float
) -> tuple[bool, str]:
    """(killed, the first failing test) for the tree as it stands."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    # A mutant that hangs is caught by a short per-test timeout, not the suite's two minutes.
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    cmd += [f"--timeout={test_timeout:g}", *tests]
    try:
        done = subprocess.run(
            cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return True, "(timed out: the mutant hangs)"
    lines = done.stdout.splitlines()
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    why = next((line[1:].strip() for line in lines if line.startswith("E ")), "")
    by = failed[0].split(" - ")[0] if failed else ""
    return done.returncode != 0, f"{by} ({why[:100]})" if why else by


def tests_for(mutant: Mutant, planted_run: bool) -> list[str]:
    return ["tests"] if planted_run else TARGETS[mutant.module]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="target modules (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--planted", action="store_true", help="run the audit's planted bugs")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument(
        "--lines", help="only mutants on these lines, e.g. 99,100,110 (to re-check survivors)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    parser.add_argument(
        "--test-timeout", type=float, default=30.0, help="seconds per test (a hang is a kill)"
    )
    args = parser.parse_args()
    if args.planted:
        todo = planted()
    else:
        todo = [m for module in args.modules or list(TARGETS) for m in mutants(module)]
    if args.lines:
        wanted = {int(n) for n in args.lines.split(",")}
        todo = [m for m in todo if m.line in wanted]
    if args.list:
        for m in todo:
            print(f"{m.module}:{m.line} #{m.index} {m.what}")
        print(f"{len(todo)} mutants")
        return
    with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
        trees: Queue[Path] = Queue()
        for i in range(args.jobs):
            trees.put(copy_tree(Path(scratch) / f"tree{i}"))
        started = time.monotonic()
        results: list[tuple[Mutant, bool, str]] = []

        def attempt(mutant: Mutant) -> None:
            tree = trees.get()
            path = tree / mutant.module
            original = path.read_text()
            try:
                path.write_text(mutant.source)
                tests = tests_for(mutant, args.planted)
                killed, by = run_tests(tree, tests, args.timeout, args.test_timeout)
            finally:
                path.write_text(original)
                trees.put(tree)
            results.append((mutant, killed, by))
            mark = "killed" if killed else "SURVIVED"
            print(
                f"[{len(results)}/{len(todo)}] {mark:8} {mutant.module}:{mutant.line} {mutant.what}"
                + (f"  <- {by}" if by else ""),
                flush=True,
            )

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(attempt, todo))
    report(results, time.monotonic() - started)


def report(results: list[tuple[Mutant, bool, str]], seconds: float) -> None:
    print(f"\n{'module':24} {'mutants':>8} {'killed':>7} {'score':>7}")
    for module in sorted({m.module for m, _, _ in results}):
        mine = [k for m, k, _ in results if m.module == module]
        print(f"{module:24} {len(mine):8} {sum(mine):7} {100 * sum(mine) / len(mine):6.1f}%")
    killed = sum(k for _, k, _ in results)
    print(f"{'all':24} {len(results):8} {killed:7} {100 * killed / max(len(results), 1):6.1f}%")
    print(f"{seconds:.0f} s")
    survivors = sorted((m.module, m.line, m.what) for m, k, _ in results if not k)
    if survivors:
        print("\nsurvivors:")
        for module, line, what in survivors:
            print(f"  {module}:{line} {what}")


if __name__ == "__main__":
    main()
