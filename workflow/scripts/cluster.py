"""Cluster raw events into the jets table: anti-kt jets, the event selection, N-subjettiness and constituents."""

from __future__ import annotations

import logging
import time

from resonant import cli, io
from resonant.data import jets
from resonant.data.schema import JETS_SCHEMA, validate_raw
from resonant.errors import ConfigError, InputError

log = logging.getLogger("cluster")


def selection_settings(params: dict, args) -> dict:
    """Keyword arguments of ``jets.jets_table``: the config's selection block, then the command-line options."""
    try:
        kw = jets.selection_kwargs(params)
    except KeyError as e:
        raise ConfigError(f"selection.{e.args[0]}", "unknown setting",
                          f"use only {', '.join(sorted(jets.CONFIG_KEYS))} (and chunk_size)") from None
    for name in ("radius", "max_constituents", "jet_eta_max", "lead_pt_min", "chunk_size"):
        value = getattr(args, name)
        if value is not None:
            kw[name] = value
    full = {"radius": jets.DEFAULT_RADIUS, "max_constituents": jets.DEFAULT_MAX_CONSTITUENTS,
            "jet_eta_max": jets.DEFAULT_JET_ETA_MAX, "lead_pt_min": jets.DEFAULT_LEAD_PT_MIN,
            "chunk_size": jets.DEFAULT_CHUNK_SIZE, **kw}
    checks = {"radius": full["radius"] > 0, "jet_eta_max": full["jet_eta_max"] > 0,
              "lead_pt_min": full["lead_pt_min"] >= 0,
              "max_constituents": int(full["max_constituents"]) == full["max_constituents"]
              and full["max_constituents"] >= 1,
              "chunk_size": int(full["chunk_size"]) == full["chunk_size"] and full["chunk_size"] >= 1}
    for name, ok in checks.items():
        if not ok:
            raise ConfigError(f"selection.{name}", f"invalid value {full[name]!r}",
                              "radius and jet_eta_max > 0, lead_pt_min >= 0, max_constituents and chunk_size "
                              "integers >= 1")
    full["max_constituents"] = int(full["max_constituents"])
    full["chunk_size"] = int(full["chunk_size"])
    return full


def main(argv=None):
    p = cli.parser(__doc__)
    p.description += (" --params takes the config's selection block (jet_radius, lead_pt_min, jet_eta_max, "
                      "max_constituents); the options below override it.")
    p.add_argument("--input", nargs="+", required=True, help="raw-event Parquet file(s)")
    p.add_argument("--output", required=True, help="jets Parquet file (written only if events pass)")
    p.add_argument("--stats", default=None, help="selection statistics (JSON)")
    p.add_argument("--radius", type=float, default=None, help=f"anti-kt R (default {jets.DEFAULT_RADIUS})")
    p.add_argument("--lead-pt-min", type=float, default=None,
                   help=f"leading-jet pT threshold, GeV (default {jets.DEFAULT_LEAD_PT_MIN})")
    p.add_argument("--jet-eta-max", type=float, default=None,
                   help=f"jets need |eta| below this (default {jets.DEFAULT_JET_ETA_MAX})")
    p.add_argument("--max-constituents", type=int, default=None,
                   help=f"constituents kept per jet, hardest first (default {jets.DEFAULT_MAX_CONSTITUENTS})")
    p.add_argument("--chunk-size", type=int, default=None,
                   help=f"events clustered at once; bounds memory (default {jets.DEFAULT_CHUNK_SIZE})")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    kw = selection_settings(args.params, args)
    selection = {k: kw[k] for k in ("radius", "lead_pt_min", "jet_eta_max", "max_constituents")}

    t0 = time.perf_counter()
    totals = {"n_in": 0, "n_selected": 0, "n_in_by_process": {}, "n_selected_by_process": {},
              "n_constituents_from_fastjet": 0, "cpu_seconds": 0.0}
    per_input = {}
    with io.parquet_writer(args.output, JETS_SCHEMA, metadata={"selection": selection,
                                                               "inputs": list(args.input)}) as writer:
        for path in args.input:
            raw = io.read_table(path)
            validate_raw(raw, path)
            table, stats = jets.jets_table(raw, name=str(path), **kw)
            del raw
            if table.num_rows:
                writer.write_table(table, row_group_size=50_000)
            per_input[str(path)] = {"n_in": stats["n_in"], "n_selected": stats["n_selected"]}
            for key in ("n_in", "n_selected", "n_constituents_from_fastjet", "cpu_seconds"):
                totals[key] += stats[key]
            for key in ("n_in_by_process", "n_selected_by_process"):
                for proc, n in stats[key].items():
                    totals[key][proc] = totals[key].get(proc, 0) + n
            log.info("%s: %d/%d events selected", path, stats["n_selected"], stats["n_in"])
        if totals["n_selected"] == 0:
            raise InputError(", ".join(map(str, args.input)),
                             f"no event of {totals['n_in']} passes the selection (two anti-kt R={kw['radius']} "
                             f"jets with |eta| < {kw['jet_eta_max']}, leading pT > {kw['lead_pt_min']} GeV)",
                             "check that the events are the intended process (pTHat or resonance mass well "
                             "above the cut), or lower selection.lead_pt_min / raise selection.jet_eta_max",
                             field="particles")
    wall = time.perf_counter() - t0
    totals.update({
        "efficiency": totals["n_selected"] / totals["n_in"] if totals["n_in"] else 0.0,
        "selection": {"jet_radius": kw["radius"], "lead_pt_min": kw["lead_pt_min"],
                      "jet_eta_max": kw["jet_eta_max"], "max_constituents": kw["max_constituents"]},
        "inputs": per_input,
        "wall_seconds": wall,
        "events_per_cpu_second": totals["n_in"] / totals["cpu_seconds"] if totals["cpu_seconds"] else None,
    })
    log.info("%d/%d events selected (%.1f%%) in %.1f s; wrote %s", totals["n_selected"], totals["n_in"],
             100 * totals["efficiency"], wall, args.output)
    if args.stats:
        io.write_json(totals, args.stats)


if __name__ == "__main__":
    cli.run(main)
