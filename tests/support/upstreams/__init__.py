"""Upstream model servers for tests: fakes where nothing real can run offline."""
