#!/usr/bin/env bash
# One entry point for a fresh machine: installs what is missing, then runs the chosen job.
#
#   bash run.sh demo    # set up, then run the main job: a real DAG, its DataFrame, pictures in out/
#   bash run.sh test    # set up, then run every test (library, notebooks, real browser), then
#                       # the library tests again on Python 3.12 and 3.13 where installed
#                       # (OKTYV_OTHER_PYTHONS="3.13" picks others, "" none)
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

setup_venv() {  # setup_venv [python] [venv-dir]
  local py="${1:-$PY}" venv="${2:-.venv}" stamp want
  stamp="$venv/.oktyv-stamp"
  want=$(cat pyproject.toml ci/constraints.txt | sha256sum | cut -c1-16)
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "==> creating $venv ($("$py" --version)) and installing oktyv_nb with pinned dependencies"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -c ci/constraints.txt -e '.[dev]'
  # A kernelspec inside the venv, so notebooks, nbval and Voila run this venv's Python.
  "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (oktyv_nb)" >/dev/null
  echo "$want" > "$stamp"
}

find_python() {  # find_python 3.12: the path of that Python (pyenv's, else on PATH), or fail
  local v="$1" p
  for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" "$(command -v "python$v" || true)"; do
    [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import sys' >/dev/null 2>&1 && { echo "$p"; return 0; }
  done
  return 1
}

other_pythons() {  # the library tests on the other supported Pythons this machine has
  local v py status=0
  for v in ${OKTYV_OTHER_PYTHONS-3.12 3.13}; do
    if ! py=$(find_python "$v"); then
      echo "==> Python $v is not installed here: its library tests are not run"
      continue
    fi
    setup_venv "$py" ".venv-$v"
    echo "==> library tests on Python $v"
    ".venv-$v/bin/python" -m pytest tests -m "not browser and not kernel" -p no:cacheprovider -q \
      || status=1
  done
  return "$status"
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
    status=0
    .venv/bin/python -m pytest tests notebooks \
      --nbval --nbval-current-env --nbval-sanitize-with ci/nbval_sanitize.cfg \
      -p no:cacheprovider "$@" || status=$?
    other_pythons || status=1
    exit "$status" ;;
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
