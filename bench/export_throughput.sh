#!/usr/bin/env bash
# OCI export throughput: a 1 GiB single-file layer (FROM scratch + COPY),
# exported by kiln as an OCI tar with gzip layers, against `gzip -6` of the
# same bytes (the compressor a peer's gzip exporter runs, in one process) and
# `tar -c | gzip -6` (the same plus tar framing). Before each timed export the
# build is solved into a new state directory, untimed, so every export
# compresses the layer again instead of reusing a blob from an earlier run.
# Prints medians, MB/s and kiln/gzip ratios.
#
# Usage: bench/export_throughput.sh [-n RUNS] [-m MIB] [-w WORKDIR] [-c LIST]
#   -n RUNS     default 3
#   -m MIB      layer size, default 1024
#   -w WORKDIR  default /tmp/kiln-bench-export (removed at the end unless -K)
#   -c LIST     kiln compressions to time, comma list of gzip,zstd,uncompressed
#               (default gzip)
#   -K          keep WORKDIR
# The data: files from /usr (binaries, libraries, text), concatenated in sorted
# order and cut to MIB, so it compresses like real image content and is the
# same from run to run on one machine. KILN_BIN picks the kiln binary (default
# target/release/kiln); KILN_COMMIT, when set, is printed as the commit it was
# built from.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
KILN_BIN="${KILN_BIN:-$REPO/target/release/kiln}"
RUNS=3 MIB=1024 WORK=/tmp/kiln-bench-export COMP=gzip KEEP=0
while getopts "n:m:w:c:Kh" o; do
  case $o in
    n) RUNS=$OPTARG ;;
    m) MIB=$OPTARG ;;
    w) WORK=$OPTARG ;;
    c) COMP=$OPTARG ;;
    K) KEEP=1 ;;
    *) sed -n '2,21p' "$0" >&2; exit 2 ;;
  esac
done
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "bad -n $RUNS"
[[ $MIB =~ ^[1-9][0-9]*$ ]] || die "bad -m $MIB"
[[ -x $KILN_BIN ]] || die "no kiln binary at $KILN_BIN (cargo build --release -p kiln, or set KILN_BIN)"
for c in ${COMP//,/ }; do
  [[ $c == gzip || $c == zstd || $c == uncompressed ]] || die "-c: $c is not gzip, zstd or uncompressed"
done

mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
cleanup() {
  local rc=$?
  if [[ $KEEP == 0 ]]; then rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CTX="$WORK/ctx" DFD="$WORK/dockerfile" ROOT="$WORK/root" OUT="$WORK/out.tar"
mkdir -p "$CTX" "$DFD"
printf 'FROM scratch\nCOPY layer.bin /layer.bin\n' >"$DFD/Dockerfile"
BYTES=$((MIB * 1024 * 1024))
if [[ ! -f $CTX/layer.bin || $(stat -c %s "$CTX/layer.bin") != "$BYTES" ]]; then
  say "writing $MIB MiB of /usr content to $CTX/layer.bin"
  # SIGPIPE from head ends the producer early; that is expected
  (find /usr -xdev -type f -size +4k -print0 2>/dev/null | sort -z | xargs -0 cat 2>/dev/null || true) |
    head -c "$BYTES" >"$CTX/layer.bin"
  [[ $(stat -c %s "$CTX/layer.bin") == "$BYTES" ]] || die "/usr holds less than $MIB MiB"
fi

timed() {
  local t0 t1
  t0=$EPOCHREALTIME
  "$@" || return $?
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
kiln() { # LOG [OUTPUT]
  local log=$1 out=()
  [[ -z ${2:-} ]] || out=(--output "$2")
  "$KILN_BIN" build --frontend dockerfile.v0 --progress plain --root "$ROOT" \
    --local context="$CTX" --local dockerfile="$DFD" "${out[@]}" >"$log" 2>&1
}
gz() { gzip -6 -c "$CTX/layer.bin" >"$WORK/layer.gz"; }
targz() { tar -C "$CTX" -cf - layer.bin | gzip -6 >"$WORK/layer.tar.gz"; }
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
mbps() { awk -v b="$BYTES" -v s="$1" 'BEGIN { printf "%.0f MB/s", b / 1e6 / s }'; }

declare -A T=()
cat "$CTX/layer.bin" >/dev/null # page cache, for everyone alike
for ((r = 1; r <= RUNS; r++)); do
  for c in ${COMP//,/ }; do
    rm -rf "$ROOT" "$OUT"
    kiln "$WORK/solve.log" || { tail "$WORK/solve.log" >&2; die "kiln build failed"; }
    sync
    s=$(timed kiln "$WORK/export-$c.log" "type=oci,dest=$OUT,name=export-bench:$c,compression=$c") ||
      { tail "$WORK/export-$c.log" >&2; die "kiln export failed"; }
    T[kiln-$c]+="$s "
    say "kiln export ($c) #$r: $s s, tar $(du -m "$OUT" | cut -f1) MiB"
  done
  sync
  s=$(timed gz)
  T[gzip]+="$s "
  say "gzip -6 #$r: $s s, $(du -m "$WORK/layer.gz" | cut -f1) MiB"
  sync
  s=$(timed targz)
  T[targz]+="$s "
  say "tar | gzip -6 #$r: $s s"
done

g=$(median "${T[gzip]}")
tg=$(median "${T[targz]}")
echo
echo "OCI export of a $MIB MiB layer, median of $RUNS runs; $(date -u +%FT%TZ), $(nproc) cores, checkout $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')${KILN_COMMIT:+, kiln built from $KILN_COMMIT}"
printf '%-34s %9s %12s %12s %12s\n' what seconds throughput kiln/gzip kiln/tar+gz
printf '%-34s %9.3f %12s\n' "gzip -6 (one process)" "$g" "$(mbps "$g")"
printf '%-34s %9.3f %12s\n' "tar -c | gzip -6" "$tg" "$(mbps "$tg")"
for c in ${COMP//,/ }; do
  k=$(median "${T[kiln-$c]}")
  printf '%-34s %9.3f %12s %12s %12s\n' "kiln cached build + OCI tar ($c)" "$k" "$(mbps "$k")" \
    "$(awk -v a="$k" -v b="$g" 'BEGIN { printf "%.2fx", a / b }')" \
    "$(awk -v a="$k" -v b="$tg" 'BEGIN { printf "%.2fx", a / b }')"
done
echo "sizes: gzip -6 $(du -m "$WORK/layer.gz" | cut -f1) MiB; last kiln tar $(du -m "$OUT" | cut -f1) MiB"
