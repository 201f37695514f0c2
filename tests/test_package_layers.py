"""The packages import each other in layers (.importlinter): no package imports one above it."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_packages_import_only_the_layers_below_them():
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "lint-imports")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert "1 kept, 0 broken" in proc.stdout
