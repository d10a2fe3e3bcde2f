#!/bin/sh
# Run the whole test suite (after ./setup.sh). Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")"
exec .venv/bin/python -m pytest "$@"
