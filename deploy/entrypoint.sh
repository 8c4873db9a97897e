#!/bin/sh
# Container entry point: the first argument names the service; the rest goes to it (e.g. --config FILE).
#   scp | api | housekeeper   python -m services.<name>
#   migrate [--check [--wait SECONDS]] [REVISION]   python -m shared.migrate
# exec, so that the service is PID 1's replacement and receives SIGTERM from the kubelet itself.
set -eu

PYTHON="${PYTHON:-python3}"

usage() {
    echo "usage: $(basename "$0") {scp|api|housekeeper|migrate} [options]" >&2
}

if [ "$#" -eq 0 ]; then
    usage
    exit 64
fi

service="$1"
shift
case "$service" in
    scp | api | housekeeper)
        exec "$PYTHON" -m "services.$service" "$@"
        ;;
    migrate)
        exec "$PYTHON" -m shared.migrate "$@"
        ;;
    -h | --help | help)
        usage
        exit 0
        ;;
    *)
        echo "unknown service: $service" >&2
        usage
        exit 64 # EX_USAGE
        ;;
esac
