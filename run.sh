#!/usr/bin/env bash
# ./run.sh [--port N] [--data-dir DIR] [--test-codes]   start the supervisor
# ./run.sh test [pytest args]                           run the test suite
# ./run.sh bench                                        run the benchmarks
# ./run.sh agent-image [--docker-host URL] [--tlsdir D]  build the docker agent image
set -euo pipefail
cd "$(dirname "$0")"

_venv() {
    # (Re)install when setup.py changes; the project is installed editable.
    if [[ ! -x .venv/bin/python || setup.py -nt .venv/.installed ]]; then
        python3 -m venv .venv
        .venv/bin/pip install -q --upgrade pip
        .venv/bin/pip install -q -e '.[test]'
        touch .venv/.installed
    fi
}

case ${1:-} in
    test)
        shift
        _venv
        etc/setup-test-host.sh
        # the slow part of the agent image (debootstrap, cached) before
        # pytest and its per-test timeouts; the docker tests import it
        if [[ $(id -u) == 0 ]] && command -v debootstrap >/dev/null; then
            etc/docker/build-agent-image.sh --rootfs-only \
                || [[ ${CI:-} != true ]]
        fi
        exec .venv/bin/python -m pytest "$@"
        ;;
    agent-image)
        shift
        _venv
        exec etc/docker/build-agent-image.sh "$@"
        ;;
    bench)
        shift
        _venv
        exec .venv/bin/python -m tests.bench "$@"
        ;;
    *)
        _venv
        exec .venv/bin/supervisor service "$@"
        ;;
esac
