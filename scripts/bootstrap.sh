#!/usr/bin/env bash
# Creates the virtualenv and installs stkpay with its dev tools. Installs Debian's
# python3-venv only when the interpreter cannot make a venv (a bare Debian/Ubuntu).
set -euo pipefail
venv=${1:-.venv}
py=${PY:-python3}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "stkpay needs Python >= 3.11 (found $("$py" --version 2>&1))" >&2; exit 1
fi
if ! "$py" -m venv --help >/dev/null 2>&1 || ! "$py" -c 'import ensurepip' 2>/dev/null; then
  ver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${ver}-venv" || \
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
# pyscard has no Linux wheel: it builds from source with swig and the PC/SC headers.
if ! command -v swig >/dev/null || [ ! -e /usr/include/PCSC/winscard.h ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swig libpcsclite-dev
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[dev]'
