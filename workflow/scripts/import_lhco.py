#!/usr/bin/env python
"""Import the official LHC Olympics 2020 R&D files into the workflow's contracts.

    import_lhco.py inspect   events_anomalydetection_v2.h5
    import_lhco.py particles events_anomalydetection_v2.h5 -o raw/lhco.parquet
    import_lhco.py features  events_anomalydetection_v2.features.h5 -o jets.parquet
    import_lhco.py features  events_anomalydetection_qcd_extra_inneronly_features.h5 \\
        -o extra_jets.parquet --id-tag lhco-extra-qcd

Bad input ends with exit status 2 and one message naming the file, the field
and the fix. ``--stats`` writes the import's statistics as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from resonant.data import lhco
from resonant.errors import InputError
from resonant.io import write_json


def _process_names(args) -> dict[int, str]:
    return {0: args.background_name, 1: args.signal_name}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    logging_opts = argparse.ArgumentParser(add_help=False)
    logging_opts.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = ap.add_subparsers(dest="command", required=True)

    p_ins = sub.add_parser("inspect", parents=[logging_opts],
                           help="validate a particle file and print what it holds (JSON)")
    p_ins.add_argument("path", help=f"the particle file ({lhco.PARTICLE_FILE})")
    p_ins.add_argument("--key", default=lhco.PARTICLE_KEY, help="pandas key (default: %(default)s)")

    def common(p):
        p.add_argument("-o", "--output", required=True, help="output Parquet file (written atomically)")
        p.add_argument("--id-tag", default="lhco",
                       help="event ids are event_id_base(tag, 0) + row index (default: %(default)s); give the "
                            "extra-QCD file its own tag")
        p.add_argument("--background-name", default=lhco.DEFAULT_PROCESS_NAMES[0],
                       help="process of label 0 (default: %(default)s)")
        p.add_argument("--signal-name", default=lhco.DEFAULT_PROCESS_NAMES[1],
                       help="process of label 1 (default: %(default)s)")
        p.add_argument("--stats", default=None, help="write the import statistics here (JSON)")

    p_par = sub.add_parser("particles", parents=[logging_opts], help=f"{lhco.PARTICLE_FILE} -> raw events (Parquet)")
    p_par.add_argument("path", help=f"the particle file ({lhco.PARTICLE_FILE})")
    common(p_par)
    p_par.add_argument("--key", default=lhco.PARTICLE_KEY, help="pandas key (default: %(default)s)")
    p_par.add_argument("--chunk-size", type=int, default=lhco.DEFAULT_CHUNK_SIZE,
                       help="events per chunk and row group (default: %(default)s)")
    p_par.add_argument("--max-events", type=int, default=None, help="import only the first N events")
    p_par.add_argument("--threads", type=int, default=None,
                       help="decompression threads for zlib files (default: up to 4 CPUs)")

    p_fea = sub.add_parser("features", parents=[logging_opts],
                           help="high-level features file -> jets table without constituents")
    p_fea.add_argument("path", help=f"{lhco.FEATURES_FILE} or {lhco.EXTRA_QCD_FILE}")
    common(p_fea)
    p_fea.add_argument("--key", default=None, help="pandas key (default: the file's only object)")
    p_fea.add_argument("--lead-pt-min", type=float, default=1200.0,
                       help="leading jet pT threshold in GeV (default: %(default)s)")
    p_fea.add_argument("--jet-eta-max", type=float, default=2.5,
                       help="both jets need |eta| below this (default: %(default)s)")

    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "inspect":
            print(json.dumps(lhco.inspect_particle_file(args.path, key=args.key), indent=2))
            return 0
        if args.command == "particles":
            stats = lhco.import_particles(args.path, args.output, chunk_size=args.chunk_size,
                                          process_names=_process_names(args), max_events=args.max_events,
                                          id_tag=args.id_tag, key=args.key, threads=args.threads)
        else:
            stats = lhco.import_features(args.path, args.output, id_tag=args.id_tag,
                                         process_names=_process_names(args), lead_pt_min=args.lead_pt_min,
                                         jet_eta_max=args.jet_eta_max, key=args.key)
    except InputError as e:
        logging.getLogger("import_lhco").error("%s", e)
        return 2
    if args.stats:
        write_json(stats, args.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
