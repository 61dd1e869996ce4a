#!/usr/bin/env bash
# One entry point for a fresh machine. It creates .venv/, installs edgetune with what it needs (the CUDA extra
# included, so that tests/test_cuda.py builds GPU libraries here, GPU or not), then:
#   bash setup.sh example   train the bundled digits CNN, compile and tune it for the host CPU, print its latency report
#   bash setup.sh test      run the whole default test suite (add --runslow, or pytest flags, after it)
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv

need_python() {
    if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "setup.sh: Python >= 3.10 is required (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3" >&2
        exit 2
    fi
}

# ARM64 cross-compiling and emulation (tests/test_arm.py skips without them): Debian packages, root only.
arm_tools() {
    local missing=()
    command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
    command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
    command -v file >/dev/null || missing+=(file)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "== installing ${missing[*]} for ARM64 cross-compiling and emulation (about a minute)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup.sh: ${missing[*]} missing: ARM64 builds and tests/test_arm.py need them; as root run:" \
             "apt-get install ${missing[*]}" >&2
    fi
}

install() {
    need_python
    arm_tools
    if [ ! -x "$VENV/bin/python" ]; then
        echo "== creating $VENV"
        "$PY" -m venv "$VENV"
    fi
    # The stamp skips pip when nothing that decides the install has changed.
    local stamp="$VENV/.edgetune-installed" want
    want=$(cat pyproject.toml setup.sh | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "== installing edgetune and its dependencies into $VENV (first time: a few minutes)"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e ".[test,cuda]"
        echo "$want" > "$stamp"
    fi
}

example_model() {
    if [ ! -f examples/digits/digits_cnn.pt ] || [ ! -f examples/digits/digits_samples.npz ]; then
        echo "== training the example model (scikit-learn digits, a few seconds)"
        "$VENV/bin/python" examples/digits/train.py
    fi
}

case "${1:-}" in
    example)
        install
        example_model
        echo "== edgetune compile examples/digits/digits_cnn.onnx -t host -o out/digits --tune 40 --db out/tuning"
        exec "$VENV/bin/edgetune" compile examples/digits/digits_cnn.onnx -t host -o out/digits --force \
            --inputs examples/digits/digits_samples.npz --tune 40 --db out/tuning
        ;;
    test)
        shift
        install
        example_model
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: bash setup.sh example | test [pytest args]" >&2
        exit 2
        ;;
esac
