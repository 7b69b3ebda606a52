#!/usr/bin/env bash
# One entry point for a fresh machine: installs what is missing, then runs the chosen job.
#
#   bash run.sh demo    # set up, then run the main job: a real DAG, its DataFrame, pictures in out/
#   bash run.sh test    # set up, then run every test (library, notebooks, real browser)
#   bash run.sh lab     # set up, then open JupyterLab on notebooks/
#   bash run.sh bench   # set up, then run the benchmark suite (writes bench/RESULTS.md)
#   bash run.sh setup   # only set up
#
# Set-up is idempotent: the system packages (Graphviz, and Chromium for the browser tests) are
# installed with apt only when missing; the virtualenv .venv is (re)built when pyproject.toml or
# ci/constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-demo}"
shift || true
PY="${PYTHON:-python3}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

apt_install() {  # apt_install <command-that-must-exist> <package>...
  local need=()
  while [ $# -gt 0 ]; do
    command -v "$1" >/dev/null 2>&1 || need+=("$2")
    shift 2
  done
  [ ${#need[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "missing system packages: ${need[*]} (install them with your package manager)" >&2
    return 1
  fi
  echo "==> apt-get install ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}

setup_venv() {
  local stamp=.venv/.oktyv-stamp want
  want=$(cat pyproject.toml ci/constraints.txt | sha256sum | cut -c1-16)
  if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "==> creating .venv and installing oktyv_nb with pinned dependencies"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c ci/constraints.txt -e '.[dev]'
  # A kernelspec inside the venv, so notebooks, nbval and Voila run this venv's Python.
  .venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (oktyv_nb)" >/dev/null
  echo "$want" > "$stamp"
}

case "$job" in
  setup)
    apt_install dot graphviz chromium chromium
    setup_venv ;;
  demo)
    apt_install dot graphviz
    setup_venv
    exec .venv/bin/python -m oktyv_nb.demo --out out "$@" ;;
  test)
    apt_install dot graphviz chromium chromium
    setup_venv
    exec .venv/bin/python -m pytest tests notebooks \
      --nbval --nbval-current-env --nbval-sanitize-with ci/nbval_sanitize.cfg \
      -p no:cacheprovider "$@" ;;
  lab)
    apt_install dot graphviz
    setup_venv
    root=(); [ "$(id -u)" = 0 ] && root=(--allow-root)  # Jupyter refuses root otherwise
    exec .venv/bin/jupyter lab --notebook-dir=notebooks "${root[@]}" "$@" ;;
  bench)
    setup_venv
    exec .venv/bin/python -m bench "$@" ;;
  *)
    echo "usage: bash run.sh [demo|test|lab|bench|setup] [extra args]" >&2
    exit 2 ;;
esac
