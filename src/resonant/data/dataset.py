"""Assembling a dataset's jet table from per-chunk jet files."""

from __future__ import annotations

import logging

import numpy as np

from .. import io
from ..errors import InputError
from .schema import JETS_FEATURES_ONLY_SCHEMA, JETS_SCHEMA, has_constituents, validate_jets

log = logging.getLogger(__name__)


def merge_jets(inputs: list, output, metadata: dict | None = None) -> dict:
    """Concatenate jet tables (all with or all without constituents) into ``output``.

    Streams one input at a time; checks that event ids are unique across inputs.
    Returns per-process event counts.
    """
    if not inputs:
        raise InputError(output, "no jet files to merge", "check the process table and the data source")
    first = io.open_parquet(inputs[0]).schema_arrow
    schema = JETS_SCHEMA if has_constituents(first) else JETS_FEATURES_ONLY_SCHEMA
    ids = []
    counts: dict[str, int] = {}
    with io.parquet_writer(output, schema, metadata=metadata) as writer:
        for path in inputs:
            table = io.read_table(path)
            validate_jets(table, path)
            if has_constituents(table.schema) != (schema is JETS_SCHEMA):
                raise InputError(path, "mixes jet tables with and without constituents",
                                 "use one data source for the whole dataset", field="j1_constituents")
            table = table.select(schema.names).cast(schema)
            ids.append(table.column("event_id").to_numpy())
            for proc, n in zip(*np.unique(np.asarray(table.column("process").to_pylist(), dtype=object),
                                         return_counts=True)):
                counts[str(proc)] = counts.get(str(proc), 0) + int(n)
            if len(table):
                writer.write_table(table, row_group_size=50_000)
            log.info("merged %s (%d events)", path, len(table))
        all_ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
        if len(np.unique(all_ids)) != len(all_ids):
            raise InputError(output, "event_id values collide between inputs",
                             "rename one of the processes (ids derive from the process name)", field="event_id")
    return counts

