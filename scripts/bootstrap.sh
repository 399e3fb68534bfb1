# Sourced by ./dev. Finds a Python >= 3.12 and keeps .venv/ in step with pyproject.toml.
# pyenv shims (python3.12, python3.13) exist on some machines but fail unless a version is
# selected, so every candidate is probed by running it, never trusted by name.
VENV="${VOICEBOT_VENV:-$ROOT/.venv}"

_python_ok() {
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local c
  local candidates=()
  [ -n "${VOICEBOT_PYTHON:-}" ] && candidates+=("$VOICEBOT_PYTHON")
  candidates+=(python3.12 python3.13 python3.14 python3)
  if command -v pyenv >/dev/null 2>&1 || [ -d "${PYENV_ROOT:-$HOME/.pyenv}" ]; then
    local root
    root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    for c in "$root"/versions/3.12*/bin/python3 "$root"/versions/3.13*/bin/python3 "$root"/versions/3.1[4-9]*/bin/python3; do
      [ -x "$c" ] && candidates+=("$c")
    done
  fi
  candidates+=(/usr/bin/python3.12 /usr/bin/python3.13 /usr/local/bin/python3.12 /usr/local/bin/python3.13)
  for c in "${candidates[@]}"; do
    if _python_ok "$c"; then command -v "$c" 2>/dev/null || echo "$c"; return 0; fi
  done
  return 1
}

ensure_venv() {
  local stamp="$VENV/.voicebot-installed"
  local want
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
  if [ -x "$VENV/bin/python" ] && _python_ok "$VENV/bin/python" && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  local py
  if ! py="$(find_python)"; then
    echo "voicebot needs Python >= 3.12 and none was found." >&2
    echo "Tried \$VOICEBOT_PYTHON, python3.12/3.13/3.14/python3 on PATH, and \$(pyenv root)/versions/3.12+." >&2
    echo "Install one (e.g. 'pyenv install 3.12') or point VOICEBOT_PYTHON at it." >&2
    exit 1
  fi
  echo "bootstrap: using $py ($("$py" --version 2>&1)) for $VENV" >&2
  if ! [ -x "$VENV/bin/python" ] || ! _python_ok "$VENV/bin/python"; then
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  echo "bootstrap: installing voicebot and its dependencies into $VENV (log: $VENV/pip.log)" >&2
  if ! "$VENV/bin/python" -m pip install -e "$ROOT[dev]" >"$VENV/pip.log" 2>&1; then
    tail -n 40 "$VENV/pip.log" >&2
    echo "bootstrap: pip install failed; see $VENV/pip.log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
}

# The fleet-admission tests (tests/test_redis_admission.py) start a throwaway redis-server.
# Where it is missing and we are root with apt-get (a CI container), install the Debian
# package; anywhere else those tests skip and say why. VOICEBOT_NO_APT=1 turns this off.
ensure_redis_server() {
  command -v redis-server >/dev/null 2>&1 && return 0
  if [ "${VOICEBOT_NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing redis-server (Debian package) for the Redis admission tests" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } >/dev/null 2>&1; then
      echo "bootstrap: could not install redis-server; the Redis admission tests will skip" >&2
    fi
  fi
  return 0
}
