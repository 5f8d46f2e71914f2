"""Checks that both point-cloud generators (flow matching, diffusion) must pass, written once.

Each generator's test file trains its small models (its ``trained`` fixture) and calls
these with its module.
"""

from __future__ import annotations

import numpy as np
import pytest

from resonant import pointcloud


def check_generate_writes_a_valid_file(module, trained: dict, tmp_path, caplog) -> dict:
    """``module.generate`` streams a valid generated-background file, fixed by its seed; returns its info."""
    name = module.__name__.rsplit(".", 1)[-1]
    mjj = np.random.default_rng(3).uniform(3300, 3700, 50)
    paths = [tmp_path / "gen-a.h5", tmp_path / "gen-b.h5"]
    for path in paths:
        with pointcloud.GeneratedWriter(path, 12, attrs={"model": name}) as writer:
            with caplog.at_level("INFO", logger="resonant.generative"):
                info = module.generate(trained["jets"], trained["particles"], mjj, 12, steps=3, batch_size=20,
                                       seed=9, writer=writer)
    assert info["events"] == 50
    # 3 batches per file, 2 files: a progress line per batch
    assert sum("generated batch" in r.getMessage() and "events/s" in r.getMessage() for r in caplog.records) == 6
    cloud = pointcloud.read_generated(paths[0])
    assert len(cloud) == 50 and cloud.max_particles == 12
    np.testing.assert_allclose(cloud.mjj, mjj.astype(np.float32))
    np.testing.assert_array_equal(cloud.mask.sum(-1), pointcloud.n_valid(cloud.jets, 12))
    assert np.all(cloud.particles[~cloud.mask] == 0)
    assert pointcloud.generated_attrs(paths[0])["n_events"] == 50
    assert pointcloud.generated_attrs(paths[0])["model"] == name
    other = pointcloud.read_generated(paths[1])
    for field in ("jets", "particles", "mask"):  # the seed fixes the file
        np.testing.assert_array_equal(getattr(cloud, field), getattr(other, field))
    # batches get different noise: two batches with the same m_jj differ
    with pointcloud.GeneratedWriter(tmp_path / "c.h5", 12) as writer:
        module.generate(trained["jets"], trained["particles"], np.full(8, 3500.0), 12, steps=3, batch_size=4,
                        seed=9, writer=writer)
    jets = pointcloud.read_generated(tmp_path / "c.h5").jets
    assert not np.array_equal(jets[:4], jets[4:])
    with pointcloud.GeneratedWriter(tmp_path / "d.h5", 10) as writer, pytest.raises(ValueError, match="slots"):
        module.generate(trained["jets"], trained["particles"], mjj, 12, steps=3, writer=writer)
    with pytest.raises(ValueError, match="GeneratedWriter"):
        module.generate(trained["jets"], trained["particles"], mjj, 12, steps=3)
    return info
