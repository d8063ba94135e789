#!/bin/bash
# Runs in the lab's dom0 at boot (xen-test.service): boots xen-smoke as a domU in the mode the
# kernel command line names (xentest.mode=pv|pvh), checks what it did from dom0's side, prints
# one "XEN-TEST <mode> <check> ok|FAIL <detail>" line per check on the console, powers off.
set -uo pipefail
exec > /dev/console 2>&1
MODE=$(sed -n 's/.*xentest\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)
MODE=${MODE:-pvh}
IMG=/usr/local/lib/xen-test/xen-smoke.vmlinuz
NAME=smoke-$MODE
LOG=/var/log/xen/console/guest-$NAME.log
lib=/usr/lib/xen-4.17/bin

check() {  # check NAME OK? DETAIL
  if [ "$2" = 0 ]; then echo "XEN-TEST $MODE $1 ok $3"; else echo "XEN-TEST $MODE $1 FAIL $3"; fi
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
"$lib/readnotes" "$IMG" > /tmp/notes.txt 2>&1
sed 's/^/XEN-NOTES /' /tmp/notes.txt
grep -qi 'PHYS32_ENTRY' /tmp/notes.txt && grep -qi 'HYPERCALL_PAGE' /tmp/notes.txt && grep -qi 'xen-3.0' /tmp/notes.txt
check elf-notes $? "readnotes shows PHYS32_ENTRY, HYPERCALL_PAGE, xen-3.0"

cat > /tmp/$NAME.cfg <<EOC
name = "$NAME"
type = "$MODE"
kernel = "$IMG"
memory = 32
vcpus = 1
extra = "xen-test mode=$MODE"
on_crash = "preserve"
EOC
rm -f "$LOG"
t0=$SECONDS
xl create /tmp/$NAME.cfg > /tmp/create.txt 2>&1
rc=$?
check create $rc "xl create rc=$rc $(tail -1 /tmp/create.txt)"
[ $rc = 0 ] || finish
DOMID=$(xl domid "$NAME")
wait_for 60 grep -q 'xen-smoke: ready' "$LOG"
check boot $? "domid $DOMID ready after $((SECONDS - t0)) s"
sed 's/^/XEN-CONSOLE /' "$LOG"
grep -q "xen-smoke: console ok mode=$MODE" "$LOG"; check console-ring $? "PV console ring via xenconsoled"
grep -q 'cmdline="xen-test mode='"$MODE"'"' "$LOG"; check cmdline $? "command line passed"
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
if [ "$MODE" = pvh ]; then
  xl dmesg | grep -q "(d$DOMID) platform-xen: PVH domain"
  check debug-port-0xe9 $? "early output in xl dmesg"
fi
t1=$SECONDS
timeout 60 xl shutdown -w "$NAME" > /tmp/shutdown.txt 2>&1
rc=$?
check shutdown $rc "xl shutdown -w rc=$rc in $((SECONDS - t1)) s $(tail -1 /tmp/shutdown.txt)"
grep -q 'xen-smoke: shutdown ok request=poweroff' "$LOG"; check shutdown-acknowledged $? "guest saw control/shutdown=poweroff"
xl list "$NAME" >/dev/null 2>&1 && xl destroy "$NAME"
finish
