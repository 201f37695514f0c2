"""Temporary files of killed writers are reclaimed; those of live processes and other files are kept."""
import os
import subprocess
import sys

from detkit.utils.atomic import remove_stale_temp_files, temp_path_for


def test_only_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = tmp_path / f".classes.json.tmp-{int(dead.stdout)}"
    live = temp_path_for(str(tmp_path / "classes.json"))  # this process: alive
    kept = [tmp_path / "classes.json", tmp_path / ".hidden", tmp_path / f"x.tmp-{int(dead.stdout)}"]
    for path in [stale, live, *kept]:
        open(path, "w").close()
    assert remove_stale_temp_files(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and os.path.exists(live) and all(p.exists() for p in kept)
