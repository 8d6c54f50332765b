# `make run` and `make test` set up a fresh Debian 12 machine themselves (apt + virtualenv).
.PHONY: setup run cluster test test-postgresql lint bench

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/pbx run

# The scale-out layout on one machine (README, Scale-out): PostgreSQL, Redis and two nodes on
# loopback addresses; data/cluster/roles.json says which process plays which role.
cluster: setup
	.venv/bin/pbx cluster

# The whole suite on SQLite, then every test that reaches SQL again on a PostgreSQL server the
# tests start themselves (unit tests use no database; e2e runs `pbx run` with its defaults;
# `no_sql` modules drive workers and the edge, whose SQL the others cover).
POSTGRESQL_SUITE = PBX_TEST_DATABASE=postgresql .venv/bin/pytest -m "not no_sql" \
	tests/integration tests/flows

test: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/pytest
	$(POSTGRESQL_SUITE)

test-postgresql: setup
	$(POSTGRESQL_SUITE)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
