#!/usr/bin/env bash
# Rebuilds every example contract's .wasm and copies it next to its source, where tests and the
# README use it. `build.sh --check` rebuilds and fails if a committed file differs from its build.
# Needs the wasm32 target once: rustup target add wasm32-unknown-unknown
set -euo pipefail
cd "$(dirname "$0")"
check=false
if [[ "${1:-}" == "--check" ]]; then check=true; fi
cargo build --release --target wasm32-unknown-unknown
status=0
for crate in token bad bad_import compute relay; do
    built="target/wasm32-unknown-unknown/release/peregrine_${crate}.wasm"
    committed="${crate}/${crate}.wasm"
    if $check; then
        if cmp -s "$built" "$committed"; then
            echo "${committed}: matches its source"
        else
            echo "${committed}: DIFFERS from a fresh build; run contracts/build.sh and commit" >&2
            status=1
        fi
    else
        cp "$built" "$committed"
        echo "${committed}: $(wc -c < "$committed") bytes"
    fi
done
exit $status
