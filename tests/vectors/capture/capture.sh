#!/bin/bash
# Regenerate the golden 9P2000.L vectors in tests/vectors/ end to end.
#
#   capture.sh [all|diod|kernel]      (default: all)
#
# Needs root and Debian packages: diod socat gcc (libc static) python3, and for
# "kernel": qemu-system-x86 linux-image-amd64 busybox-static.  Nothing here
# imports vshare: the peers are diod (server, diodls/diodcat clients) and the
# Linux v9fs client in a QEMU guest; relay.py only copies and logs bytes.
# Scratch: $W (default /tmp/vshare-vectors, wiped first).  Every process
# started here is stopped by PID in the EXIT trap.  Only 127.0.0.1 is used on
# the host; the guest reaches the relay through a QEMU guestfwd on a
# restricted user network.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(dirname "$HERE")
W=${W:-/tmp/vshare-vectors}
WHAT=${1:-all}
PY=${PYTHON:-python3}

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$W"; mkdir -p "$W/raw"

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_file() { local i; for i in $(seq 100); do [ -e "$1" ] && return 0; sleep 0.1; done; echo "timeout waiting for $1" >&2; return 1; }
wait_port() { local i; for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }

T0='2024-01-02 03:04:05 UTC'    # every prepared file/dir gets this atime+mtime

start_diod() {  # EXPORT LOG -> sets DIOD_PORT, appends PID
  DIOD_PORT=$(free_port)
  diod -f -n -l "127.0.0.1:$DIOD_PORT" -e "$1" -c /dev/null -L "$2" &
  PIDS+=($!); wait_port "$DIOD_PORT"
}
stop_last() {  # stop the most recently started process
  local p=${PIDS[-1]}; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  unset 'PIDS[-1]'
}
start_relay() {  # OUTFILE NCONNS [extra args] -> sets RELAY_PORT, appends PID
  local out=$1 n=$2; shift 2
  RELAY_PORT=$(free_port)
  rm -f "$W/relay.ready"
  $PY "$HERE/relay.py" --listen "127.0.0.1:$RELAY_PORT" --upstream "127.0.0.1:$DIOD_PORT" \
      --out "$out" --conns "$n" --ready "$W/relay.ready" "$@" &
  PIDS+=($!); wait_file "$W/relay.ready"
}
wait_relay() {  # the relay exits by itself after its --conns connections
  local p=${PIDS[-1]} i
  for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  stop_last
}

# ---------------------------------------------------------------- diod clients
capture_diod() {
  local E=$W/export-d
  mkdir -p "$E/sub" "$E/emptydir"
  printf 'hello world\n' > "$E/hello.txt"
  printf 'abc' > "$E/sub/a.txt"
  ln -s hello.txt "$E/link"
  chmod 0644 "$E/hello.txt" "$E/sub/a.txt"; chmod 0755 "$E" "$E/sub" "$E/emptydir"
  touch -h -d "$T0" "$E/hello.txt" "$E/sub/a.txt" "$E/link" "$E/sub" "$E/emptydir" "$E"
  $PY "$HERE/assemble.py" statdump "$E" > "$W/export-d.stat.json"
  start_diod "$E" "$W/diod-d.log"

  start_relay "$W/raw/diodls.json" 1
  diodls -s "127.0.0.1:$RELAY_PORT" -a "$E" -l / | tee "$W/diodls.out"
  wait_relay

  start_relay "$W/raw/diodcat.json" 1
  diodcat -s "127.0.0.1:$RELAY_PORT" -a "$E" hello.txt | tee "$W/diodcat.out"
  wait_relay
  stop_last   # diod
  ls -lain "$E" > "$W/export-d.ls"
}

# ------------------------------------------------------------- kernel client
KVER=${KVER:-$(ls /boot/vmlinuz-* | sort -V | tail -1 | sed 's,.*/vmlinuz-,,')}
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
failover net_failover virtio_net netfs fscache 9pnet 9pnet_fd 9p"

build_guest() {
  local VMLINUX=$W/vmlinux-$KVER R=$W/initramfs MODDIR=/lib/modules/$KVER m f
  # uncompressed ELF vmlinux: QEMU boots it through the PVH entry (~2x faster)
  $PY - "/boot/vmlinuz-$KVER" "$VMLINUX" <<'PY'
import sys, lzma, zlib
d = open(sys.argv[1], 'rb').read()
for magic, dec in ((b'\xfd7zXZ\x00', lambda b: lzma.LZMADecompressor().decompress(b)),
                   (b'\x1f\x8b\x08', lambda b: zlib.decompressobj(31).decompress(b))):
    i = d.find(magic)
    while i >= 0:
        try:
            out = dec(d[i:])
            if out[:4] == b'\x7fELF':
                open(sys.argv[2], 'wb').write(out); sys.exit(0)
        except Exception:
            pass
        i = d.find(magic, i + 1)
sys.exit('no ELF payload found in ' + sys.argv[1])
PY
  rm -rf "$R"; mkdir -p "$R"/{bin,sbin,proc,sys,dev,tmp,mnt,lib/modules,etc}
  cp /bin/busybox "$R/bin/busybox"; ln -s busybox "$R/bin/sh"
  gcc -static -O2 -Wall -o "$R/vtool" "$HERE/vtool.c"
  cp "$HERE/guest-workload.sh" "$R/probe.sh"
  echo "EXPORT=$KEXPORT" > "$R/env.sh"
  : > "$R/lib/modules/load.order"
  for m in $MODULES; do
    f=$(grep -E "(^|/)$m\.ko(\.xz|\.zst|\.gz)?:" "$MODDIR/modules.dep" | cut -d: -f1)
    [ -n "$f" ] || { echo "module $m not found" >&2; exit 1; }
    case $f in
      *.ko)     cp "$MODDIR/$f" "$R/lib/modules/$m.ko" ;;
      *.ko.xz)  xz -dc "$MODDIR/$f" > "$R/lib/modules/$m.ko" ;;
      *.ko.zst) zstd -dc "$MODDIR/$f" > "$R/lib/modules/$m.ko" ;;
    esac
    echo "$m" >> "$R/lib/modules/load.order"
  done
  cat > "$R/init" <<'EOF'
#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in $(cat /lib/modules/load.order); do
  insmod /lib/modules/$m.ko 2>/tmp/insmod.err || echo "insmod $m: $(cat /tmp/insmod.err)"
done
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
echo "GUEST-KERNEL $(uname -r) $(cat /proc/version)"
echo "GUEST-BUSYBOX $(busybox 2>&1 | head -1)"
echo "T-READY uptime=$(cut -d' ' -f1 /proc/uptime)"
sh /probe.sh; echo "PROBE-RC=$?"
echo "T-END uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
EOF
  chmod +x "$R/init"
  (cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$W/initrd.cpio.gz"
}

capture_kernel() {
  KEXPORT=$W/export-k
  local E=$KEXPORT i
  mkdir -p "$E/many" "$E/fl"
  printf 'hello world\n' > "$E/hello.txt"
  ln -s hello.txt "$E/link"
  for i in $(seq -w 0 19); do printf '%s\n' "$i" > "$E/many/f$i"; done
  printf 'xattr and locks\n' > "$E/x.txt"
  printf 'x' > "$E/fl/flushme"
  chmod 0644 "$E"/hello.txt "$E"/x.txt "$E"/fl/flushme "$E"/many/*
  chmod 0755 "$E" "$E/many" "$E/fl"
  touch -h -d "$T0" "$E"/many/* "$E"/hello.txt "$E"/link "$E"/x.txt "$E"/fl/flushme "$E/many" "$E/fl" "$E"
  $PY "$HERE/assemble.py" statdump "$E" > "$W/export-k.stat.json"
  build_guest

  start_diod "$E" "$W/diod-k.log"
  start_relay "$W/raw/linux.json" 8 --hold flushme:4
  printf '#!/bin/sh\nexec socat STDIO TCP:127.0.0.1:%s\n' "$RELAY_PORT" > "$W/fwd.sh"
  chmod +x "$W/fwd.sh"
  local rc=0
  timeout 240 qemu-system-x86_64 -accel tcg -cpu max -m 512 -smp 1 -nodefaults -no-user-config \
    -display none -monitor none -serial "file:$W/guest.log" -no-reboot \
    -kernel "$W/vmlinux-$KVER" -initrd "$W/initrd.cpio.gz" \
    -append "console=ttyS0 quiet panic=-1 loglevel=4" \
    -nic "user,model=virtio-net-pci,restrict=on,guestfwd=tcp:10.0.2.100:564-cmd:$W/fwd.sh" &
  PIDS+=($!)
  wait "${PIDS[-1]}" || rc=$?
  unset 'PIDS[-1]'
  cat "$W/guest.log"
  [ "$rc" = 0 ] || { echo "qemu exited $rc" >&2; exit 1; }
  grep -q WORKLOAD-DONE "$W/guest.log" || { echo "workload did not finish" >&2; exit 1; }
  if grep -q PHASE-FAIL "$W/guest.log"; then echo "a phase failed" >&2; exit 1; fi
  wait_relay
  stop_last   # diod
  (cd "$E" && ls -laniR . ) > "$W/export-k.ls"
}

case $WHAT in
  all) capture_diod; capture_kernel ;;
  diod) capture_diod ;;
  kernel) capture_kernel ;;
  *) echo "usage: $0 [all|diod|kernel]" >&2; exit 2 ;;
esac

$PY "$HERE/assemble.py" --raw "$W/raw" --out "$OUT" --work "$W" --what "$WHAT"
$PY "$HERE/summarize.py" --check "$OUT"/*.json
