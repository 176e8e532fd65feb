"""The house rules of the code base, checked over every module's imports with `ast`.

Why a test and not a convention: the layering (nodes import only common/, only the transport
imports zmq, the serving client carries no server code, no import cycles, small modules) is
what lets each node be read, tested and replaced on its own, and it erodes one convenient
import at a time, often as a function-level import written to dodge a cycle. So every import
counts, at module level or inside a function, and relative imports are resolved first.

Each rule is its own test and names the offending module, the import and its line; there is
no allowlist. The self-tests run every checker on a small package written to a temporary directory, so no rule can pass by
checking nothing.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "ps", "worker", "serving", "deploy", "bench")
NODE_PACKAGES = ("ps", "worker", "serving")
MAX_LINES = {"bench": 500}  # every other package: DEFAULT_MAX_LINES
DEFAULT_MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, absolute and dotted: a project module or an outside name
    path: Path
    line: int
    in_function: bool

    def where(self, root: Path) -> str:
        scope = "function-level" if self.in_function else "module-level"
        return f"{self.path.relative_to(root)}:{self.line} ({scope})"


# --- reading the code -----------------------------------------------------------------------

def find_modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages (a package is its
    __init__)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, path: Path, known: set[str]):
        self.module, self.path, self.known = module, path, known
        self.package = module if is_package else module.rpartition(".")[0]
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, target: str, node: ast.AST) -> None:
        self.found.append(Import(self.module, target, self.path, node.lineno, self.depth > 0))

    def _in_function(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _in_function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".") if self.package else []
            base_parts = parts[:len(parts) - (node.level - 1)] if node.level > 1 else parts
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        for alias in node.names:
            sub = f"{base}.{alias.name}" if base else alias.name
            self._add(sub if sub in self.known else base, node)


@functools.lru_cache(maxsize=None)
def find_imports(root: Path, packages=PACKAGES) -> tuple[dict[str, Path], list[Import]]:
    """Every import statement of every module (module- and function-level); read once per
    root, as every rule walks the same imports."""
    modules = find_modules(root, packages)
    known = set(modules)
    imports = []
    for name, path in modules.items():
        visitor = _ImportVisitor(name, path.name == "__init__.py", path, known)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        imports.extend(visitor.found)
    return modules, imports


def project_module(target: str, modules) -> str | None:
    """The project module `target` names (its longest dotted prefix that is one), or None."""
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in modules:
            return name
    return None


def top(name: str) -> str:
    return name.split(".")[0]


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# --- the rules: each returns {violation key: message} -------------------------------------

def zmq_violations(root: Path, packages=PACKAGES) -> dict[tuple, str]:
    """(a) only common/transport (module or package) imports zmq."""
    _, imports = find_imports(root, packages)
    return {("zmq", i.module): f"{i.module} imports {i.target} at {i.where(root)}; only "
                               "common/transport may import zmq"
            for i in imports if within(i.target, "zmq") and not within(i.module, "common.transport")}


def node_layer_violations(root: Path, packages=PACKAGES) -> dict[tuple, str]:
    """(b) ps/, worker/ and serving/ import only common/ and themselves."""
    modules, imports = find_imports(root, packages)
    out = {}
    for i in imports:
        target = project_module(i.target, modules)
        if top(i.module) in NODE_PACKAGES and target and top(target) not in ("common",
                                                                             top(i.module)):
            out[("layer", i.module, target)] = (f"{i.module} imports {target} at "
                                                f"{i.where(root)}; {top(i.module)}/ may import "
                                                "only common/ and itself")
    return out


def common_violations(root: Path, packages=PACKAGES) -> dict[tuple, str]:
    """(c) common/ imports nothing of the nodes, deploy/ or bench/."""
    modules, imports = find_imports(root, packages)
    out = {}
    for i in imports:
        target = project_module(i.target, modules)
        if top(i.module) == "common" and target and top(target) != "common":
            out[("common", i.module, target)] = (f"{i.module} imports {target} at "
                                                 f"{i.where(root)}; common/ imports only itself")
    return out


def client_violations(root: Path, packages=PACKAGES) -> dict[tuple, str]:
    """(d) the serving client (serving/client.py or serving/client/) imports no server code."""
    modules, imports = find_imports(root, packages)
    out = {}
    for i in imports:
        target = project_module(i.target, modules)
        if (within(i.module, "serving.client") and target and within(target, "serving")
                and not within(target, "serving.client")):
            out[("client", i.module, target)] = (f"{i.module} imports {target} at "
                                                 f"{i.where(root)}; the serving client may not "
                                                 "import serving server code")
    return out


def import_cycles(root: Path, packages=PACKAGES) -> dict[tuple, str]:
    """(e) no import cycle among the project's modules, function-level imports included."""
    modules, imports = find_imports(root, packages)
    edges: dict[str, dict[str, Import]] = {name: {} for name in modules}
    for i in imports:
        target = project_module(i.target, modules)
        if target:
            edges[i.module].setdefault(target, i)
    out = {}
    for scc in _strongly_connected(edges):
        if len(scc) == 1 and scc[0] not in edges[scc[0]]:
            continue
        members = sorted(scc)
        links = [f"{a} -> {b} at {edges[a][b].where(root)}"
                 for a in members for b in sorted(edges[a]) if b in scc]
        out[("cycle", " <-> ".join(members))] = ("import cycle among "
                                                 + ", ".join(members) + ":\n    "
                                                 + "\n    ".join(links))
    return out


def _strongly_connected(edges: dict[str, dict]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on long import chains)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    scc.append(member)
                    if member == node:
                        break
                found.append(scc)
    return found


def size_violations(root: Path, packages=PACKAGES) -> dict[tuple, str]:
    """(f) modules at most 400 lines (bench/ 500)."""
    out = {}
    for path in find_modules(root, packages).values():
        rel = path.relative_to(root)
        limit = MAX_LINES.get(rel.parts[0], DEFAULT_MAX_LINES)
        lines = len(path.read_text().splitlines())
        if lines > limit:
            out[("lines", rel.as_posix())] = f"{rel} has {lines} lines, more than {limit}"
    return out


CHECKS = (zmq_violations, node_layer_violations, common_violations, client_violations,
          import_cycles, size_violations)


def problems_in(found: dict[tuple, str]) -> list[str]:
    return [message for _, message in sorted(found.items())]


# --- the rules, on this repository ----------------------------------------------------------

def test_checker_sees_the_code_base():
    modules, imports = find_imports(ROOT)
    assert {"common.transport", "ps.shard", "worker.trainer", "deploy.cli"} <= set(modules)
    assert any(i.module == "worker.trainer" and i.target.startswith("common.") for i in imports)


def test_only_common_transport_imports_zmq():
    problems = problems_in(zmq_violations(ROOT))
    assert not problems, "zmq imported outside common/transport:\n" + "\n".join(problems)


def test_nodes_import_only_common_and_themselves():
    problems = problems_in(node_layer_violations(ROOT))
    assert not problems, "ps/, worker/, serving/ layering broken:\n" + "\n".join(problems)


def test_common_imports_no_node_deploy_or_bench():
    problems = problems_in(common_violations(ROOT))
    assert not problems, "common/ depends on code above it:\n" + "\n".join(problems)


def test_serving_client_imports_no_server_code():
    problems = problems_in(client_violations(ROOT))
    assert not problems, "the serving client imports server code:\n" + "\n".join(problems)


def test_no_import_cycles():
    problems = problems_in(import_cycles(ROOT))
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_modules_are_small():
    problems = problems_in(size_violations(ROOT))
    assert not problems, "modules over the line limit:\n" + "\n".join(problems)


# --- the checkers find what they must (a small package in a temporary directory) -------------

def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


def test_self_zmq_rule_fires_and_allows_the_transport(tmp_path):
    root = write(tmp_path, {
        "common/transport/__init__.py": "from .sockets import context\n",
        "common/transport/sockets.py": "import zmq\ndef context():\n    return zmq.Context()\n",
        "worker/leak.py": "def f():\n    from zmq import Context\n    return Context\n",
        "bench/raw.py": "import zmq.asyncio\n",
    })
    found = zmq_violations(root)
    assert set(found) == {("zmq", "worker.leak"), ("zmq", "bench.raw")}
    assert "worker/leak.py:2 (function-level)" in found[("zmq", "worker.leak")]
    assert zmq_violations(write(tmp_path / "mod", {"common/transport.py": "import zmq\n"})) == {}


def test_self_node_layer_rule_fires(tmp_path):
    root = write(tmp_path, {
        "common/util.py": "",
        "ps/shard.py": "from worker import trainer\nfrom common import util\nfrom . import store\n",
        "ps/store.py": "import numpy\n",
        "worker/trainer.py": "def f():\n    import serving.model\n",
        "serving/model.py": "from bench.run import go\n",
        "serving/replica.py": "from deploy.cli import main\n",
        "bench/run.py": "from ps.shard import x\nfrom worker.trainer import y\n",
        "deploy/cli.py": "import ps.shard, worker.trainer, serving.model\n",
    })
    assert set(node_layer_violations(root)) == {
        ("layer", "ps.shard", "worker.trainer"), ("layer", "worker.trainer", "serving.model"),
        ("layer", "serving.model", "bench.run"), ("layer", "serving.replica", "deploy.cli")}


def test_self_common_rule_fires(tmp_path):
    root = write(tmp_path, {
        "common/config.py": "from deploy import layout\n",
        "common/wire.py": "def f():\n    from ps.store import Store\n",
        "common/ok.py": "from common import config\nfrom .wire import f\nimport numpy\n",
        "deploy/layout.py": "",
        "ps/store.py": "",
    })
    assert set(common_violations(root)) == {("common", "common.config", "deploy.layout"),
                                            ("common", "common.wire", "ps.store")}


@pytest.mark.parametrize("as_package", [False, True])
def test_self_client_rule_fires_for_module_and_package(tmp_path, as_package):
    if as_package:
        files = {"serving/client/__init__.py": "from .core import Client\n",
                 "serving/client/core.py": "from ..model import check\nfrom . import aio\n",
                 "serving/client/aio.py": "from common.wire import x\n"}
        culprit = "serving.client.core"
    else:
        files = {"serving/client.py": "from common.wire import x\n"
                                      "def f():\n    from serving.model import check\n"}
        culprit = "serving.client"
    root = write(tmp_path, {**files, "serving/model.py": "", "common/wire.py": "",
                            "serving/replica.py": "from serving.model import check\n"})
    assert set(client_violations(root)) == {("client", culprit, "serving.model")}


def test_self_cycle_rule_fires_on_function_level_imports(tmp_path):
    root = write(tmp_path, {
        "worker/sources.py": "def make():\n    from worker.synthetic import S\n",
        "worker/synthetic.py": "from worker.sources import Source\n",
        "common/a.py": "from . import b\n",
        "common/b.py": "import common.c\n",
        "common/c.py": "from common.a import x\n",
        "common/self.py": "import common.self\n",
        "ps/fine.py": "import common.a\n",
    })
    found = import_cycles(root)
    assert set(found) == {("cycle", "worker.sources <-> worker.synthetic"),
                          ("cycle", "common.a <-> common.b <-> common.c"),
                          ("cycle", "common.self")}
    assert "worker/sources.py:2 (function-level)" in found[
        ("cycle", "worker.sources <-> worker.synthetic")]


def test_self_size_rule_fires(tmp_path):
    root = write(tmp_path, {
        "deploy/big.py": "x = 1\n" * 401,
        "deploy/fits.py": "x = 1\n" * 400,
        "bench/fits.py": "x = 1\n" * 500,
        "bench/big.py": "x = 1\n" * 501,
        "common/transport/huge.py": "x = 1\n" * 401,
    })
    assert set(size_violations(root)) == {("lines", "deploy/big.py"), ("lines", "bench/big.py"),
                                          ("lines", "common/transport/huge.py")}
