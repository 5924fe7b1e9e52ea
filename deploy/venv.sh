# shellcheck shell=bash
# The checkout's virtual environment, shared by deploy/setup and deploy/test (sourced by both).

VENV=${FERRYMAN_VENV:-.venv}

need_root() {
  # apt-get runs as root; say what to run instead of failing halfway
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: $* - install them with: sudo apt-get install $*" >&2
    exit 1
  fi
}

apt_install() {
  need_root "$@"
  echo "installing $* (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_venv() {
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Ferryman needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    # Debian/Ubuntu ship venv (and its pip) apart from python3
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
      apt_install "python3-venv"
    fi
    echo "creating $VENV"
    python3 -m venv "$VENV"
  fi
}

venv_install() {
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -c deploy/constraints.txt -e "$@"
}
