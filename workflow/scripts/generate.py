"""Generate one chunk of events with Pythia 8 and the parametric detector; write the raw-event Parquet file."""

import argparse
import json
from pathlib import Path

import yaml

from resonant import cli
from resonant.data.generate import generate_chunk, write_chunk
from resonant.data.processes import model_names


def detector_arg(text: str) -> dict:
    """Detector overrides: inline JSON, ``@file``, or a path to a JSON/YAML file."""
    text = text.strip()
    if text.startswith(("{", "@")):
        return cli.json_arg(text)
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"neither a JSON object nor an existing file: {text!r}")
    try:
        return yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise argparse.ArgumentTypeError(f"{path}: not valid JSON/YAML: {e}") from e


def main(argv=None):
    p = cli.parser(__doc__)
    p.description += f" Models: {', '.join(model_names())}. --params holds the model parameters."
    p.add_argument("--model", required=True, help="physics model of resonant.data.processes")
    p.add_argument("--n-events", type=int, required=True, help="events to generate (no selection)")
    p.add_argument("--seed", type=int, required=True, help="Pythia seed of this chunk (1..900000000)")
    p.add_argument("--process", required=True, help="process id written to every event")
    p.add_argument("--label", type=int, choices=(0, 1), required=True, help="0 background, 1 signal")
    p.add_argument("--chunk", type=int, required=True, help="chunk index (sets the event_id range)")
    p.add_argument("--detector", type=detector_arg, default={},
                   help="detector overrides: JSON object, @file.json, or a JSON/YAML file path")
    p.add_argument("--output", required=True, help="output Parquet file")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    table = generate_chunk(args.model, args.params, args.n_events, args.seed, args.process, args.label,
                           args.chunk, detector=args.detector)
    write_chunk(table, args.output)


if __name__ == "__main__":
    cli.run(main)
