import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        # markers, not `item.keywords`: keywords hold the parent nodes' names too, so a checkout in a folder
        # named `ci` (or `slow`) had every case skipped. `ci` cases are slow ones CI still runs.
        if item.get_closest_marker("slow") or item.get_closest_marker("ci"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits_model() -> Path:
    """The bundled example, trained by examples/digits/train.py (setup.sh runs it; trained here if missing)."""
    model = DIGITS / "digits_cnn.onnx"
    if not model.exists() or not (DIGITS / "digits_test.npz").exists():
        subprocess.run([sys.executable, str(DIGITS / "train.py")], check=True)
    return model
