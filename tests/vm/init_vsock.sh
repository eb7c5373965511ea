#!/bin/sh
# /init of the vsock guest (busybox sh, root, UTC). Built into the initramfs by
# build_initramfs.py (flavour VSOCK); driven by test_vsock.py.
#
# Everything runs in this one guest, over real AF_VSOCK: vsock_loopback gives the guest
# CID 1 for connections to itself. The host's root is shared read-only (virtio-9p, tag
# hostroot) and the project's .venv runs from it, chrooted; tmpfs mounts give it writable
# /run, /tmp and /mnt. The host test prepared, before the boot, an embedded store (SQLite)
# and a volume in STATE (a host path, copied here into a tmpfs at the same path): share
# "work" allowed for an instance registered by CID 1, share "other" of the same tenant
# without a rule for it, share "theirs" allowed for an instance registered by CID 3.
#
#   1. the gateway:  vshare gateway run --listen vsock://any:564 --store sqlite://STATE/...
#      (with the policy's lowest guest CID lowered to 1: see VSHARE_CID1)
#   2. the kernel 9P client:  vshare mount --kernel vsock://1:564 work /mnt/k
#      and a workload (checksummed write/read back also on the backend, rename, readdir,
#      chmod, symlink, df showing the share's size)
#   3. refusals:  vshare mount --kernel of "other" and of "theirs" must fail
#   4. the vshare FUSE client:  vshare mount vsock://1:564 work /mnt/f, the same workload
#   5. the gateway's log on the console (GW lines): the host checks the audit lines
#
# Parameters on the kernel command line:
#   vshare.state=DIR       the prepared store and volume (state.db, volume/)
#   vshare.work=PATH       the "work" share's directory in the volume (shares/<id>)
#   vshare.size_kib=N      the "work" share's size in KiB (what df must show)
#   vshare.watchdog=N      after N seconds: dump the blocked tasks, power off
#
# Output protocol (one line each, on the console), as in init.sh:
#   RESULT <name> ok|fail <detail>   TIME <name> <seconds>   LOG <name>: <text>
#   GW <line>                        the gateway's log (JSON, one object per line)
#   DONE                             then poweroff -f
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp

arg() { sed -n "s/.*\\bvshare\\.$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
STATE=$(arg state)
WORK=$(arg work)
SIZE_KIB=$(arg size_kib)
WATCHDOG=$(arg watchdog)
R=/hostroot
VENV=/work/main/.venv
URI=vsock://1:564
K=/mnt/k             # mount points, inside the chroot (a tmpfs on $R/mnt)
F=/mnt/f
VOL=$R$STATE/volume/$WORK      # the share's directory on the backend, seen from here

now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# in_root COMMAND...: run a command of the host's root (the project's .venv, util-linux).
# Started with & it runs in a subshell: exec, so that $! is the command's own PID.
in_root() {
  chroot $R /usr/bin/env -i PATH=$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 "$@"
}
in_root_bg() { exec chroot $R /usr/bin/env -i PATH=$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 "$@"; }
run() {  # NAME FUNCTION [ARGS]: one check (see init.sh)
  _name=$1; shift
  _start=$(now)
  if "$@" > "/tmp/log.$_name" 2>&1; then _status=ok; else _status=fail; fi
  echo "RESULT $_name $_status $(tail -n 1 "/tmp/log.$_name" | tr -d '\r') ($(elapsed "$_start") s)"
  if [ $_status = fail ]; then sed "s/^/LOG $_name: /" "/tmp/log.$_name"; fi
  [ $_status = ok ]
}
want() {  # DESCRIPTION EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then echo "$1: $3"; return 0; fi
  echo "$1: expected '$2', got '$3'"; return 1
}
mounted() { grep -q " $1 " /proc/mounts; }
gone() { [ ! -e /proc/$1 ] || grep -q ') Z ' /proc/$1/stat; }   # exited (maybe unreaped)
# wait_for SECONDS COMMAND...: poll every 0.2 s until the command succeeds
wait_for() {
  _n=$(($1 * 5)); shift
  while ! "$@"; do
    _n=$((_n - 1)); [ $_n -gt 0 ] || return 1
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------- boot
c_modules() {
  for m in $(cat /lib/modules/load.order); do
    insmod "/lib/modules/$m.ko" || { echo "insmod $m failed"; return 1; }
  done
  [ -c /dev/vsock ] || { echo "no /dev/vsock"; return 1; }
  [ -c /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229 || return 1
  echo "$(wc -l < /lib/modules/load.order) modules; /dev/vsock, /dev/fuse"
}
c_hostroot() {
  mkdir -p $R
  # cache=loose: Python starts several times faster (the host's files do not change meanwhile)
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot $R ||
    return 1
  mount -t proc proc $R/proc && mount -t sysfs sys $R/sys && mount -t devtmpfs dev $R/dev &&
    mount -t tmpfs run $R/run && mount -t tmpfs mnt $R/mnt || return 1
  mkdir -p $R$K $R$F
  # The prepared state, made writable at the same path (the store names the volume's path).
  cp -a $R$STATE /tmp/state || return 1
  case $STATE in
    /tmp/*) mount -t tmpfs tmp $R/tmp && mkdir -p $R$STATE ;;
    *) mount -t tmpfs state $R$STATE ;;
  esac || return 1
  cp -a /tmp/state/. $R$STATE/ && rm -rf /tmp/state || return 1
  [ -d $VOL ] || { echo "no share directory $VOL"; return 1; }
  echo "host root read-only at $R; $STATE writable: $(ls $R$STATE | tr '\n' ' ')"
}
exec 3>&1
echo "GUEST $(uname -r) $(busybox | head -n 1)"
run modules c_modules
run hostroot c_hostroot
echo "TIME boot $(now)"
(sleep "${WATCHDOG:-300}"; echo "WATCHDOG after $WATCHDOG s"; echo w > /proc/sysrq-trigger
 dmesg | tail -n 200 | sed 's/^/LOG watchdog: /'; sed 's/^/GW /' $R/run/gateway.log
 poweroff -f) &
T_WORK=$(now)

# --------------------------------------------------------------------------- gateway
# `vshare gateway run`, with one difference: the policy takes guest CIDs from 3 (0-2 are
# the hypervisor, loopback and the host), but here the guest is its own hypervisor and every
# connection comes from the loopback CID 1, under which the host registered vm-a.
VSHARE_CID1='import sys, vshare.policy._instances as p; p.MIN_GUEST_CID = 1
from vshare.cli import main; sys.argv[0] = "vshare"; sys.exit(main())'
c_gateway() {
  in_root_bg python -c "$VSHARE_CID1" --log-format json gateway run --listen vsock://any:564 \
    --backend "posix:$STATE/volume" --store "sqlite://$STATE/state.db" \
    > $R/run/gateway.log 2>&1 &
  GW_PID=$!
  listening() { grep -q 'listening on vsock' $R/run/gateway.log; }
  wait_for 120 listening || { cat $R/run/gateway.log; echo "not listening"; return 1; }
  echo "TIME gateway-start $(elapsed "$T_GW")" >&3
  echo "gateway $GW_PID: $(grep -o 'listening on vsock[^"]*' $R/run/gateway.log)"
}
T_GW=$(now)
run gateway c_gateway

# ----------------------------------------------------------------------- workload
# The same checks through the kernel client (D=$K/k) and the FUSE client (D=$F/f); $B is
# the same directory on the backend (the gateway's volume, in this guest's tmpfs).
w_write() {  # a checksummed write, read back through the mount and found on the backend
  dd if=/dev/urandom of=/tmp/blob bs=65536 count=24 2>/dev/null     # 1.5 MiB
  sum=$(md5sum < /tmp/blob)
  cp /tmp/blob $D/blob && sync || return 1
  echo 3 > /proc/sys/vm/drop_caches
  want "size" 1572864 "$(stat -c %s $D/blob)" || return 1
  want "md5 on the backend" "$sum" "$(md5sum < $B/blob)" || return 1
  want "md5 read back" "$sum" "$(md5sum < $D/blob)"
}
w_rename() {
  printf 'moved\n' > $D/r1 && mkdir $D/sub || return 1
  mv $D/r1 $D/r2 && mv $D/r2 $D/sub/r3 || return 1
  [ ! -e $D/r1 ] && [ ! -e $D/r2 ] || { echo "old names remain"; return 1; }
  want "renamed into a subdirectory" moved "$(cat $D/sub/r3)" || return 1
  want "on the backend" moved "$(cat $B/sub/r3)"
}
w_readdir() {
  mkdir $D/many || return 1
  seq -w 1 60 | sed 's/^/entry-/' > /tmp/names
  (cd $D/many && xargs touch < /tmp/names) || return 1
  want "entries listed" 60 "$(ls $D/many | wc -l)" || return 1
  want "names" "$(md5sum < /tmp/names)" "$(ls $D/many | sort | md5sum)" || return 1
  want "top level" "blob many sub" "$(ls $D | tr '\n' ' ' | sed 's/ $//')"
}
w_chmod() {
  chmod 0640 $D/blob && want "chmod 640" 640 "$(stat -c %a $D/blob)" || return 1
  want "on the backend" 640 "$(stat -c %a $B/blob)" || return 1
  chmod 0755 $D/blob && want "chmod 755" 755 "$(stat -c %a $D/blob)"
}
w_symlink() {
  ln -s blob $D/link || return 1
  want "readlink" blob "$(readlink $D/link)" || return 1
  want "type" "symbolic link" "$(stat -c %F $D/link)" || return 1
  want "followed" "$(md5sum < /tmp/blob)" "$(md5sum < $D/link)" || return 1
  want "on the backend" blob "$(readlink $B/link)"
}
w_df() {
  line=$(df -k $D | tail -n 1)
  echo "df: $line"
  want "df total KiB (the share's size)" "$SIZE_KIB" "$(echo "$line" | awk '{ print $2 }')" ||
    return 1
  used=$(echo "$line" | awk '{ print $3 }')
  [ "$used" -ge 1536 ] || { echo "df used $used KiB < the 1.5 MiB written"; return 1; }
  echo "df: $SIZE_KIB KiB, $used KiB used"
}
workload() {  # PREFIX DIR: D is the directory in the mount, B the same on the backend
  D=$2/$1; B=$VOL/$1
  mkdir $D || { echo "RESULT $1-write fail mkdir $D"; return 1; }
  for w in write rename readdir chmod symlink df; do run "$1-$w" "w_$w"; done
}

# ------------------------------------------------------------------ kernel client
c_kernel_mount() {
  in_root vshare mount --kernel $URI work $K || return 1
  mounted $R$K || { echo "not in /proc/mounts"; return 1; }
  echo "$(awk -v d=$R$K '$2 == d { print $1, $3, $4 }' /proc/mounts)"
}
T0=$(now)
run kernel-mount c_kernel_mount
echo "TIME kernel-mount $(elapsed "$T0")"
T0=$(now)
mounted $R$K && workload k $R$K
echo "TIME kernel-workload $(elapsed "$T0")"

# ------------------------------------------------------------------------ refusals
refused_mount() {  # SHARE: vshare mount --kernel must fail, and nothing be mounted
  mkdir -p $R/mnt/$1
  in_root vshare mount --kernel $URI "$1" /mnt/$1 > /tmp/out 2>&1
  status=$?
  cat /tmp/out
  [ $status != 0 ] || { echo "mount of $1 succeeded"; return 1; }
  ! mounted $R/mnt/$1 || { echo "mounted anyway"; return 1; }
  want "exit status" 1 $status || return 1
  grep -q 'mount failed' /tmp/out || { echo "no 'mount failed' message"; return 1; }
  echo "$1 refused: exit $status: $(grep -v '^mount -t 9p' /tmp/out | tr -s ' \n' ' ')"
}
T0=$(now)
run refused-share refused_mount other          # the same tenant's share, no rule for us
run refused-instance refused_mount theirs      # allowed for the instance of CID 3 only
echo "TIME refusals $(elapsed "$T0")"

# --------------------------------------------------------------------- FUSE client
c_fuse_mount() {
  # --foreground, in the background here: the same client, one Python start fewer
  in_root_bg vshare mount --foreground $URI work $F > $R/run/fuse.log 2>&1 &
  FUSE_PID=$!
  fuse_up() { mounted $R$F || gone $FUSE_PID; }
  wait_for 120 fuse_up
  mounted $R$F || { cat $R/run/fuse.log; echo "FUSE mount did not come up"; return 1; }
  echo "$(awk -v d=$R$F '$2 == d { print $1, $3, $4 }' /proc/mounts)"
}
T0=$(now)
run fuse-mount c_fuse_mount
echo "TIME fuse-mount $(elapsed "$T0")"
T0=$(now)
mounted $R$F && workload f $R$F
echo "TIME fuse-workload $(elapsed "$T0")"
c_cross() {  # what each client wrote, seen through the other
  [ -f $R$F/f/blob ] && [ -d $R$F/k/many ] || { echo "nothing to compare"; return 1; }
  want "the FUSE client's blob through the kernel client" \
    "$(md5sum < $R$F/f/blob)" "$(md5sum < $R$K/f/blob)" || return 1
  want "the kernel client's tree through the FUSE client" \
    "$(ls $R$K/k/many | md5sum)" "$(ls $R$F/k/many | md5sum)"
}
run cross-check c_cross

# ------------------------------------------------------------------ unmount, stop
c_umount() {
  in_root fusermount3 -u $F || return 1
  wait_for 30 gone $FUSE_PID || { echo "the FUSE client still runs"; return 1; }
  umount $R$K || return 1
  if grep " $R/mnt/" /proc/mounts; then echo "still mounted"; return 1; fi
  echo "both clients unmounted; the FUSE client exited"
}
c_gateway_stop() {
  kill -TERM $GW_PID || return 1
  wait_for 60 gone $GW_PID || { echo "the gateway still runs"; return 1; }
  wait $GW_PID
  want "gateway exit status" 0 $?
}
run umount c_umount
run gateway-stop c_gateway_stop
sed 's/^/GW /' $R/run/gateway.log
echo "TIME workload $(elapsed "$T_WORK")"
echo "DONE"
poweroff -f
