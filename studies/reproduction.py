"""Every trainable-parameter count of the LoRETTA and LoRTA papers next to tenpeft's: writes
docs/reproduction.md (and prints it). The rows are data in ``tenpeft/lab/reproduction.py``; every
count is measured on the meta device (no weights, no download). Trains nothing; seconds.

    python studies/reproduction.py
    python studies/reproduction.py --out /tmp/reproduction.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

import transformers

from tenpeft.atomic import atomic_write
from tenpeft.lab.reproduction import render
from tenpeft.lab.study import script

DOC = Path(__file__).resolve().parents[1] / "docs" / "reproduction.md"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DOC), help="where to write the markdown (default: docs/reproduction.md)")
    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()
    text = render()
    print(text, end="")
    print(f"wrote {atomic_write(args.out, lambda tmp: Path(tmp).write_text(text, encoding='utf-8'))}")
    return text


if __name__ == "__main__":
    script(main)
