"""Where things are, for the tests of every tier (one home, so test files can move between tiers)."""
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PACKAGE = ROOT / "tenpeft"
STUDIES = ROOT / "studies"
EXAMPLES = ROOT / "examples"
SHARED_GLUE = ROOT.parent / "shared" / "data" / "glue"
