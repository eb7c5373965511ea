#!/bin/sh
# Runs inside the capture guest as /probe.sh (busybox sh, root, TZ unset = UTC).
# Each phase is one mount = one TCP connection = one vector file, in this order:
#   1 ops  2 readdir  3 xattr-lock  4 bigio  5 flush  6 msize  7 version  8 parallel
# The 9P server is reached at 10.0.2.100:564 (QEMU guestfwd -> relay -> diod).
# EXPORT (the diod export path, used as aname) is set by capture.sh in /env.sh.
. /env.sh
OPTS="trans=tcp,port=564,version=9p2000.L,msize=65536,aname=$EXPORT,cache=none"
M=/mnt
mkdir -p $M

mnt() { mount -t 9p -o "${2:-$OPTS}" 10.0.2.100 $M || { echo "PHASE-FAIL mount $1"; exit 1; }; echo "PHASE-BEGIN $1"; }
umnt() { cd /; umount $M || echo "PHASE-FAIL umount $1"; echo "PHASE-END $1"; sleep 1; }
run() { echo "+ $*"; "$@"; echo "  rc=$?"; }

# ---- 1: ops ---------------------------------------------------------------
mnt ops
run df $M                                   # Tstatfs
run ls -la $M                               # Treaddir, Twalk, Tgetattr
run cat $M/hello.txt                        # Tlopen, Tread
run stat $M/missing                         # Twalk -> Rlerror ENOENT
run readlink $M/link                        # Treadlink
run mkdir -m 0750 $M/d                      # Tmkdir
echo "new file" > $M/d/new.txt; echo "  rc=$? (echo > d/new.txt)"   # Tlcreate, Twrite
run ln -s new.txt $M/d/sym                  # Tsymlink
run ln $M/d/new.txt $M/d/hard               # Tlink
run mv $M/d/hard $M/d/hard2                 # rename within a dir
run mv $M/d/hard2 $M/moved                  # rename across dirs
run chmod 0600 $M/d/new.txt                 # Tsetattr mode
run truncate -s 3 $M/d/new.txt              # Tsetattr size
run touch -d '2023-05-06 07:08:09' $M/d/new.txt   # Tsetattr atime+mtime set (UTC)
run mkfifo -m 0640 $M/d/fifo                # Tmknod (S_IFIFO)
run mknod -m 0600 $M/d/null c 1 3           # Tmknod (S_IFCHR 1:3)
run ls -la $M/d
run cat $M/d/new.txt; echo
run /vtool runas 65534 /bin/cat $M/hello.txt   # second Tattach (n_uname 65534)
run rm $M/d/fifo $M/d/null $M/d/sym $M/moved $M/d/new.txt   # Tunlinkat
run rmdir $M/d                              # Tunlinkat AT_REMOVEDIR
umnt ops

# ---- 2: readdir of a directory with 20 entries ----------------------------
mnt readdir
run ls -la $M/many
umnt readdir

# ---- 3: xattrs, locks, fsync ------------------------------------------------
mnt xattr-lock
run /vtool setxattr $M/x.txt user.color blue        # Txattrcreate + Twrite + Tclunk
run /vtool getxattr $M/x.txt user.color             # Txattrwalk + Tread
run /vtool listxattr $M/x.txt                       # Txattrwalk name ""
run /vtool getxattr $M/x.txt user.missing           # Txattrwalk -> Rlerror ENODATA
run /vtool removexattr $M/x.txt user.color
run /vtool listxattr $M/x.txt
run /vtool locks $M/x.txt                           # Tlock, Tgetlock
run /vtool sync $M/x.txt 'more'                     # Twrite, Tfsync x2
run cat $M/x.txt; echo
umnt xattr-lock

# ---- 4: one 64 KiB write and read ------------------------------------------
mnt bigio
run /vtool pwrite $M/big.bin 0 65536 A               # Tlcreate, Twrite 65512 + 24
run dd if=$M/big.bin of=/dev/null bs=65536 count=1   # Tread 65512 + 24
umnt bigio

# ---- 5: Tflush ---------------------------------------------------------------
# The relay holds server->client bytes for a few seconds once it sees a
# Twalk naming "flushme"; the stat is SIGKILLed while it waits, so the kernel
# sends Tflush for the walk's tag.
mnt flush
stat $M/fl/flushme > /dev/null 2>&1 &
P=$!
sleep 1
kill -9 $P; wait $P; echo "  stat killed rc=$?"
sleep 5
run stat -c '%n %s' $M/fl/flushme
umnt flush

# ---- 6: msize negotiation: ask for 262144, diod answers 65536 ----------------
mnt msize "trans=tcp,port=564,version=9p2000.L,msize=262144,aname=$EXPORT,cache=none"
run cat $M/hello.txt
run cat /proc/mounts
umnt msize

# ---- 7: a version diod does not speak: the mount must fail --------------------
echo "PHASE-BEGIN version"
if mount -t 9p -o "trans=tcp,port=564,version=9p2000.u,msize=65536,aname=$EXPORT" 10.0.2.100 $M; then
  echo "PHASE-FAIL version: 9p2000.u mount unexpectedly worked"; umount $M
else
  echo "  9p2000.u mount failed as expected"
fi
echo "PHASE-END version"
sleep 1

# ---- 8: concurrent requests (several tags outstanding) -------------------------
mnt parallel
for i in 00 01 02 03 04 05 06 07; do cat $M/many/f$i > /tmp/par.$i & done
wait
echo "  parallel cats: $(cat /tmp/par.* | tr '\n' ' ')"
umnt parallel
echo "WORKLOAD-DONE"
