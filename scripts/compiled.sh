#!/usr/bin/env bash
# The optional compiled build (docs/performance.md): builds the wheel with the core's hot modules
# compiled by mypyc, installs it in a throw-away venv and runs the tests of those modules against
# the installed wheel. The same tests run on the pure-Python package in the ordinary pytest run.
#
#   bash scripts/compiled.sh [PYTEST ARGS...]
#
# The build runs in a copy of the project: hatch-mypyc compiles in place, and a stray .so under
# src/ would turn every later PYTHONPATH=src run into a compiled one. The venv sees the global
# site-packages (pytest, hypothesis...) but its own mqttkit, the wheel, comes first;
# tests/test_compiled.py fails the run if the modules were not the wheel's compiled ones.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
work="$(mktemp -d "${TMPDIR:-/tmp}/mqttkit-compiled.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

start=$SECONDS
mkdir -p "$work/tree/docs"
cp -r src pyproject.toml LICENSE .gitignore "$work/tree/"
cp docs/pypi.md "$work/tree/docs/"
find "$work/tree" -name __pycache__ -prune -exec rm -rf {} +
# The build hook is off by default (pyproject.toml); this turns it on for this build only.
HATCH_BUILD_HOOK_ENABLE_MYPYC=true python -m pip wheel --quiet --no-deps \
    --wheel-dir "$work/dist" "$work/tree"
wheel="$(ls "$work"/dist/mqttkit-*.whl)"
case "$wheel" in
  *-none-any.whl) echo "compiled.sh: $wheel is a pure-Python wheel" >&2; exit 1 ;;
esac
python -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --no-deps "$wheel"
echo "compiled.sh: built and installed $(basename "$wheel") in $((SECONDS - start)) s"
"$work/venv/bin/mqttkit" --version

# The modules the hook compiles are the core's: their own tests, the fuzz harness (the session
# against scripted brokers) and the fake broker's unit tests. From the repository root, so that
# `tests.support.*` imports from the tree while mqttkit imports from the venv.
cd "$root"
MQTTKIT_EXPECT_COMPILED=1 "$work/venv/bin/python" -m pytest -q \
    tests/test_compiled.py tests/protocol tests/fuzz tests/support/test_fake_broker.py "$@"
echo "compiled.sh: $((SECONDS - start)) s in all"
