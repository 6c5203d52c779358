#!/bin/sh
# Print the path of a Python interpreter >= 3.12, or fail with a clear message.
#
# Each candidate is *run* rather than trusted by name: on pyenv machines `python3.12` can be a shim
# that only works when PYENV_VERSION is set, and plain `python3` may be older than 3.12.
# Set PYTHON=/path/to/python to skip the search.
set -eu

MIN_CHECK='import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'
PATH_OF='import sys; print(sys.executable)'

try() {
    # $1: command name or path. On success print the real interpreter path and exit 0.
    if "$1" -c "$MIN_CHECK" >/dev/null 2>&1; then
        "$1" -c "$PATH_OF"
        exit 0
    fi
}

if [ -n "${PYTHON:-}" ]; then
    try "$PYTHON"
    echo "error: PYTHON=$PYTHON is not a working Python >= 3.12" >&2
    exit 1
fi

for candidate in python3.13 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then
        try "$candidate"
    fi
done

# pyenv: call the installed interpreters directly, bypassing the shims (newest first).
root=""
if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root 2>/dev/null || true)
fi
if [ -z "$root" ]; then
    root=${PYENV_ROOT:-$HOME/.pyenv}
fi
if [ -d "$root/versions" ]; then
    # Sort the bare version names (3.13.0, 3.12.10, ...) numerically, newest first.
    for version in $(cd "$root/versions" 2>/dev/null && ls -d 3.1[2-9]* 2>/dev/null \
            | sort -t. -k1,1nr -k2,2nr -k3,3nr); do
        if [ -x "$root/versions/$version/bin/python" ]; then
            try "$root/versions/$version/bin/python"
        fi
    done
fi

echo "error: no Python >= 3.12 found (tried python3.13, python3.12, python3 and pyenv's" \
    "versions/3.1[2-9]*); install one or set PYTHON=/path/to/python3.12" >&2
exit 1
