#!/usr/bin/env bash
# kiln side by side with the peer image builders on the shared multi-stage
# bench (Dockerfile.multistage + context from the peers kit):
#   cold     empty state (kiln: a new --root, so the base is pulled from the
#            loopback registry and the Dockerfile frontend is compiled again;
#            peers: their images and build cache wiped by bench-peers.sh)
#   cold-fe  kiln only: empty state except the compiled-frontend cache
#            (<root>/frontends), the closest match to a peer's cold build,
#            whose frontend is part of its already running binary
#   warm     nothing changed, everything cached
#   changed  a unique comment line appended to app/config.env before each run
#   export   the fully cached image written to a tar (kiln: OCI tar from a
#            cached build; peers: see bench-peers.sh)
# The peers run through the kit's own bench-peers.sh; kiln runs in this
# script's loop right after, on the same machine, and the ratios kiln/peer are
# computed from the medians of this one run. Nothing is compared across runs.
#
# Usage: bench/peers.sh [-n RUNS] [-w WORKDIR] [-p PEERS] [-s SCENARIOS] [-k]
#   -n RUNS       runs per scenario (default 3); medians are reported
#   -w WORKDIR    scratch and peer state (default /tmp/kiln-bench-peers)
#   -p PEERS      comma list from docker,buildah,podman,docker-classic,buildkit
#                 (default docker,buildah, plus buildkit when $BUILDKIT_BIN holds
#                 buildkitd and buildctl); a peer that cannot run is skipped
#                 with the reason
#   -s SCENARIOS  comma list from cold,cold-fe,warm,changed,export (default all)
#   -k            kiln only (no peers, no ratios)
# Env:
#   KILN_BIN      kiln binary (default target/release/kiln of this checkout)
#   KILN_OUTPUT   what kiln's cold/warm/changed builds write: "oci" (default; an
#                 OCI tar, gzip layers, like a peer's image in its store plus
#                 more) or "none" (no --output: build cache only); "oci,none"
#                 runs kiln once per mode
#   PEERS_DIR     the peers kit (default ../shared/peers next to the checkout)
#   BUILDKIT_BIN  directory with buildkitd + buildctl for the standalone peer
#   EXTRA_BUILD_ARGS  "--build-arg K=V ..." for every builder (kiln gets
#                 --opt build-arg:K=V)
#   KILN_COMMIT   printed with the results when KILN_BIN was built from another
#                 commit than the checkout's HEAD
# Everything listens on loopback only. Daemons and the registry that this
# script started are stopped on exit through the kit's *-down.sh scripts.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PEERS_DIR="${PEERS_DIR:-$(cd "$REPO/.." && pwd)/shared/peers}"
KILN_BIN="${KILN_BIN:-$REPO/target/release/kiln}"
KILN_OUTPUT="${KILN_OUTPUT:-oci}"
BUILDKIT_BIN="${BUILDKIT_BIN:-}"
WORK=/tmp/kiln-bench-peers RUNS=3 PEERS="" SCEN="cold,cold-fe,warm,changed,export" KILN_ONLY=0

while getopts "n:w:p:s:kh" o; do
  case $o in
    n) RUNS=$OPTARG ;;
    w) WORK=$OPTARG ;;
    p) PEERS=$OPTARG ;;
    s) SCEN=$OPTARG ;;
    k) KILN_ONLY=1 ;;
    *) sed -n '2,40p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
has() { [[ ",$1," == *",$2,"* ]]; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "bad -n $RUNS"
[[ -x $KILN_BIN ]] || die "no kiln binary at $KILN_BIN (cargo build --release -p kiln, or set KILN_BIN)"
[[ -f $PEERS_DIR/bench-peers.sh ]] || die "no peers kit at $PEERS_DIR (set PEERS_DIR)"
for m in ${KILN_OUTPUT//,/ }; do
  [[ $m == oci || $m == none ]] || die "KILN_OUTPUT: $m is not oci or none"
done
# shellcheck source=/dev/null
source "$PEERS_DIR/common.sh" # REGISTRY, pid_alive
DF="$PEERS_DIR/bench/Dockerfile.multistage"
CTX_SRC="$PEERS_DIR/bench/context"
CHANGED=app/config.env
[[ -f $DF && -d $CTX_SRC ]] || die "the kit has no bench/Dockerfile.multistage + bench/context"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
K="$WORK/kiln"
mkdir -p "$K/logs" "$K/out"

# --- which peers can run here -------------------------------------------------
if [[ -z $PEERS ]]; then
  PEERS=docker,buildah
  [[ -n $BUILDKIT_BIN ]] && PEERS+=,buildkit
fi
RUNNABLE=()
declare -A WHY=()
if [[ $KILN_ONLY == 0 ]]; then
  IFS=, read -r -a want <<<"$PEERS"
  for p in "${want[@]}"; do
    case $p in
      docker | docker-classic)
        if [[ ! -x /usr/bin/docker || ! -x /usr/sbin/dockerd ]]; then
          WHY[$p]="docker.io 20.10 is not installed (/usr/bin/docker, /usr/sbin/dockerd); run $PEERS_DIR/install.sh"
        fi ;;
      buildah | podman)
        command -v "$p" >/dev/null || WHY[$p]="$p is not installed; run $PEERS_DIR/install.sh" ;;
      buildkit)
        if [[ -z $BUILDKIT_BIN ]]; then
          WHY[$p]="BUILDKIT_BIN is not set (a directory with buildkitd and buildctl; none is packaged here)"
        elif [[ ! -x $BUILDKIT_BIN/buildkitd || ! -x $BUILDKIT_BIN/buildctl ]]; then
          WHY[$p]="no buildkitd/buildctl in BUILDKIT_BIN=$BUILDKIT_BIN"
        fi ;;
      *) die "unknown peer $p" ;;
    esac
    if [[ -n ${WHY[$p]:-} ]]; then say "skipping $p: ${WHY[$p]}"; else RUNNABLE+=("$p"); fi
  done
fi

# --- cleanup of what this script starts ------------------------------------------
STARTED_REGISTRY=0 STARTED_DOCKERD=0 STARTED_BUILDKITD=0
cleanup() {
  local rc=$?
  set +e
  if [[ $STARTED_BUILDKITD == 1 ]]; then "$PEERS_DIR/buildkitd-down.sh" "$WORK" >/dev/null 2>&1; fi
  if [[ $STARTED_DOCKERD == 1 ]]; then "$PEERS_DIR/dockerd-down.sh" "$WORK" >/dev/null 2>&1; fi
  if [[ $STARTED_REGISTRY == 1 ]]; then "$PEERS_DIR/registry-down.sh" "$WORK" >/dev/null 2>&1; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- registry + base image (shared by kiln and the peers) ------------------------
if ! curl -sf -o /dev/null --max-time 2 "http://$REGISTRY/v2/"; then
  "$PEERS_DIR/registry-up.sh" "$WORK" >/dev/null
  STARTED_REGISTRY=1
fi
if ! skopeo inspect --tls-verify=false "docker://$REGISTRY/library/busybox:latest" >/dev/null 2>&1; then
  "$PEERS_DIR/make-base-image.sh" "$WORK" >&2
fi

# --- peers, through the kit's bench-peers.sh -----------------------------------------
PEER_SCEN=""
for s in cold warm changed export; do has "$SCEN" "$s" && PEER_SCEN+="$s,"; done
PEER_SCEN=${PEER_SCEN%,}
STAMP=$(date -u +%FT%TZ)
if ((${#RUNNABLE[@]})) && [[ -n $PEER_SCEN ]]; then
  pid_alive "$WORK/docker/dockerd.pid" dockerd >/dev/null || STARTED_DOCKERD=1
  pid_alive "$WORK/buildkit/buildkitd.pid" buildkitd >/dev/null || STARTED_BUILDKITD=1
  plist=$(IFS=,; echo "${RUNNABLE[*]}")
  say "peers: $plist (bench-peers.sh -n $RUNS -s $PEER_SCEN -w $WORK)"
  if ! BUILDKIT_BIN=$BUILDKIT_BIN "$PEERS_DIR/bench-peers.sh" -w "$WORK" -n "$RUNS" -p "$plist" \
    -s "$PEER_SCEN" "$CTX_SRC" >"$K/peers.out" 2>"$K/peers.err"; then
    tail -20 "$K/peers.err" >&2
    say "bench-peers.sh failed (log $K/peers.err); kiln's numbers follow without those ratios"
  fi
  cat "$K/peers.out"
  # stop the daemons before kiln runs, so they do not compete with it
  if [[ $STARTED_BUILDKITD == 1 ]]; then "$PEERS_DIR/buildkitd-down.sh" "$WORK" >/dev/null 2>&1 || true; STARTED_BUILDKITD=0; fi
  if [[ $STARTED_DOCKERD == 1 ]]; then "$PEERS_DIR/dockerd-down.sh" "$WORK" >/dev/null 2>&1 || true; STARTED_DOCKERD=0; fi
fi

# --- kiln ----------------------------------------------------------------------------
EXTRA=()
read -r -a words <<<"${EXTRA_BUILD_ARGS:-}"
i=0
while ((i < ${#words[@]})); do
  a=${words[i]}
  case $a in
    --build-arg) EXTRA+=(--opt "build-arg:${words[i + 1]:-}"); i=$((i + 1)) ;;
    --build-arg=*) EXTRA+=(--opt "build-arg:${a#--build-arg=}") ;;
    --target) EXTRA+=(--opt "target=${words[i + 1]:-}"); i=$((i + 1)) ;;
    --target=*) EXTRA+=(--opt "target=${a#--target=}") ;;
    *) die "EXTRA_BUILD_ARGS: $a has no kiln equivalent here" ;;
  esac
  i=$((i + 1))
done

ROOT="$K/root"
CTX="$K/ctx"
kiln_build() { # LOG oci|none|export [WRAPPER...]
  local log=$1 mode=$2 out=()
  shift 2
  case $mode in
    oci) out=(--output "type=oci,dest=$K/out/build.tar,name=peers-bench:kiln") ;;
    export) out=(--output "type=oci,dest=$K/out/kiln.tar,name=peers-bench:kiln") ;;
  esac
  "$@" "$KILN_BIN" build --frontend dockerfile.v0 --progress plain --root "$ROOT" \
    --local context="$CTX" --local dockerfile="$(dirname "$DF")" --opt filename="$(basename "$DF")" \
    "${EXTRA[@]}" "${out[@]}" >"$log" 2>&1
}
# timed CMD...: wall seconds of CMD (3 decimals) on stdout
timed() {
  local t0 t1
  t0=$EPOCHREALTIME
  "$@" || return $?
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
wipe_root() { # [keep-frontends]
  if [[ ${1:-} == keep-frontends && -d $ROOT/frontends ]]; then
    rm -rf "$K/frontends.keep"
    mv "$ROOT/frontends" "$K/frontends.keep"
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    mv "$K/frontends.keep" "$ROOT/frontends"
  else
    rm -rf "$ROOT"
  fi
}
TIMES="$K/times.tsv"
[[ -f $TIMES ]] || printf 'when\tmode\tscenario\trun\tseconds\tpeak_rss_kib\n' >"$TIMES"
declare -A KRES=() KRSS=()
krecord() { # mode scenario run seconds [rss_kib]
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$1" "$2" "$3" "$4" "${5:-}" >>"$TIMES"
  KRES[$1/$2]+="$4 "
  [[ -z ${5:-} ]] || KRSS[$1]+="$(awk -v k="$5" 'BEGIN { printf "%.1f", k / 1024 }') "
  say "kiln[$1] $2 #$3: $4 s${5:+ (peak RSS $((${5} / 1024)) MiB)}"
}
kiln_fail() { tail -20 "$1" >&2; die "kiln build failed; log $1"; }

KMODES=()
read -r -a KMODES <<<"${KILN_OUTPUT//,/ }"
say "kiln: $("$KILN_BIN" --version) ($KILN_BIN), outputs: ${KMODES[*]}, runs: $RUNS"
for mode in "${KMODES[@]}"; do
  rm -rf "$CTX"
  cp -a "$CTX_SRC" "$CTX"
  wipe_root
  for sc in cold cold-fe; do
    has "$SCEN" "$sc" || continue
    for ((r = 1; r <= RUNS; r++)); do
      if [[ $sc == cold ]]; then wipe_root; else wipe_root keep-frontends; fi
      sync
      logf="$K/logs/$mode-$sc-$r.log"
      if [[ -x /usr/bin/time ]]; then
        s=$(timed kiln_build "$logf" "$mode" /usr/bin/time -f '%M' -o "$K/rss") || kiln_fail "$logf"
        rss=$(tail -1 "$K/rss")
      else
        s=$(timed kiln_build "$logf" "$mode") || kiln_fail "$logf"
        rss=""
      fi
      krecord "$mode" "$sc" "$r" "$s" "$rss"
    done
  done
  if ! has "$SCEN" cold && ! has "$SCEN" cold-fe; then
    kiln_build "$K/logs/$mode-prime.log" "$mode" || kiln_fail "$K/logs/$mode-prime.log"
  fi
  if has "$SCEN" warm; then
    for ((r = 1; r <= RUNS; r++)); do
      sync
      logf="$K/logs/$mode-warm-$r.log"
      s=$(timed kiln_build "$logf" "$mode") || kiln_fail "$logf"
      krecord "$mode" warm "$r" "$s"
    done
  fi
  if has "$SCEN" changed; then
    for ((r = 1; r <= RUNS; r++)); do
      printf '\n# bench change %s %s\n' "$r" "$EPOCHREALTIME" >>"$CTX/$CHANGED"
      sync
      logf="$K/logs/$mode-changed-$r.log"
      s=$(timed kiln_build "$logf" "$mode") || kiln_fail "$logf"
      krecord "$mode" changed "$r" "$s"
    done
  fi
  if has "$SCEN" export && [[ $mode == "${KMODES[0]}" ]]; then
    kiln_build "$K/logs/export-prime.log" none || kiln_fail "$K/logs/export-prime.log"
    for ((r = 1; r <= RUNS; r++)); do
      sync
      logf="$K/logs/export-$r.log"
      s=$(timed kiln_build "$logf" export) || kiln_fail "$logf"
      krecord export export "$r" "$s"
    done
    say "kiln export: $(du -h "$K/out/kiln.tar" | cut -f1) $K/out/kiln.tar"
  fi
done

# --- summary ---------------------------------------------------------------------------
stats() { # "t1 t2 ..." -> "median min max n"
  tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
    printf "%s %s %s %d", m, a[1], a[NR], NR }'
}
# peers: this run's rows of the kit's times.tsv
declare -A PRES=()
if [[ -f $WORK/bench/times.tsv ]] && ((${#RUNNABLE[@]})); then
  while IFS=$'\t' read -r when peer sc _ secs; do
    [[ $when > $STAMP || $when == "$STAMP" ]] || continue
    PRES[$peer/$sc]+="$secs "
  done < <(tail -n +2 "$WORK/bench/times.tsv")
fi
fmt() { awk -v m="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.3f (%.3f–%.3f)", m, a, b }'; }

echo
echo "kiln against peers: $(basename "$DF"), median (min–max) wall seconds of $RUNS runs"
echo "$(date -u +%FT%TZ), $(uname -r), $(nproc) cores, kiln $("$KILN_BIN" --version | awk '{print $NF}'), checkout $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')${KILN_COMMIT:+, kiln built from $KILN_COMMIT}"
printf '\n%-22s %-8s %28s\n' builder scenario "median (min–max) s"
for mode in "${KMODES[@]}"; do
  for sc in cold cold-fe warm changed; do
    [[ -n ${KRES[$mode/$sc]:-} ]] || continue
    read -r m a b _ <<<"$(stats "${KRES[$mode/$sc]}")"
    printf '%-22s %-8s %28s\n' "kiln ($mode)" "$sc" "$(fmt "$m" "$a" "$b")"
  done
done
if [[ -n ${KRES[export/export]:-} ]]; then
  read -r m a b _ <<<"$(stats "${KRES[export/export]}")"
  printf '%-22s %-8s %28s\n' "kiln (oci tar)" export "$(fmt "$m" "$a" "$b")"
fi
for p in "${RUNNABLE[@]}"; do
  for sc in cold warm changed export; do
    [[ -n ${PRES[$p/$sc]:-} ]] || continue
    read -r m a b _ <<<"$(stats "${PRES[$p/$sc]}")"
    printf '%-22s %-8s %28s\n' "$p" "$sc" "$(fmt "$m" "$a" "$b")"
  done
done

if ((${#RUNNABLE[@]})); then
  echo
  echo "ratios kiln/peer (medians; < 1 means kiln is faster)"
  printf '%-22s %-8s' kiln scenario
  for p in "${RUNNABLE[@]}"; do printf ' %14s' "/$p"; done
  echo
  for mode in "${KMODES[@]}" export; do
    for sc in cold cold-fe warm changed export; do
      [[ -n ${KRES[$mode/$sc]:-} ]] || continue
      read -r km _ <<<"$(stats "${KRES[$mode/$sc]}")"
      psc=$sc
      [[ $sc == cold-fe ]] && psc=cold
      label="kiln ($mode)"
      [[ $mode == export ]] && label="kiln (oci tar)"
      printf '%-22s %-8s' "$label" "$sc"
      for p in "${RUNNABLE[@]}"; do
        if [[ -n ${PRES[$p/$psc]:-} ]]; then
          read -r pm _ <<<"$(stats "${PRES[$p/$psc]}")"
          printf ' %14s' "$(awk -v k="$km" -v q="$pm" 'BEGIN { printf "%.2fx", k / q }')"
        else
          printf ' %14s' "-"
        fi
      done
      echo
    done
  done
  echo "(cold-fe is compared with the peer's cold build)"
fi
if ((${#KRSS[@]})); then
  echo
  for mode in "${KMODES[@]}"; do
    [[ -n ${KRSS[$mode]:-} ]] || continue
    read -r m a b n <<<"$(stats "${KRSS[$mode]}")"
    echo "kiln ($mode) peak RSS during cold builds: median $m MiB ($a–$b, n=$n; /usr/bin/time)"
  done
fi
for p in "${!WHY[@]}"; do echo "not measured: $p: ${WHY[$p]}"; done
echo "logs: $K/logs, raw times: $TIMES and $WORK/bench/times.tsv"
