#!/bin/bash
# Runs in the lab's dom0 at boot (xen-test.service): boots xen-smoke as a domU in the mode the
# kernel command line names (xentest.mode=pv|pvh), checks what it did from dom0's side, prints
# one "XEN-TEST <mode> <check> ok|FAIL <detail>" line per check on the console, powers off.
set -uo pipefail
exec > /dev/console 2>&1
MODE=$(sed -n 's/.*xentest\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)
MODE=${MODE:-pvh}
# xentest.quick=1 (XEN_TEST_QUICK=1): no vchan, 100 UDP datagrams; for iterating, not a result.
QUICK=$(sed -n 's/.*xentest\.quick=\([0-9]\).*/\1/p' /proc/cmdline)
VCHAN_WORD=; UDP_COUNT=10000
[ "$QUICK" = 1 ] && { VCHAN_WORD=" vchan=skip"; UDP_COUNT=100; }
IMG=/usr/local/lib/xen-test/xen-smoke.vmlinuz
NAME=smoke-$MODE
LOG=/var/log/xen/console/guest-$NAME.log
lib=/usr/lib/xen-4.17/bin

check() {  # check NAME OK? DETAIL
  if [ "$2" = 0 ]; then echo "XEN-TEST $MODE $1 ok $3"; else echo "XEN-TEST $MODE $1 FAIL $3"; fi
}
crashed() {  # crashed NAME: the domain is gone or crashed (on_crash=preserve keeps it)
  local st
  st=$(xl list "$1" 2>/dev/null | awk 'NR==2{print $5}')
  [ -z "$st" ] || [[ "$st" == *c* ]]
}
guest_says() {  # guest_says PATTERN: the guest printed it, or will never print anything again
  grep -q "$1" "$LOG" || crashed "$NAME"
}
wait_for() {  # wait_for SECONDS CMD...: poll CMD every 0.5 s
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -ge $end ] && return 1; sleep 0.5; done
}
finish() {
  echo "XEN-TEST $MODE done"
  xl dmesg | grep -E '\(d[0-9]+\)' | tail -40 | sed 's/^/XEN-DMESG /'
  sync
  systemctl poweroff --no-block
  exit 0
}
grep -q 'xentest.mode=' /proc/cmdline || exit 0
echo "XEN-TEST $MODE start $(xl info | awk '/^xen_version/{print $3}')"

wait_for 60 pgrep -x oxenstored >/dev/null || /etc/init.d/xen start
wait_for 30 pgrep -x xenconsoled >/dev/null
# xentest.only=firewall (XEN_TEST_ONLY=firewall): only dom0-firewall.sh, for iterating.
if grep -q 'xentest.only=firewall' /proc/cmdline; then
  . /usr/local/lib/xen-test/dom0-firewall.sh
  finish
fi
# xentest.only=flows (XEN_TEST_ONLY=flows): only dom0-flows.sh, for iterating.
if grep -q 'xentest.only=flows' /proc/cmdline; then
  . /usr/local/lib/xen-test/dom0-flows.sh
  finish
fi
"$lib/readnotes" "$IMG" > /tmp/notes.txt 2>&1
sed 's/^/XEN-NOTES /' /tmp/notes.txt
grep -qi 'PHYS32_ENTRY' /tmp/notes.txt && grep -qi 'HYPERCALL_PAGE' /tmp/notes.txt && grep -qi 'xen-3.0' /tmp/notes.txt
check elf-notes $? "readnotes shows PHYS32_ENTRY, HYPERCALL_PAGE, xen-3.0"

# A file-backed disk for blkback (the block script puts it on a loop device).
DISK=/var/lib/xen-test-disk.img
rm -f "$DISK"; truncate -s 64M "$DISK"
cat > /tmp/$NAME.cfg <<EOC
name = "$NAME"
type = "$MODE"
kernel = "$IMG"
memory = 32
vcpus = 1
extra = "xen-test mode=$MODE ip=10.137.99.2$VCHAN_WORD"
vif = [ 'mac=00:16:3e:5a:00:02,bridge=xenbr0' ]
disk = [ 'format=raw,vdev=xvda,access=rw,target=$DISK' ]
on_crash = "preserve"
EOC
# netback's side: a bridge with dom0's address; vif-bridge adds the guest's vif to it.
ip link add xenbr0 type bridge 2>/dev/null
ip addr add 10.137.99.1/24 dev xenbr0 2>/dev/null
ip link set xenbr0 up
rm -f "$LOG"
modprobe -a xen-evtchn xen-gntdev xen-gntalloc 2>/dev/null
# What dom0 sends over vchan, and its cksum ("CRC/LEN", as the guest prints it).
VTOTAL=16777216
head -c $VTOTAL /dev/urandom > /tmp/vchan-tx
TXCK=$(cksum < /tmp/vchan-tx | tr ' ' /)
now_ms() { date +%s%3N; }
t0=$SECONDS
c0=$(now_ms)
xl create /tmp/$NAME.cfg > /tmp/create.txt 2>&1
rc=$?
c1=$(now_ms)
check create $rc "xl create rc=$rc in $((c1 - c0)) ms $(tail -1 /tmp/create.txt)"
[ $rc = 0 ] || finish
DOMID=$(xl domid "$NAME")
# Timing from the start of `xl create`, polled every 20 ms.
t_con=; t_xs=
for _ in $(seq 1 3000); do
  [ -z "$t_con" ] && [ -s "$LOG" ] && t_con=$(( $(now_ms) - c0 ))
  [ -z "$t_xs" ] && xenstore-read /local/domain/$DOMID/data/smoke >/dev/null 2>&1 && t_xs=$(( $(now_ms) - c0 ))
  [ -n "$t_con" ] && [ -n "$t_xs" ] && break
  sleep 0.02
done
echo "XEN-TEST $MODE timing xl-create-to-first-console-line=${t_con:-?}ms xl-create-to-xenstore-write=${t_xs:-?}ms xl-create-returned=$((c1 - c0))ms"

# vchan, guest as server: dom0's libxenvchan client (vchan-socket-proxy -m client).
vchan_peer() {  # vchan_peer ROLE-OF-GUEST PROXY-ARGS...: runs the proxy until the guest reports
  local role=$1; shift
  vchan-socket-proxy "$@" - < <(cat /tmp/vchan-tx; sleep 900) > /tmp/vchan-rx-$role 2> /tmp/vchan-err-$role &
  local pid=$!
  # The client role runs on vchan-socket-proxy's in-page rings (1 and 2 KiB): minutes of TCG.
  wait_for 1500 guest_says "xen-smoke: vchan-$role \(ok\|FAIL\)"
  wait_for 10 sh -c "! kill -0 $pid 2>/dev/null"
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
  local line rx got
  line=$(grep -o "xen-smoke: vchan-$role \(ok\|FAIL\) .*" "$LOG" | head -1)
  rx=$(cksum < /tmp/vchan-rx-$role | tr ' ' /)
  got=$(echo "$line" | grep -o 'rx-cksum=[0-9/]*' | cut -d= -f2)
  sent=$(echo "$line" | grep -o 'tx-cksum=[0-9/]*' | cut -d= -f2)
  [ "$got" = "$TXCK" ] && [ "$sent" = "$rx" ] && [ "${rx#*/}" = $VTOTAL ]
  check vchan-$role $? "16 MiB each way vs dom0's libxenvchan; dom0->guest $TXCK guest saw ${got:-?}; guest->dom0 ${sent:-?} dom0 saw $rx; $(echo "$line" | grep -o 'in [0-9]* ms') $(head -c 200 /tmp/vchan-err-$role | tr '\n' ' ')"
}
if [ "$QUICK" != 1 ]; then
srv_ready() { xenstore-read /local/domain/$DOMID/data/vchan-srv/ring-ref >/dev/null 2>&1 || guest_says 'xen-smoke: vchan-server FAIL'; }
if wait_for 120 srv_ready && ! guest_says 'xen-smoke: vchan-server FAIL'; then
  vchan_peer server -m client "$DOMID" "/local/domain/$DOMID/data/vchan-srv"
else
  check vchan-server 1 "guest did not advertise data/vchan-srv: $(tail -2 "$LOG" | tr '\n' ' ')"
fi
# vchan, guest as client: dom0's libxenvchan server (vchan-socket-proxy -m server).
xenstore-rm /local/domain/0/data/vchan-cli 2>/dev/null
vchan_peer client -m server "$DOMID" /local/domain/0/data/vchan-cli
fi

wait_for 120 guest_says 'xen-smoke: ready'
grep -q 'xen-smoke: ready' "$LOG"
check boot $? "domid $DOMID ready after $((SECONDS - t0)) s (vchan checks included)"
crashed "$NAME" && { sed 's/^/XEN-CONSOLE /' "$LOG"; echo "XEN-TEST $MODE guest-alive FAIL crashed"; finish; }
sed 's/^/XEN-CONSOLE /' "$LOG"
grep -q "xen-smoke: console ok mode=$MODE" "$LOG"; check console-ring $? "PV console ring via xenconsoled"
grep -q 'cmdline="xen-test mode='"$MODE"' ip=10.137.99.2'"$VCHAN_WORD"'"' "$LOG"; check cmdline $? "command line passed"
grep -q 'xen-smoke: clock ok' "$LOG"; check clock-and-poll $? "$(grep -o 'poll-timeout=[0-9]*us' "$LOG")"
grep -q "xen-smoke: xenstore-read ok name=$NAME domid=$DOMID" "$LOG"; check xenstore-read $? "name and domid read by the guest"
v=$(xenstore-read /local/domain/$DOMID/data/smoke 2>&1)
[ "$v" = "hello from xen-smoke" ]; check xenstore-write $? "dom0 reads data/smoke=\"$v\""
port=$(xenstore-read /local/domain/$DOMID/data/smoke-port 2>/dev/null)
"$lib/lsevtchn" "$DOMID" > /tmp/evtchn.txt 2>&1
sed 's/^/XEN-EVTCHN /' /tmp/evtchn.txt
[ -n "$port" ] && grep -iE "^ *$port: .*(unbound|waiting connection)" /tmp/evtchn.txt | grep -qi 'domain 0'
check evtchn-alloc-unbound $? "port ${port:-?}: $(grep -iE "^ *${port:-x}:" /tmp/evtchn.txt | head -1 | tr -s ' ')"
grep -q 'xen-smoke: evtchn-interdomain ok' "$LOG"; check evtchn-interdomain $? "$(grep -o 'interdomain ok [0-9<>-]*' "$LOG") loopback send + SCHEDOP_poll"
grep -q 'xen-smoke: virq-timer ok' "$LOG"; check virq-timer $? "$(grep -o 'fired after [0-9]*us' "$LOG") (set_timer_op, 20 ms)"
grep -q 'xen-smoke: grant ok' "$LOG"; check grant-share-end $? "$(grep -o 'refs=[0-9,]*' "$LOG") granted to dom0, then revoked"
grep -q 'xen-smoke: grant-map ok' "$LOG"; check grant-map $? "$(grep -o 'grant-map .*' "$LOG" | head -1)"
grep -q 'xen-smoke: netfront ok' "$LOG"
bstate=$(xenstore-read /local/domain/0/backend/vif/$DOMID/0/state 2>&1)
fstate=$(xenstore-read /local/domain/$DOMID/device/vif/0/state 2>&1)
[ $? = 0 ] && [ "$bstate" = 4 ] && [ "$fstate" = 4 ]
check netfront-connect $? "backend state $bstate, frontend state $fstate, $(ip -br link | grep -o "vif$DOMID.0 *[A-Z]*" | tr -s ' ')"
python3 /usr/local/lib/xen-test/net-check.py 10.137.99.2 $UDP_COUNT 2>&1 | tee /tmp/net.txt | sed 's/^/XEN-NET /'
grep -A1 '^Udp:' /proc/net/snmp | sed 's/^/XEN-NET-SNMP /'
for c in ping udp-echo; do
  line=$(grep "^NET $c " /tmp/net.txt)
  [ "$(echo "$line" | cut -d' ' -f3)" = ok ]; check $c $? "${line#NET $c * }"
done
if [ "$MODE" = pvh ]; then
  xl dmesg | grep -q "(d$DOMID) platform-xen: PVH domain"
  check debug-port-0xe9 $? "early output in xl dmesg"
fi
# netback: a Linux PV domU (Debian's kernel, busybox initramfs) whose vif's backend is the
# unikernel pings it; xen-smoke serves that vif with platform-xen's netback and answers ARP and
# ICMP at 10.137.98.1. The domU is PV in both modes (a Linux PVH guest cannot run on this lab).
LNAME=linux-$MODE
LLOG=/var/log/xen/console/guest-$LNAME.log
cat > /tmp/$LNAME.cfg <<EOC
name = "$LNAME"
type = "pv"
kernel = "/boot/vmlinuz-$(uname -r)"
ramdisk = "/usr/local/lib/xen-test/linux-domu.cpio.gz"
extra = "console=hvc0 quiet domu.ip=10.137.98.2 domu.peer=10.137.98.1"
memory = 192
vcpus = 1
vif = [ 'mac=00:16:3e:5a:00:03,backend=$NAME' ]
on_crash = "preserve"
EOC
rm -f "$LLOG"
l0=$(now_ms)
xl create /tmp/$LNAME.cfg > /tmp/lcreate.txt 2>&1
rc=$?
check netback-domu-create $rc "xl create of a Linux PV domU with vif backend=$NAME rc=$rc in $(( $(now_ms) - l0 )) ms $(tail -1 /tmp/lcreate.txt)"
if [ $rc = 0 ]; then
  LDOM=$(xl domid "$LNAME")
  wait_for 600 grep -q 'DOMU: done' "$LLOG"
  grep -a 'DOMU\|netfront\|PING\|packets\|bytes from' "$LLOG" | head -40 | sed 's/^/XEN-DOMU /'
  bst=$(xenstore-read /local/domain/$DOMID/backend/vif/$LDOM/0/state 2>&1)
  fst=$(xenstore-read /local/domain/$LDOM/device/vif/0/state 2>&1)
  grep -q 'xen-smoke: netback ok' "$LOG" && [ "$bst" = 4 ] && [ "$fst" = 4 ]
  check netback-connect $? "unikernel's backend state $bst, domU's netfront state $fst: $(grep -o 'xen-smoke: netback \(ok\|FAIL\).*' "$LOG" | head -1)"
  line=$(grep -ao 'DOMU-PING [0-9]*/10' "$LLOG")
  [ "$line" = "DOMU-PING 10/10" ]
  check netback-ping $? "Linux domU pings the unikernel: ${line:-no result}, $(grep -ao 'first echo reply after [0-9]* tries' "$LLOG")"
  t2=$SECONDS
  xl destroy "$LNAME" > /tmp/ldestroy.txt 2>&1
  wait_for 60 sh -c "! xl list $LDOM >/dev/null 2>&1"
  gone=$?
  wait_for 20 grep -q 'xen-smoke: netback closed' "$LOG"
  [ $gone = 0 ] && grep -q 'xen-smoke: netback closed' "$LOG"
  check netback-close $? "domU destroyed, released in $((SECONDS - t2)) s; $(grep -o 'xen-smoke: netback \(closed\|FAIL close\).*' "$LOG" | head -1) $(tail -1 /tmp/ldestroy.txt)"
fi
t1=$SECONDS
timeout 60 xl shutdown -w "$NAME" > /tmp/shutdown.txt 2>&1
rc=$?
check shutdown $rc "xl shutdown -w rc=$rc in $((SECONDS - t1)) s $(tail -1 /tmp/shutdown.txt)"
grep -q 'xen-smoke: shutdown ok request=poweroff' "$LOG"; check shutdown-acknowledged $? "guest saw control/shutdown=poweroff"
grep -a 'xen-smoke: net\|xen-smoke: heap' "$LOG" | sed 's/^/XEN-CONSOLE /'
xl list "$NAME" >/dev/null 2>&1 && xl destroy "$NAME"

# blkfront: the first boot wrote 1 MiB at sector 2048, flushed and read it back; dom0 reads the
# file, then a second boot of the image (blk=verify) reads it back through blkback again.
wline=$(grep -o 'xen-smoke: blk-write \(ok\|FAIL\) .*' "$LOG" | head -1)
wck=$(echo "$wline" | grep -o 'cksum=[0-9/]*' | cut -d= -f2)
dck=$(dd if="$DISK" bs=512 skip=2048 count=2048 2>/dev/null | cksum | tr ' ' /)
[ -n "$wck" ] && [ "$wck" = "$dck" ]
check blk-write $? "${wline#xen-smoke: blk-write } (dom0 reads the file: $dck)"
VNAME=$NAME-verify
VLOG=/var/log/xen/console/guest-$VNAME.log
sed -e "s/^name = .*/name = \"$VNAME\"/" -e "s/^extra = .*/extra = \"xen-test mode=$MODE blk=verify\"/" \
    -e '/^vif/d' /tmp/$NAME.cfg > /tmp/$VNAME.cfg
rm -f "$VLOG"
xl create /tmp/$VNAME.cfg > /tmp/vcreate.txt 2>&1
wait_for 120 grep -q 'xen-smoke: blk-verify \(ok\|FAIL\)' "$VLOG"
vline=$(grep -o 'xen-smoke: blk-verify \(ok\|FAIL\) .*' "$VLOG" | head -1)
vck=$(echo "$vline" | grep -o 'cksum=[0-9/]*' | cut -d= -f2)
[ -n "$vck" ] && [ "$vck" = "$dck" ]
check blk-after-restart $? "${vline:-no result: $(tail -3 "$VLOG" | tr '\n' ' ') $(tail -1 /tmp/vcreate.txt)}"
xl destroy "$VNAME" 2>/dev/null
# The apps (passman, ssh-agent-vm, fb-viewer) driven by qubes-dom0d, and dom0_probe.
. /usr/local/lib/xen-test/dom0-apps.sh
# The firewall unikernel as a netvm between a Linux PV AppVM and dom0.
. /usr/local/lib/xen-test/dom0-firewall.sh
# Flow 3 (split-SSH): the ssh-agent vault, two Linux PV AppVMs, qubes-qrexecd routing by policy.
. /usr/local/lib/xen-test/dom0-flows.sh
finish
