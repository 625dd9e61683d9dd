"""Test fixtures against the real embedded services (see tests/fixtures.py and tests/bootstrap.py).

`make test` runs `hartonomous up` first, so PostgreSQL and Redis answer before Django loads.
"""
pytest_plugins = ["tests.fixtures"]
