"""Event data: generator, detector smearing, LHCO import, jets and features."""
