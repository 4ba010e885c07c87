"""The shape of the code (STYLE.md): module sizes, no import cycles, no probing."""

import ast
import pathlib

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_PACKAGES = ("supervisor", "agent")
_MAX_MODULE_LINES = 500


def _modules(package):
    for p in sorted((_ROOT / package).rglob("*.py")):
        r = p.relative_to(_ROOT).with_suffix("")
        n = ".".join(r.parts[:-1] if r.name == "__init__" else r.parts)
        yield n, p


def _imports(name, path, known):
    """Modules of `known` that `path` imports when it is loaded (top level)."""
    res = set()
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for s in ast.parse(path.read_text()).body:
        if isinstance(s, ast.Import):
            res |= {a.name for a in s.names}
        elif isinstance(s, ast.ImportFrom):
            m = s.module or ""
            if s.level:
                b = pkg.split(".")[: len(pkg.split(".")) - s.level + 1]
                m = ".".join(b + ([m] if m else []))
            # `from supervisor import job` imports supervisor.job
            subs = {f"{m}.{a.name}" for a in s.names} & set(known)
            res |= subs or {m}
    # a module's own packages are being imported already when it is
    return {m for m in res if m in known and not (name + ".").startswith(m + ".")}


@pytest.mark.parametrize("package", _PACKAGES)
def test_no_import_cycle(package):
    mods = dict(_modules(package))
    graph = {n: _imports(n, p, mods) for n, p in mods.items()}
    done = set()

    def visit(n, path):
        if n in path:
            c = [*path[path.index(n) :], n]
            pytest.fail(f"import cycle: {' -> '.join(c)}")
        if n in done:
            return
        for m in sorted(graph[n]):
            visit(m, [*path, n])
        done.add(n)

    for n in sorted(graph):
        visit(n, [])


@pytest.mark.parametrize("package", _PACKAGES)
def test_modules_are_small(package):
    big = {
        str(p.relative_to(_ROOT)): n
        for _, p in _modules(package)
        if (n := len(p.read_text().splitlines())) > _MAX_MODULE_LINES
    }
    assert not big, f"modules over {_MAX_MODULE_LINES} lines: {big}"


def test_drivers_are_never_probed():
    """An extension point is a base class with defaults (drivers/base.py)."""
    bad = []
    for _, p in _modules("supervisor"):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if ("getattr(" in line or "hasattr(" in line) and (
                "driver" in line or "self._drivers" in line or "d," in line
            ):
                bad.append(f"{p.relative_to(_ROOT)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_composition_root_only_wires():
    n = len((_ROOT / "supervisor" / "server.py").read_text().splitlines())
    assert n <= 260, f"server.py has {n} lines: move the work into a component"
