# Sourced by ./dev. Finds a Python >= 3.12 and keeps .venv/ in step with pyproject.toml.
# pyenv shims (python3.12, python3.13) exist on some machines but fail unless a version is
# selected, so every candidate is probed by running it, never trusted by name.
VENV="${VOICEBOT_VENV:-$ROOT/.venv}"

_python_ok() {
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

# An explicit VOICEBOT_PYTHON is used or refused, never silently replaced by another one.
find_python() {
  local c
  local candidates=()
  if [ -n "${VOICEBOT_PYTHON:-}" ]; then
    if _python_ok "$VOICEBOT_PYTHON"; then command -v "$VOICEBOT_PYTHON" 2>/dev/null || echo "$VOICEBOT_PYTHON"; return 0; fi
    local version
    if version="$("$VOICEBOT_PYTHON" --version 2>&1)"; then
      echo "VOICEBOT_PYTHON=$VOICEBOT_PYTHON is $version; voicebot needs Python >= 3.12." >&2
    else
      echo "VOICEBOT_PYTHON=$VOICEBOT_PYTHON cannot be run." >&2
    fi
    echo "Point VOICEBOT_PYTHON at a Python >= 3.12, or unset it to search PATH and pyenv." >&2
    return 2
  fi
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
  local py status=0
  py="$(find_python)" || status=$?
  [ "$status" = 2 ] && exit 1
  if [ "$status" != 0 ]; then
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
  echo "bootstrap: installing voicebot with every provider SDK and the dev tools into $VENV" >&2
  echo "bootstrap: (first run: about 2-3 minutes; full pip output in $VENV/pip.log)" >&2
  if ! run_with_progress "$VENV/pip.log" "$VENV/bin/python" -m pip install -e "$ROOT[dev]"; then
    tail -n 40 "$VENV/pip.log" >&2
    echo "bootstrap: pip install failed; see $VENV/pip.log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
  echo "bootstrap: done" >&2
}

# Runs a command with its output in LOG, and meanwhile reports what it is doing (pip's latest
# "Collecting X" / "Building wheel" / "Installing collected packages" line) with the elapsed
# time: one self-updating line on a terminal, a new line whenever the step changes otherwise.
run_with_progress() {
  local log="$1"; shift
  "$@" >"$log" 2>&1 &
  local pid=$! start=$SECONDS step="" shown="" packages
  while kill -0 "$pid" 2>/dev/null; do
    sleep "${VOICEBOT_PROGRESS_S:-1}"
    step="$(grep -E '^ *(Collecting|Building|Installing|Successfully)' "$log" 2>/dev/null | tail -n 1 | sed 's/^ *//' | cut -c1-70)"
    packages="$(grep -c '^ *Collecting' "$log" 2>/dev/null || true)"
    if [ -t 2 ]; then
      printf '\r\033[Kbootstrap: %4ss  %s packages  %s' "$((SECONDS - start))" "$packages" "$step" >&2
    elif [ -n "$step" ] && [ "$step" != "$shown" ]; then
      printf 'bootstrap: %4ss  %s\n' "$((SECONDS - start))" "$step" >&2
      shown="$step"
    fi
  done
  [ -t 2 ] && printf '\r\033[K' >&2
  wait "$pid"
}

# Debian packages some tests use: redis-server (the fleet-admission tests start a throwaway
# one, tests/test_redis_admission.py), chromium (the call page is rendered headless,
# tests/test_tape_html.py) and espeak-ng (the local cascade speaks with it,
# tests/test_cascade_local.py). Where one is missing and we are root with apt-get (a CI
# container), install it; anywhere else those tests skip and say why. VOICEBOT_NO_APT=1 turns
# this off.
ensure_test_packages() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "${VOICEBOT_NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${missing[*]} (Debian packages) for the tests that use them" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1; then
      echo "bootstrap: could not install ${missing[*]}; the tests that need them will skip" >&2
    fi
  fi
  return 0
}
