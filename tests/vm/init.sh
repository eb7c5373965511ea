#!/bin/sh
# /init of the kernel-client guest (busybox sh, root, TZ unset = UTC). Built into the
# initramfs by build_initramfs.py; driven by test_kernel_client.py.
#
# Everything below goes through the Linux 9P client (v9fs, trans=tcp and trans=fd) to a
# vshare gateway on the host, reached at 10.0.2.2 (QEMU user networking: the host's
# 127.0.0.1). Parameters come on the kernel command line:
#   vshare.port=N        the gateway's TCP port
#   vshare.size_kib=N    the main share's size in KiB (what df must show)
#   vshare.big_mib=N     the size of the large file (MiB)
#   vshare.watchdog=N    after N seconds: dump the blocked tasks and the kernel log, power off
# and the share names are fixed: main (rw, sized), ro (ro rule), denied (no rule),
# revoked (rw until the host takes the rule away while it is mounted).
#
# Output protocol (one line each, on the console):
#   RESULT <name> ok|fail <detail>     one per check; the host asserts every one
#   TIME <name> <seconds>              durations measured in the guest
#   WAIT <event>                       the guest waits for the host (see revoke)
#   LOG <name>: <text>                 the output of a failed check
#   DONE                               the workload finished; then poweroff -f
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp

arg() { sed -n "s/.*\\bvshare\\.$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
PORT=$(arg port)
SIZE_KIB=$(arg size_kib)
BIG_MIB=$(arg big_mib)
WATCHDOG=$(arg watchdog)
HOST=10.0.2.2
BASE="trans=tcp,port=$PORT,version=9p2000.L"

now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# run NAME FUNCTION [ARGS]: one check. Its output goes to a log; the last line of the log
# is the detail of the RESULT line, and a failed check's whole log follows as LOG lines.
# (Its variables have names no check uses: sh variables are global.)
run() {
  _name=$1; shift
  _start=$(now)
  if "$@" > "/tmp/log.$_name" 2>&1; then _status=ok; else _status=fail; fi
  echo "RESULT $_name $_status $(tail -n 1 "/tmp/log.$_name" | tr -d '\r') ($(elapsed "$_start") s)"
  if [ $_status = fail ]; then sed "s/^/LOG $_name: /" "/tmp/log.$_name"; fi
}
# want DESCRIPTION EXPECTED ACTUAL
want() {
  if [ "$2" = "$3" ]; then echo "$1: $3"; return 0; fi
  echo "$1: expected '$2', got '$3'"; return 1
}
# refused DESCRIPTION COMMAND...: the command must fail; prints its error
refused() {
  what=$1; shift
  if err=$("$@" 2>&1); then echo "$what: succeeded, should have failed"; return 1; fi
  echo "$what refused: $(echo "$err" | tail -n 1)"
}
mnt() {  # DIR OPTIONS
  mkdir -p "$1" && mount -t 9p -o "$BASE,$2" "$HOST" "$1"
}

# ---------------------------------------------------------------------------- boot
c_modules() {
  for m in $(cat /lib/modules/load.order); do
    insmod "/lib/modules/$m.ko" || { echo "insmod $m failed"; return 1; }
  done
  grep -w 9p /proc/filesystems || return 1
}
c_network() {
  ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 &&
    ip route add default via 10.0.2.2 || return 1
  echo "eth0 up, gateway $HOST:$PORT"
}
exec 3>&1    # the console, for TIME lines from inside a check
echo "GUEST $(uname -r) $(busybox | head -n 1)"
run modules c_modules
run network c_network
echo "TIME boot $(now)"
# A hung check would otherwise say nothing: show where every task is blocked, and stop.
(sleep "${WATCHDOG:-200}"; echo "WATCHDOG after $WATCHDOG s"; echo w > /proc/sysrq-trigger
 dmesg | tail -n 300 | sed 's/^/LOG watchdog: /'; poweroff -f) &
T_WORK=$(now)

# ------------------------------------------------------------------- three msizes
c_mount() {  # DIR MSIZE
  mnt "$1" "aname=main,msize=$2" || return 1
  opts=$(awk -v d="$1" '$2 == d { print $4 }' /proc/mounts)
  echo "$opts" | grep -q "msize=$2" || { echo "msize not $2: $opts"; return 1; }
  echo "mounted $1: $opts"
}
A=/mnt/a; B=/mnt/b; C=/mnt/c     # 64 KiB, 512 KiB, 1 MiB: the same share, three sessions
run mount-64k c_mount $A 65536
run mount-512k c_mount $B 524288
run mount-1m c_mount $C 1048576
c_msize_cap() {  # more than the fd transport takes: the client asks for 1 MiB
  mnt /mnt/huge "aname=main,msize=4194304" || return 1
  opts=$(awk '$2 == "/mnt/huge" { print $4 }' /proc/mounts)
  umount /mnt/huge
  echo "$opts" | grep -q "msize=1048576" && echo "msize=4194304 asked, 1048576 used"
}
run msize-cap c_msize_cap

c_msize_io() {  # WRITE_DIR CHECK_DIR NAME: 3 MiB + an odd-sized file, checked through another mount
  /vmtool pattern-write "$1/$3.bin" 3 && /vmtool pattern-check "$2/$3.bin" 3 || return 1
  dd if=/dev/urandom of=/tmp/odd bs=1000 count=777 2>/dev/null
  cp /tmp/odd "$1/$3.odd" || return 1
  want "md5 of 777000 bytes" "$(md5sum < /tmp/odd)" "$(md5sum < "$2/$3.odd")"
}
run io-64k c_msize_io $A $B m64
run io-512k c_msize_io $B $C m512
run io-1m c_msize_io $C $A m1m

# ------------------------------------------------------------------- file operations
M=$B/ops
mkdir -p $M
c_create() {
  dd if=/dev/urandom of=/tmp/data bs=4096 count=75 2>/dev/null     # 300 KiB
  cp /tmp/data $M/data || return 1
  want "size" 307200 "$(stat -c %s $M/data)" || return 1
  want "md5 read back" "$(md5sum < /tmp/data)" "$(md5sum < $M/data)" || return 1
  sh -c "umask 0333 && echo 'written through a 0444 create' > $M/readonly-mode" || return 1
  want "a 0444 file written by its creating open" "444 written through a 0444 create" \
    "$(stat -c %a $M/readonly-mode) $(cat $M/readonly-mode)" || return 1
  printf 'hello, kernel client\n' > $M/hello || return 1
  want "content" "hello, kernel client" "$(cat $M/hello)"
}
c_append() {
  printf 'one\n' > $M/log && printf 'two\n' >> $M/log && printf 'three\n' >> $M/log || return 1
  want "appended" "one two three" "$(cat $M/log | tr '\n' ' ' | sed 's/ $//')" || return 1
  cat /tmp/data >> $M/log || return 1
  want "size after a large append" 307214 "$(stat -c %s $M/log)"
}
c_truncate() {
  printf 'abcdefghij' > $M/tr && truncate -s 3 $M/tr || return 1
  want "shrunk" abc "$(cat $M/tr)" || return 1
  truncate -s 10000 $M/tr || return 1
  want "grown size" 10000 "$(stat -c %s $M/tr)" || return 1
  want "zero fill" "9997 0" "$(tail -c +4 $M/tr | wc -c) $(tail -c +4 $M/tr | tr -d '\000' | wc -c)" || return 1
  : > $M/tr
  want "truncated by O_TRUNC" 0 "$(stat -c %s $M/tr)"
}
c_rename() {
  printf 'r1' > $M/r1 && mkdir -p $M/d1 $M/d2 || return 1
  mv $M/r1 $M/r2 || return 1
  [ ! -e $M/r1 ] && want "same dir" r1 "$(cat $M/r2)" || return 1
  mv $M/r2 $M/d1/r3 && mv $M/d1/r3 $M/d2/r4 || return 1
  [ ! -e $M/d1/r3 ] && want "across dirs" r1 "$(cat $M/d2/r4)" || return 1
  printf 'other' > $M/d1/victim && mv $M/d2/r4 $M/d1/victim || return 1
  want "over an existing file" r1 "$(cat $M/d1/victim)" || return 1
  mkdir $M/d1/sub && printf x > $M/d1/sub/f && mv $M/d1/sub $M/d2/moved || return 1
  want "a directory across dirs" x "$(cat $M/d2/moved/f)"
}
c_hardlink() {
  printf 'linked' > $M/h1 && ln $M/h1 $M/h2 || return 1
  want "nlink" 2 "$(stat -c %h $M/h1)" || return 1
  want "same inode" "$(stat -c %i $M/h1)" "$(stat -c %i $M/h2)" || return 1
  printf '+' >> $M/h2
  want "shared data" "linked+" "$(cat $M/h1)" || return 1
  rm $M/h1 && want "nlink after unlink" 1 "$(stat -c %h $M/h2)"
}
c_symlink() {
  ln -s hello $M/sym && ln -s ../nowhere $M/dangling || return 1
  want "readlink" hello "$(readlink $M/sym)" || return 1
  want "followed" "hello, kernel client" "$(cat $M/sym)" || return 1
  want "type" "symbolic link" "$(stat -c %F $M/sym)" || return 1
  want "dangling readlink" ../nowhere "$(readlink $M/dangling)" || return 1
  [ -L $M/dangling ] && [ ! -e $M/dangling ]
}
c_bytes_names() {
  # Linux names are bytes: one that is not UTF-8 (Latin-1 "café", raw 0xff 0xfe).
  n=$(printf 'caf\351'); o=$(printf '\377\376-x')
  printf 'latin' > "$M/$n" || return 1
  want "read back" latin "$(cat "$M/$n")" || return 1
  listed=; for f in "$M"/*; do [ "$f" = "$M/$n" ] && listed=1; done   # (ls shows it as ?)
  [ -n "$listed" ] || { echo "not listed"; return 1; }
  mkdir "$M/$o" && mv "$M/$n" "$M/$o/$n" || return 1
  want "after rename" latin "$(cat "$M/$o/$n")" || return 1
  rm "$M/$o/$n" && rmdir "$M/$o" && [ ! -e "$M/$o" ]
}
c_mkdir() {
  mkdir -p $M/x/y/z && [ -d $M/x/y/z ] || return 1
  refused "rmdir of a non-empty dir" rmdir $M/x/y || return 1
  rmdir $M/x/y/z $M/x/y $M/x && [ ! -e $M/x ] || return 1
  mkdir -m 0700 $M/private && want "mkdir -m" 700 "$(stat -c %a $M/private)"
}
c_readdir() {  # 1000 entries with long names, created and listed through the 64 KiB mount
  mkdir $A/many && cd $A/many || return 1
  seq -w 0 999 | sed 's/^/an-entry-with-a-long-name-to-need-several-readdirs-/' > /tmp/names
  t0=$(now)
  xargs touch < /tmp/names || return 1
  echo "TIME create-1000 $(elapsed "$t0")" >&3
  cd /
  t0=$(now)
  ls $A/many > /tmp/listed
  echo "TIME readdir-1000 $(elapsed "$t0")" >&3
  want "entries through 64 KiB" 1000 "$(wc -l < /tmp/listed)" || return 1
  want "names" "$(md5sum < /tmp/names)" "$(sort /tmp/listed | md5sum)" || return 1
  want "entries through 512 KiB" 1000 "$(ls -a $B/many | grep -c an-entry)" || return 1
  want "find" 1001 "$(find $C/many | wc -l)" || return 1
  t0=$(now)
  rm -rf $A/many && [ ! -e $A/many ] || { echo "rm -rf left entries: $(ls $A/many | wc -l)"; return 1; }
  echo "TIME rm-1000 $(elapsed "$t0")" >&3
  echo "1000 entries listed through three mounts and removed while reading the directory"
}
c_chmod() {
  chmod 0640 $M/hello && want "chmod 640" 640 "$(stat -c %a $M/hello)" || return 1
  chmod 4755 $M/hello && want "setuid stripped (squash)" 755 "$(stat -c %a $M/hello)" || return 1
  chmod u-w,go-rx $M/hello && want "symbolic" 500 "$(stat -c %a $M/hello)" || return 1
  chmod 644 $M/hello || return 1
  chown 1000:1000 $M/hello && want "chown accepted, owner squashed" "0 0" "$(stat -c '%u %g' $M/hello)"
}
c_touch() {
  touch -d '2023-05-06 07:08:09' $M/hello || return 1
  want "mtime" 1683356889 "$(stat -c %Y $M/hello)" || return 1
  want "atime" 1683356889 "$(stat -c %X $M/hello)" || return 1
  touch $M/touched-new && [ -f $M/touched-new ] || return 1
  t=$(stat -c %Y $M/touched-new)
  [ "$t" -gt 1683356889 ] && echo "new file mtime $t"
}
c_stat() {
  want "file" "regular file 21 1" "$(stat -c '%F %s %h' $M/hello)" || return 1
  want "dir" "directory" "$(stat -c %F $M/d1)" || return 1
  refused "stat of a missing name" stat $M/missing || return 1
  want "statfs name length" 255 "$(stat -f -c %l $M)"
}
c_mkfifo() {
  mkfifo -m 0640 $M/fifo || return 1
  want "type" fifo "$(stat -c %F $M/fifo)" || return 1
  want "mode" 640 "$(stat -c %a $M/fifo)" || return 1
  (echo "through the fifo" > $M/fifo &)
  want "data" "through the fifo" "$(cat $M/fifo)" || return 1
  refused "mknod of a device" mknod $M/null c 1 3
}
c_xattr() { printf 'x' > $M/xa && /vmtool xattr $M/xa; }
c_locks() { printf 'lock me\n' > $M/lk && /vmtool locks $M/lk && /vmtool locks2 $A/ops/lk $C/ops/lk; }
c_fsync() { printf 'x\n' > $M/sync && /vmtool fsync $M/sync && want "content" "x synced" "$(cat $M/sync | tr '\n' ' ' | sed 's/ $//')"; }
c_long_names() {
  long=$(printf '%0255d' 7)
  printf 'long' > "$M/$long" && want "255-byte name" long "$(cat "$M/$long")" || return 1
  refused "a 256-byte name" sh -c "echo x > '$M/${long}8'" || return 1
  rm "$M/$long"
}
c_open_unlinked() {
  printf 'still here\n' > $M/doomed || return 1
  want "read and fstat after unlink" "still here 11" \
    "$(sh -c 'exec 4<"$1" && rm "$1" && [ ! -e "$1" ] && echo $(cat <&4) $(stat -L -c %s /proc/self/fd/4)' _ $M/doomed)"
}
c_exec() {
  cp /vmtool $M/tool && chmod 755 $M/tool || return 1
  want "a binary run from the share" "ran from the share" "$($M/tool runas 0 /bin/echo ran from the share)"
}
c_nonroot() {  # access=user: the kernel attaches once more, for uid 1000
  mkdir -p $M/pub && chmod 1777 $M/pub || return 1
  mnt /mnt/u "aname=main,msize=65536,access=user" || return 1
  want "uid 1000 creates in a 1777 dir" mine "$(/vmtool runas 1000 /bin/sh -c 'echo mine > /mnt/u/ops/pub/by-1000 && cat /mnt/u/ops/pub/by-1000')" || return 1
  refused "uid 1000 creating in a 0755 dir" /vmtool runas 1000 /bin/sh -c 'echo x > /mnt/u/ops/d1/nope' || return 1
  umount /mnt/u && echo "access=user mount: uid 1000 works within the permissions"
}
c_cache_modes() {  # the page cache: writes through it, mmap, and what another mount wrote
  refused "a shared writable mmap with cache=none" /vmtool mmap $B/ops/no-mmap 1 || return 1
  for mode in loose mmap fscache; do
    d=/mnt/cache-$mode
    mnt $d "aname=main,msize=524288,cache=$mode" || { echo "mount cache=$mode failed"; return 1; }
    cp /tmp/data $d/ops/cache-$mode.dat && sync || return 1
    want "cache=$mode: md5 seen uncached" "$(md5sum < /tmp/data)" "$(md5sum < $B/ops/cache-$mode.dat)" || return 1
    /vmtool mmap $d/ops/cache-$mode.map 2 && /vmtool pattern-check $B/ops/cache-$mode.map 2 || return 1
    printf 'from the uncached mount\n' > $B/ops/cache-$mode.new
    want "cache=$mode: a new file from elsewhere" "from the uncached mount" "$(cat $d/ops/cache-$mode.new)" || return 1
    umount $d || return 1
    echo "cache=$mode: write-back, mmap and lookups agree with cache=none"
  done
}
c_parallel() {  # many requests in flight on one session: 6 writers, then 6 readers, and ls
  pids=""   # (a bare `wait` would also wait for the watchdog)
  for n in 1 2 3 4 5 6; do /vmtool pattern-write $B/par$n 4 > /tmp/par.w$n 2>&1 & pids="$pids $!"; done
  for n in 1 2 3 4 5 6 7 8; do ls -l $B/ops > /dev/null & pids="$pids $!"; done
  wait $pids
  cat /tmp/par.w* | grep -v 'ok$' && return 1
  pids=""
  for n in 1 2 3 4 5 6; do /vmtool pattern-check $B/par$n 4 > /tmp/par.r$n 2>&1 & pids="$pids $!"; done
  wait $pids
  cat /tmp/par.r* | grep -v 'ok$' && return 1
  rm $B/par1 $B/par2 $B/par3 $B/par4 $B/par5 $B/par6
  echo "6 concurrent writers and readers of 4 MiB, 8 concurrent ls -l"
}
c_unlink() {
  rm $M/data $M/touched-new && [ ! -e $M/data ] || return 1
  refused "rm of a missing file" rm $M/data
}
run create c_create
run append c_append
run truncate c_truncate
run rename c_rename
run hardlink c_hardlink
run symlink c_symlink
run mkdir-rmdir c_mkdir
run bytes-names c_bytes_names
run readdir-1000 c_readdir
run chmod c_chmod
run touch-d c_touch
run stat c_stat
run mkfifo c_mkfifo
run xattr c_xattr
run locks c_locks
run fsync c_fsync
run long-names c_long_names
run parallel c_parallel
run open-unlinked c_open_unlinked
run exec c_exec
run nonroot c_nonroot
run cache-modes c_cache_modes
run unlink c_unlink

# ----------------------------------------------------------------- tar round trip
listing() {  # DIR: one line per entry: type, name, and what must survive the trip
  (cd "$1" && find . | sort | while read -r p; do
    if [ -L "$p" ]; then echo "L $p -> $(readlink "$p")"
    elif [ -f "$p" ]; then echo "F $p $(stat -c '%s %a %Y' "$p") $(md5sum < "$p" | cut -c1-32)"
    elif [ -d "$p" ]; then echo "D $p $(stat -c %a "$p")"
    else echo "? $p"; fi
  done)
}
c_tar() {
  S=/tmp/src; rm -rf $S; mkdir -p "$S/d1/d2/d3" "$S/empty dir" || return 1
  for n in 0 1 511 4095 4096 65535 65536 65537 300001; do
    dd if=/dev/urandom of="$S/d1/f$n" bs=$n count=1 2>/dev/null || : > "$S/d1/f$n"
  done
  dd if=/dev/urandom of=$S/d1/d2/big bs=65536 count=24 2>/dev/null     # 1.5 MiB
  printf 'spaces\n' > "$S/name with spaces"
  printf 'utf8\n' > "$S/d1/d2/d3/héllo-wörld"
  printf '#!/bin/sh\n' > $S/script && chmod 755 $S/script && chmod 600 $S/d1/f1
  ln -s d1/f4096 $S/link && ln -s ../../nowhere $S/d1/d2/dangling
  find $S -exec touch -h -d '2022-02-03 04:05:06' {} +
  listing $S > /tmp/l.src
  tar -cf /tmp/t1.tar -C $S . || return 1
  mkdir $A/tree && tar -xf /tmp/t1.tar -C $A/tree || return 1    # written at 64 KiB
  listing $C/tree > /tmp/l.share                                 # read at 1 MiB
  tar -cf /tmp/t2.tar -C $C/tree . || return 1                   # re-created from the share
  mkdir /tmp/back && tar -xf /tmp/t2.tar -C /tmp/back || return 1
  listing /tmp/back > /tmp/l.back
  diff /tmp/l.src /tmp/l.share || return 1
  diff /tmp/l.src /tmp/l.back || return 1
  echo "$(wc -l < /tmp/l.src) entries, listing md5 $(md5sum < /tmp/l.src | cut -c1-32)"
}
run tar c_tar

# ------------------------------------------------------------------ a large file
c_big() {
  t0=$(now)
  /vmtool pattern-write $C/big.bin "$BIG_MIB" || return 1
  echo "TIME big-write $(elapsed "$t0")" >&3
  t0=$(now)
  /vmtool pattern-check $C/big.bin "$BIG_MIB" || return 1
  echo "TIME big-read $(elapsed "$t0")" >&3
  want "size" $((BIG_MIB * 1048576)) "$(stat -c %s $C/big.bin)" || return 1
  want "du (st_blocks)" $((BIG_MIB * 1024)) "$(du -k $C/big.bin | cut -f1)"
}
run big-file c_big

c_df() {
  line=$(df -k $B | tail -n 1)
  echo "df: $line"
  total=$(echo "$line" | awk '{ print $2 }')
  used=$(echo "$line" | awk '{ print $3 }')
  want "df total KiB" "$SIZE_KIB" "$total" || return 1
  [ "$used" -ge $((BIG_MIB * 1024)) ] || { echo "df used $used KiB < the large file"; return 1; }
  want "statfs" "$SIZE_KIB" "$(stat -f -c '%b %S' $B | awk '{ print $1 * $2 / 1024 }')"
}
run df c_df

df_used() { df -k $B | tail -n 1 | awk '{ print $3 }'; }
c_quota() {
  u0=$(df_used)
  /vmtool pattern-write $B/twenty 20 || return 1
  u1=$(df_used)
  rm $B/twenty || return 1
  u2=$(df_used)
  echo "df used: $u0 -> $u1 (20 MiB written) -> $u2 (removed)"
  [ $((u1 - u0)) -ge 20480 ] && [ $((u1 - u2)) -ge 20480 ] || { echo "usage did not follow"; return 1; }
  refused "a file past the share's size" dd if=/dev/zero of=$B/toobig bs=1M count=1 seek=$((SIZE_KIB / 1024)) || return 1
  dd if=/dev/zero of=$B/toobig bs=1M count=1 seek=$((SIZE_KIB / 1024)) 2>&1 | grep -q 'quota exceeded' || return 1
  rm -f $B/toobig && echo "EDQUOT past $SIZE_KIB KiB"
}
run quota c_quota

# ------------------------------------------------------------- trans=fd (vmtool)
c_trans_fd() {
  mkdir -p /mnt/fd
  /vmtool mountfd $HOST "$PORT" /mnt/fd "version=9p2000.L,msize=262144,aname=main" || return 1
  grep ' /mnt/fd 9p ' /proc/mounts || return 1
  want "read through trans=fd" "hello, kernel client" "$(cat /mnt/fd/ops/hello)" || return 1
  printf 'via fd\n' > /mnt/fd/via-fd || return 1
  want "seen through trans=tcp" "via fd" "$(cat $B/via-fd)" || return 1
  umount /mnt/fd && echo "trans=fd mount, read, write, umount ok"
}
run trans-fd c_trans_fd

# ------------------------------------------------------------------ access rules
c_ro() {
  mnt /mnt/ro "aname=ro,msize=65536" || return 1
  want "read" "read only" "$(cat /mnt/ro/readme.txt)" || return 1
  refused "create on ro" touch /mnt/ro/new || return 1
  refused "write on ro" sh -c 'echo x >> /mnt/ro/readme.txt' || return 1
  refused "mkdir on ro" mkdir /mnt/ro/dir || return 1
  refused "rm on ro" rm /mnt/ro/readme.txt || return 1
  refused "chmod on ro" chmod 600 /mnt/ro/readme.txt || return 1
  touch /mnt/ro/new 2>&1 | grep -q 'Read-only file system' || { echo "not EROFS"; return 1; }
  want "unchanged" "read only" "$(cat /mnt/ro/readme.txt)" || return 1
  umount /mnt/ro && echo "ro share: reads work, every write refused with EROFS"
}
c_denied() {
  mkdir -p /mnt/denied
  refused "mount of a share without a rule" mnt /mnt/denied "aname=denied,msize=65536" || return 1
  refused "mount of an unknown share" mnt /mnt/denied "aname=nosuch,msize=65536" || return 1
  if grep -q ' /mnt/denied ' /proc/mounts; then echo "mounted anyway"; return 1; fi
}
run ro-share c_ro
run denied-share c_denied

c_revoke_before() {
  mnt /mnt/rv "aname=revoked,msize=65536" || return 1
  printf 'before\n' > /mnt/rv/before && want "rw while allowed" before "$(cat /mnt/rv/before)"
}
c_offsets() {  # past 4 GiB, on the share without a size (sparse on the host)
  printf 'X' | dd of=/mnt/rv/sparse bs=1 seek=5368709120 2>/dev/null || return 1
  want "size" 5368709121 "$(stat -c %s /mnt/rv/sparse)" || return 1
  want "the byte at 5 GiB" X "$(tail -c 1 /mnt/rv/sparse)" || return 1
  hole() { dd if=/mnt/rv/sparse bs=4096 skip=1048575 count=1 2>/dev/null; }
  want "a hole below 4 GiB reads as zeros" "4096 0" "$(hole | wc -c) $(hole | tr -d '\000' | wc -c)" || return 1
  rm /mnt/rv/sparse
}
denied() {  # DESCRIPTION COMMAND...: must fail with EACCES (not EIO: the session lives on)
  what=$1; shift
  refused "$what" "$@" | tee /tmp/denied
  grep -q 'Permission denied' /tmp/denied || { echo "$what: not EACCES"; return 1; }
}
c_revoke_after() {
  denied "ls after revoke" ls /mnt/rv || return 1
  denied "read after revoke" cat /mnt/rv/before || return 1
  denied "write after revoke" sh -c 'echo x > /mnt/rv/after' || return 1
  denied "stat after revoke" stat /mnt/rv/before || return 1
  denied "ls again" ls /mnt/rv || return 1
  mkdir -p /mnt/rv2
  refused "a new mount after revoke" mnt /mnt/rv2 "aname=revoked,msize=65536" || return 1
  umount /mnt/rv || { echo "umount of the revoked mount failed"; return 1; }
  echo "revoked: every access fails with EACCES, umount works"
}
run revoke-mounted c_revoke_before
run offsets-64bit c_offsets
echo "WAIT revoke"
i=0
while [ ! -e $B/.revoked ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
run revoke-enforced c_revoke_after

# ---------------------------------------------------------------------- unmount
c_umount() {
  cd /
  umount $A && umount $B && umount $C || return 1
  if grep ' 9p ' /proc/mounts; then echo "still mounted"; return 1; fi
  echo "all unmounted"
}
run umount c_umount
sleep 1     # the host checks meanwhile that the gateway has closed every session
echo "TIME workload $(elapsed "$T_WORK")"
echo "DONE"
poweroff -f
