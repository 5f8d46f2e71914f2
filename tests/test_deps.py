"""Each stage's declared code dependencies cover every package module it really loads."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from resonant.deps import sources

SCRIPTS = sorted((ROOT / "workflow/scripts").glob("*.py"))
PROBE = """
import json, runpy, sys
sys.argv = [sys.argv[1], "--help"]
runpy.run_path(sys.argv[0], run_name="probe")  # imports only: main() is not called
print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())
                        if n == "resonant" or n.startswith("resonant.") and getattr(m, "__file__", None))))
"""


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_declared_sources_cover_runtime_imports(script):
    out = subprocess.run([sys.executable, "-c", PROBE, str(script)], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""}, check=True, timeout=300)
    loaded = {str(__import__("pathlib").Path(f).resolve().relative_to(ROOT)) for f in json.loads(out.stdout)}
    declared = set(sources(script, root=ROOT))
    assert loaded <= declared, f"{script.name} loads undeclared modules: {sorted(loaded - declared)}"
    assert f"workflow/scripts/{script.name}" in declared


def test_function_level_and_relative_imports_are_followed(tmp_path):
    deps = sources(ROOT / "workflow/scripts/cathode_fidelity.py", root=ROOT)
    assert "src/resonant/metrics.py" in deps  # imported inside fidelity_auc()
    assert "src/resonant/models/mlp.py" in deps  # through models.classifiers
    assert "src/resonant/data/jets.py" not in deps
