"""Import the official LHC Olympics 2020 R&D files into the workflow's contracts.

    import_lhco.py inspect   --input events_anomalydetection_v2.h5
    import_lhco.py particles --input events_anomalydetection_v2.h5 --output raw.parquet
    import_lhco.py features  --input events_anomalydetection_v2.features.h5 --output jets.parquet \\
        [--extra-background events_anomalydetection_qcd_extra_inneronly_features.h5]

--params takes a JSON object (the workflow passes chunk_size, key (the
particle file's pandas key, dataset.lhco.key), process_names {"0": background,
"1": signal} and the config's selection block); the options override it.
Bad input ends with exit status 2 and one line naming the file, the field
and the fix.
"""

from __future__ import annotations

import argparse
import json

from resonant import cli
from resonant.data import lhco
from resonant.errors import ConfigError
from resonant.io import write_json

# key is the particle file's (the features import finds its own); jet_radius and
# max_constituents concern clustering only
PARAM_KEYS = {"chunk_size", "key", "process_names", "lead_pt_min", "jet_eta_max",
              "jet_radius", "max_constituents"}


def _params(args) -> dict:
    params = args.params
    if not isinstance(params, dict):
        raise ConfigError("--params", "must be a JSON object", 'e.g. {"chunk_size": 10000}')
    unknown = sorted(set(params) - PARAM_KEYS)
    if unknown:
        raise ConfigError(f"--params {unknown[0]}", "unknown setting", f"use only {', '.join(sorted(PARAM_KEYS))}")
    return params


def _process_names(params: dict, args) -> dict[int, str]:
    raw = params.get("process_names", {})
    if not isinstance(raw, dict) or set(raw) - {"0", "1", 0, 1}:
        raise ConfigError("--params process_names", f"invalid value {raw!r}", 'give {"0": background, "1": signal}')
    names = {int(k): v for k, v in raw.items()}
    names = {**lhco.DEFAULT_PROCESS_NAMES, **names}
    if args.background_name:
        names[0] = args.background_name
    if args.signal_name:
        names[1] = args.signal_name
    for k, v in names.items():
        if not isinstance(v, str) or not v:
            raise ConfigError(f"--params process_names.{k}", f"invalid value {v!r}", "give a non-empty string")
    return names


def _particle_key(params: dict, args) -> str:
    """The particle file's pandas key: --key, else params (dataset.lhco.key), else 'df'."""
    if args.key is not None:
        return args.key
    key = params.get("key", lhco.PARTICLE_KEY)
    if not isinstance(key, str) or not key:
        raise ConfigError("--params key", f"invalid value {key!r}",
                          f"give the pandas key of the particle file ({lhco.KEY_SETTING}), e.g. 'df'")
    return key


def _number(params: dict, args, name: str, default, kind=float, minimum=None):
    value = getattr(args, name)
    if value is None:
        value = params.get(name, default)
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--params {name}", f"invalid value {value!r}", f"give a {kind.__name__}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"--params {name}", f"{value} is below {minimum}", f"give a value >= {minimum}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{inspect,particles,features}")
    common = argparse.ArgumentParser(add_help=False)  # the options of cli.parser, per subcommand
    common.add_argument("--params", type=cli.json_arg, default={}, help="settings as a JSON object, or @file.json")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    p_ins = sub.add_parser("inspect", parents=[common],
                           help="validate a particle file and print what it holds (JSON)")
    p_ins.add_argument("--input", required=True, help=f"the particle file ({lhco.PARTICLE_FILE})")
    p_ins.add_argument("--key", default=None, help=f"pandas key (default: params, else {lhco.PARTICLE_KEY})")

    def names_and_stats(p):
        p.add_argument("--output", required=True, help="output Parquet file (written atomically)")
        p.add_argument("--id-tag", default="lhco",
                       help="event ids are event_id_base(tag, 0) + row index (default: %(default)s)")
        p.add_argument("--background-name", default=None, help="process of label 0 (default: params, else qcd)")
        p.add_argument("--signal-name", default=None, help="process of label 1 (default: params, else signal)")
        p.add_argument("--stats", default=None, help="write the import statistics here (JSON)")

    p_par = sub.add_parser("particles", parents=[common], help=f"{lhco.PARTICLE_FILE} -> raw events (Parquet)")
    p_par.add_argument("--input", required=True, help=f"the particle file ({lhco.PARTICLE_FILE})")
    names_and_stats(p_par)
    p_par.add_argument("--key", default=None,
                       help=f"pandas key (default: params 'key', the workflow's {lhco.KEY_SETTING}; else "
                            f"{lhco.PARTICLE_KEY})")
    p_par.add_argument("--chunk-size", type=int, default=None,
                       help=f"events per row group (default: params, else {lhco.DEFAULT_CHUNK_SIZE}); memory "
                            f"does not grow with it beyond ~2 kB per event")
    p_par.add_argument("--max-events", type=int, default=None, help="import only the first N events")
    p_par.add_argument("--threads", type=int, default=None,
                       help="decompression threads for zlib files (default: up to 4 CPUs)")

    p_fea = sub.add_parser("features", parents=[common],
                           help="high-level features file(s) -> jets table without constituents")
    p_fea.add_argument("--input", required=True, help=lhco.FEATURES_FILE)
    names_and_stats(p_fea)
    p_fea.add_argument("--extra-background", default=None,
                       help=f"{lhco.EXTRA_QCD_FILE}, appended to the output under its own ids and process")
    p_fea.add_argument("--extra-id-tag", default="lhco-extra-qcd",
                       help="id tag of the extra file (default: %(default)s)")
    p_fea.add_argument("--extra-process", default=None,
                       help="process of the extra file's events (default: <background name>_extra)")
    p_fea.add_argument("--key", default=None, help="pandas key (default: the file's only object)")
    p_fea.add_argument("--lead-pt-min", type=float, default=None,
                       help="leading jet pT threshold in GeV (default: params, else 1200)")
    p_fea.add_argument("--jet-eta-max", type=float, default=None,
                       help="both jets need |eta| below this (default: params, else 2.5)")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    params = _params(args)
    if args.command == "inspect":
        print(json.dumps(lhco.inspect_particle_file(args.input, key=_particle_key(params, args)), indent=2))
        return
    names = _process_names(params, args)
    if args.command == "particles":
        stats = lhco.import_particles(
            args.input, args.output,
            chunk_size=_number(params, args, "chunk_size", lhco.DEFAULT_CHUNK_SIZE, int, 1),
            process_names=names, max_events=args.max_events, id_tag=args.id_tag, key=_particle_key(params, args),
            threads=args.threads)
    else:
        stats = lhco.import_features(
            args.input, args.output, id_tag=args.id_tag, process_names=names,
            lead_pt_min=_number(params, args, "lead_pt_min", 1200.0, float, 0.0),
            jet_eta_max=_number(params, args, "jet_eta_max", 2.5, float, 0.0),
            key=args.key, extra_background=args.extra_background, extra_id_tag=args.extra_id_tag,
            extra_process=args.extra_process)
    if args.stats:
        write_json(stats, args.stats)


if __name__ == "__main__":
    cli.run(main)
