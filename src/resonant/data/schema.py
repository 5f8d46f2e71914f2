"""The event data contracts, in one place.

Raw events (``raw/{process}/chunk-XXXX.parquet``): one row per event with
``event_id`` (int64, unique within a dataset), ``process`` (string id from the
process table), ``label`` (int8: 0 background, 1 signal) and ``particles``:
list<struct<pt, eta, phi>> of massless particles (float32, GeV / rad).
Optional ``pthat`` (float32, GeV) is the generator's hard-process scale.

Jets (``jets.parquet``): one row per selected event with the two leading
anti-kt R=1.0 jets (``j1`` leading in pT): ``j{1,2}_{pt,eta,phi,m,n,tau1,tau2,tau3}``,
``mjj`` and, unless imported from a features-only file, the constituents
``j{1,2}_constituents``: list<struct<pt_rel, deta, dphi>> sorted by pT.
"""

from __future__ import annotations

import zlib

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError

PARTICLE_FIELDS = ("pt", "eta", "phi")
CONSTITUENT_FIELDS = ("pt_rel", "deta", "dphi")
JET_FEATURES = ("pt", "eta", "phi", "m", "n", "tau1", "tau2", "tau3")
JETS = ("j1", "j2")

PARTICLE_TYPE = pa.list_(pa.struct([(f, pa.float32()) for f in PARTICLE_FIELDS]))
CONSTITUENT_TYPE = pa.list_(pa.struct([(f, pa.float32()) for f in CONSTITUENT_FIELDS]))

RAW_SCHEMA = pa.schema(
    [
        ("event_id", pa.int64()),
        ("process", pa.string()),
        ("label", pa.int8()),
        ("particles", PARTICLE_TYPE),
    ]
)
RAW_OPTIONAL = {"pthat": pa.float32()}

EVENT_ID_BITS_PER_CHUNK = 24  # up to 16.7M events per chunk
EVENT_ID_BITS_CHUNK = 16  # up to 65k chunks per process


def event_id_base(process: str, chunk: int) -> int:
    """First event_id of a chunk: stable in the process name and chunk index."""
    if not 0 <= chunk < 2**EVENT_ID_BITS_CHUNK:
        raise ValueError(f"chunk index {chunk} out of range")
    tag = zlib.crc32(process.encode()) & 0x3FFFFF  # 22 bits -> ids stay below 2**62
    return (tag << (EVENT_ID_BITS_PER_CHUNK + EVENT_ID_BITS_CHUNK)) | (chunk << EVENT_ID_BITS_PER_CHUNK)


def jet_columns(with_constituents: bool = True) -> list[tuple[str, pa.DataType]]:
    cols = [("event_id", pa.int64()), ("process", pa.string()), ("label", pa.int8()), ("mjj", pa.float32())]
    for j in JETS:
        for f in JET_FEATURES:
            cols.append((f"{j}_{f}", pa.int32() if f == "n" else pa.float32()))
    if with_constituents:
        for j in JETS:
            cols.append((f"{j}_constituents", CONSTITUENT_TYPE))
    return cols


JETS_SCHEMA = pa.schema(jet_columns(True))
JETS_FEATURES_ONLY_SCHEMA = pa.schema(jet_columns(False))


def raw_table(event_id, process, label, particles: ak.Array, pthat=None) -> pa.Table:
    """Build a raw-event table in the contract's schema.

    ``particles`` is an awkward array of records with fields pt, eta, phi
    (one list per event); ``process`` a string or array of strings; ``label``
    an int or an array.
    """
    n = len(particles)
    event_id = np.asarray(event_id, dtype=np.int64)
    if isinstance(process, str):
        process = pa.array([process] * n, pa.string())
    else:
        process = pa.array(np.asarray(process, dtype=object), pa.string())
    label = np.broadcast_to(np.asarray(label, dtype=np.int8), (n,)).copy()
    parts = ak.zip({f: ak.values_astype(particles[f], np.float32) for f in PARTICLE_FIELDS})
    arr = ak.to_arrow(parts, extensionarray=False, list_to32=True)
    arr = arr.cast(PARTICLE_TYPE)
    cols = {"event_id": pa.array(event_id), "process": process, "label": pa.array(label), "particles": arr}
    schema = RAW_SCHEMA
    if pthat is not None:
        cols["pthat"] = pa.array(np.asarray(pthat, dtype=np.float32))
        schema = schema.append(pa.field("pthat", pa.float32()))
    return pa.table(cols, schema=schema)


def particles_from_table(table: pa.Table) -> ak.Array:
    """Awkward array of the particles (fields pt, eta, phi) of a raw table."""
    return ak.from_arrow(table.column("particles"))


def validate_raw(table: pa.Table, path) -> None:
    """Check a raw-event table against the contract; raise ``InputError``."""
    names = table.schema.names
    for field in RAW_SCHEMA:
        if field.name not in names:
            raise InputError(path, f"column '{field.name}' is missing (has: {', '.join(names)})",
                             "produce the file with the generator or the LHCO importer of this workflow",
                             field=field.name)
    typ = table.schema.field("particles").type
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)) or not pa.types.is_struct(typ.value_type):
        raise InputError(path, f"'particles' has type {typ}, expected list<struct<pt, eta, phi>>",
                         "write particles as a list of (pt, eta, phi) records per event", field="particles")
    sub = [typ.value_type.field(i).name for i in range(typ.value_type.num_fields)]
    for f in PARTICLE_FIELDS:
        if f not in sub:
            raise InputError(path, f"particle field '{f}' is missing (has: {', '.join(sub)})",
                             "write particles as (pt, eta, phi) records", field=f"particles.{f}")
    flat = pc.list_flatten(table.column("particles"))
    for f in PARTICLE_FIELDS:
        vals = pc.struct_field(flat, f)
        if len(vals) and not pc.all(pc.is_finite(vals)).as_py():
            bad = int(pc.sum(pc.invert(pc.is_finite(vals))).as_py() or 0)
            raise InputError(path, f"{bad} particle(s) have NaN or infinite {f}",
                             "remove or repair those events at the source", field=f"particles.{f}")
    pts = pc.struct_field(flat, "pt")
    if len(pts) and pc.min(pts).as_py() < 0:
        raise InputError(path, "negative particle pt", "check the pt column of the input", field="particles.pt")
    labels = table.column("label")
    if len(labels) and not pc.all(pc.is_in(labels, pa.array([0, 1], pa.int8()))).as_py():
        raise InputError(path, "labels must be 0 (background) or 1 (signal)", field="label")
    ids = table.column("event_id")
    if pc.count_distinct(ids).as_py() != len(ids):
        raise InputError(path, "event_id values are not unique", "regenerate the file", field="event_id")


def validate_jets(table: pa.Table, path, need_constituents: bool = False) -> None:
    """Check a jets table; ``need_constituents`` for branches that use particles."""
    names = table.schema.names
    for name, _ in jet_columns(False):
        if name not in names:
            raise InputError(path, f"column '{name}' is missing", "rerun the clustering stage", field=name)
    if need_constituents and not has_constituents(table.schema):
        raise InputError(
            path,
            "this jets table has no constituents (imported from a features-only file), "
            "but the stage needs particles",
            "use the generator or the LHCO particle file (events_anomalydetection_v2.h5) as the data source, "
            "or disable the point-cloud branches in config",
            field="j1_constituents",
        )


def has_constituents(schema: pa.Schema) -> bool:
    return all(f"{j}_constituents" in schema.names for j in JETS)
