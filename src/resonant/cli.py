"""What every stage script shares: argument parsing, logging, error reporting.

Stage scripts in ``workflow/scripts`` stay thin: build a parser with
:func:`parser`, call the library inside :func:`run`, which turns the
project's input errors into one clear line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import InputError


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--params", type=json_arg, default={},
                   help="stage settings as a JSON object, or @file.json")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def json_arg(text: str):
    """Parse a JSON argument given inline or as ``@path``."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from e


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    for noisy in ("numexpr", "matplotlib", "h5py", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and OpenMP (xgboost takes ``n_jobs`` explicitly)."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no busy-waiting when cores are shared
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(max(1, int(n)))


def run(main, argv=None) -> None:
    """Call ``main(argv)``; report an :class:`InputError` as one line and exit 2."""
    try:
        main(argv)
    except InputError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(2)
