"""The packages import each other in layers (.importlinter): no package imports one above it."""
import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_packages_import_only_the_layers_below_them():
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "lint-imports")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert "1 kept, 0 broken" in proc.stdout


def _function_level_imports(path: str) -> list[int]:
    """Line numbers of the import statements inside functions of a module."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    return [sub.lineno for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))]


def test_imports_inside_functions_are_explained_by_their_module():
    """An import is at the top unless it keeps `import detkit` or `--help` light, and the module says so."""
    unexplained = []
    for folder, _, files in os.walk(os.path.join(ROOT, "detkit")):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py"):
                continue
            lines = _function_level_imports(path)
            with open(path, encoding="utf-8") as fh:
                explained = "# Lazy imports:" in fh.read()
            if lines and not explained:
                unexplained.append(f"{os.path.relpath(path, ROOT)}:{lines[0]}")
    assert not unexplained, "imports inside functions without a '# Lazy imports:' reason: " + ", ".join(unexplained)


def test_the_finder_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\n\ndef f():\n    import json\n    return json\n")
    assert _function_level_imports(str(module)) == [5]
