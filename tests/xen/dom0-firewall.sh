# Sourced by dom0-test.sh after dom0-apps.sh: the firewall unikernel as a netvm on real Xen.
# dom0 plays sys-net (10.137.99.1 on xenbr0: fw-peer.py's HTTP, DNS and bench sink), the
# firewall's uplink is a netfront on xenbr0, its QubesDB is served by `qubes-dom0d serve`
# (qvm-firewall = rewriting that file), and a Linux PV AppVM (domu-fw-init.sh) sits behind it.
D=/usr/local/lib/xen-test
DOM0D=$D/qubes-dom0d
FWMEM=${FWMEM:-16}          # MiB: issue 5 asks the firewall to boot in 16
UPIP=10.137.99.1            # dom0 = sys-net
FWIP=10.137.99.10           # the firewall's /qubes-ip: uplink address and its clients' gateway
CLIP=10.137.0.20            # the AppVM
FW=fw-$MODE
FWLOG=/var/log/xen/console/guest-$FW.log
FWQDB=/tmp/$FW.qdb
CL=fw-client-$MODE
CLLOG=/var/log/xen/console/guest-$CL.log
PEERLOG=/tmp/fw-peer.log
type now_ms > /dev/null 2>&1 || now_ms() { date +%s%3N; }
modprobe -a xen-evtchn xen-gntdev xen-gntalloc 2>/dev/null
ip link add xenbr0 type bridge 2>/dev/null
ip addr add $UPIP/24 dev xenbr0 2>/dev/null
ip link set xenbr0 up

# fw_qdb RULE...: the firewall's QubesDB (as qubes-sim's qdb.rs writes a netvm's) with the client's
# qvm-firewall rules 0000, 0001, ...; replaced atomically, `qubes-dom0d serve` applies a change
# within 0.5 s as dom0 does (RM the client's directory, the rules, the commit marker last).
fw_qdb() {
  {
    printf '/name %s\n/type StandaloneVM\n/qubes-vm-type NetVM\n' "$FW"
    printf '/qubes-ip %s\n/qubes-netmask 255.255.255.255\n/qubes-gateway %s\n' $FWIP $UPIP
    # Upstream DNS: dom0 itself (the lab's sys-net does not DNAT 10.139.1.1 to a resolver).
    printf '/qubes-primary-dns %s\n/qubes-secondary-dns %s\n' $UPIP $UPIP
    printf '/qubes-netvm-network %s\n/qubes-netvm-gateway %s\n' $FWIP $FWIP
    printf '/qubes-netvm-netmask 255.255.255.255\n'
    printf '/qubes-netvm-primary-dns 10.139.1.1\n/qubes-netvm-secondary-dns 10.139.1.2\n'
    printf '/connected-ips %s\n/qubes-firewall/%s/policy drop\n' $CLIP $CLIP
    local i=0 r
    for r in "$@"; do printf '/qubes-firewall/%s/%04d %s\n' $CLIP $i "$r"; i=$((i + 1)); done
    printf '/qubes-firewall/%s\n' $CLIP
  } > $FWQDB.new && mv $FWQDB.new $FWQDB
}
fw_why() {  # one line of context: dom0d's last error, the firewall's console tail
  echo "dom0d: $(grep -v '^$' /tmp/$FW.err 2>/dev/null | tail -1 | head -c 160) | fw: $(tail -3 "$FWLOG" 2>/dev/null | tr '\n' ' ' | head -c 300)"
}
rules_applied() { grep -c "firewall rules for $CLIP" "$FWLOG" 2>/dev/null; }
last_fetch() { grep -ao 'FW-FETCH [0-9]*' "$CLLOG" 2>/dev/null | tail -1 | cut -d' ' -f2; }
# fetched_after N: dom0's server saw a request through the firewall (NATed to its address) for
# a fetch numbered above N.
fetched_after() {
  grep -o "HTTP $FWIP /seq-[0-9]*" $PEERLOG 2>/dev/null | cut -d- -f2 | awk -v n="$1" '$1 > n {f=1} END {exit !f}'
}

# fw_serve: qubes-dom0d serving the firewall's QubesDB (and refusing its calls) in the background.
fw_serve() {
  timeout 1200 "$DOM0D" --backend dom0 --domid "$FWID" --name "$FW" --qubesdb "$FWQDB" --timeout 150 \
    serve 1100 >> /tmp/$FW.serve 2>> /tmp/$FW.err &
  SERVE=$!
}
# fw_drops: the firewall's drop log and counters (qubes.UnikernelFirewallDrops, dom0 only) into
# /tmp/$FW.drops. One qubes-dom0d per domain at a time: the QubesDB server stops meanwhile (the
# run loop reconnects to the next one).
# fw_serve_stop: removing its entries file ends `serve` cleanly (its vchans closed and its
# advertisement removed; a killed one would leave them for the next qubes-dom0d to trip on).
fw_serve_stop() {
  [ -n "$SERVE" ] || return
  mv "$FWQDB" "$FWQDB.keep"
  wait_for 15 sh -c "! kill -0 $SERVE 2>/dev/null" || kill "$SERVE" 2>/dev/null
  wait "$SERVE" 2>/dev/null
  mv "$FWQDB.keep" "$FWQDB"
}
fw_drops() {
  fw_serve_stop
  timeout 120 "$DOM0D" --backend dom0 --domid "$FWID" --name "$FW" --qubesdb "$FWQDB" --timeout 60 \
    call qubes.UnikernelFirewallDrops > /tmp/$FW.drops 2>> /tmp/$FW.err
  local rc=$?
  sed 's/^/XEN-FW-DROPS /' /tmp/$FW.drops | tail -20
  fw_serve
  return $rc
}
cl_said() { grep -aq "$1" "$CLLOG" 2>/dev/null || crashed "$FW" || crashed "$CL"; }

fw_run() {
  [ -x "$DOM0D" ] && [ -f $D/firewall.vmlinuz ] || { check fw-create 1 "no $DOM0D or firewall image"; return; }
  python3 -u $D/fw-peer.py $UPIP $((BENCH_MIB * 1048576)) > $PEERLOG 2>&1 &
  PEER=$!
  fw_qdb "action=accept"
  cat > /tmp/$FW.cfg <<EOC
name = "$FW"
type = "$MODE"
kernel = "$D/firewall.vmlinuz"
memory = $FWMEM
vcpus = 1
vif = [ 'mac=00:16:3e:5e:6c:10,bridge=xenbr0' ]
on_crash = "preserve"
EOC
  rm -f "$FWLOG" /tmp/$FW.err
  F0=$(now_ms)
  xl create -p /tmp/$FW.cfg > /tmp/$FW.create 2>&1
  local rc=$?
  check fw-create $rc "xl create -p ($FWMEM MiB) rc=$rc in $(( $(now_ms) - F0 )) ms $(tail -1 /tmp/$FW.create)"
  [ $rc = 0 ] || return
  FWID=$(xl domid "$FW")
  # QubesDB first (the run loop waits 30 s for it), then unpause.
  rm -f /tmp/$FW.serve
  fw_serve
  xl unpause "$FW"
  wait_for 120 sh -c "grep -q 'uplink up' $FWLOG || ! xl list $FW > /dev/null 2>&1"
  local bst fst
  bst=$(xenstore-read /local/domain/0/backend/vif/$FWID/0/state 2>&1)
  fst=$(xenstore-read /local/domain/$FWID/device/vif/0/state 2>&1)
  grep -q 'uplink up' "$FWLOG" && [ "$bst" = 4 ] && [ "$fst" = 4 ]
  check fw-uplink $? "netfront on xenbr0: backend $bst frontend $fst; $(grep -ao 'uplink up.*' "$FWLOG" | head -1) $(grep -ao 'heap [0-9].*' "$FWLOG" | head -1) $(crashed $FW && fw_why)"
  crashed "$FW" && return

  # The AppVM: a Linux PV domU whose vif's backend is the firewall.
  cat > /tmp/$CL.cfg <<EOC
name = "$CL"
type = "pv"
kernel = "/boot/vmlinuz-$(uname -r)"
ramdisk = "$D/linux-domu-fw.cpio.gz"
extra = "console=hvc0 quiet fw.ip=$CLIP fw.gw=$FWIP fw.dns=10.139.1.1 fw.url=http://$UPIP:8080${BENCH_ARG}"
memory = 128
vcpus = 1
vif = [ 'backend=$FW,ip=$CLIP,mac=00:16:3e:5e:6c:00' ]
on_crash = "preserve"
EOC
  rm -f "$CLLOG"
  local c0
  c0=$(now_ms)
  xl create /tmp/$CL.cfg > /tmp/$CL.create 2>&1
  rc=$?
  check fw-client-create $rc "Linux PV AppVM, vif backend=$FW ip=$CLIP, rc=$rc in $(( $(now_ms) - c0 )) ms $(tail -1 /tmp/$CL.create)"
  [ $rc = 0 ] || return
  CLID=$(xl domid "$CL")
  wait_for 300 cl_said FW-PING
  local line
  line=$(grep -ao 'FW-PING .*' "$CLLOG" | head -1)
  bst=$(xenstore-read /local/domain/$FWID/backend/vif/$CLID/0/state 2>&1)
  fst=$(xenstore-read /local/domain/$CLID/device/vif/0/state 2>&1)
  grep -aq "client vif $CLID.0 up" "$FWLOG" && [ "$bst" = 4 ] && [ "$fst" = 4 ]
  check fw-netback-connect $? "firewall's backend state $bst, AppVM's netfront $fst: $(grep -ao "client vif $CLID.0 up.*" "$FWLOG" | head -1)"
  case "$line" in "FW-PING 5/5"*) true ;; *) false ;; esac
  check fw-ping-gateway $? "AppVM pings the firewall at $FWIP: ${line:-no result $(fw_why)}"
  wait_for 60 cl_said FW-DNS
  line=$(grep -ao 'FW-DNS .*' "$CLLOG" | head -1)
  grep -q "DNS $FWIP fw-test.lab" $PEERLOG && echo "$line" | grep -q "$UPIP"
  check fw-dns $? "nslookup via 10.139.1.1 -> dom0's resolver: $(grep -o "DNS $FWIP fw-test.lab.*" $PEERLOG | head -1); ${line:0:200}"
  wait_for 180 sh -c "grep -q 'HTTP $FWIP /seq-' $PEERLOG || ! xl list $CL > /dev/null 2>&1"
  local t_fwd=$(( $(now_ms) - F0 ))
  fetched_after 0
  local fwd=$?
  check fw-fetch $fwd "AppVM's wget of dom0's page through the firewall (NAT to $FWIP): $(grep -o "HTTP $FWIP .*" $PEERLOG | head -1); $(grep -ao 'FW-FETCH [0-9]* ok.*' "$CLLOG" | head -1)"
  if [ $fwd = 0 ]; then
    echo "XEN-TEST $MODE timing firewall-$MODE:xl-create-to-forwarding=${t_fwd}ms"
    fw_rules
  else
    grep -A1 -E '^(Ip|Tcp|Udp):' /proc/net/snmp | sed 's/^/XEN-FW-DOM0-SNMP /'
    ip -s link show "vif$FWID.0" | sed 's/^/XEN-FW-DOM0-VIF /'
    fw_drops
    check fw-rule-deny 1 "skipped: nothing forwarded"
    check fw-rule-allow 1 "skipped: nothing forwarded"
  fi
  fw_release
}

# fw_rules: the bench, then qvm-firewall at runtime: deny, then allow again.
fw_rules() {
  local line
  if [ -n "$BENCH_ARG" ]; then
    wait_for 600 cl_said FW-BENCH-SENT
    line=$(grep -o "SINK $FWIP .*" $PEERLOG | tail -1)
    FW_BENCH=$(echo "$line" | sed -n 's/.*= \([0-9.]*\) MB\/s/\1/p')
    [ -n "$FW_BENCH" ]; check fw-bench $? "AppVM -> firewall -> dom0, $BENCH_MIB MiB: ${line:-no result: $(grep -ao 'FW-BENCH.*' "$CLLOG")}"
  fi

  # qvm-firewall at runtime: deny tcp to dom0's HTTP port, commit; the next fetch is blocked.
  local n0 k0 t0 t1 n1
  k0=$(rules_applied)
  fw_qdb "action=drop proto=tcp dst4=$UPIP/32 dstports=8080-8080" "action=accept"
  t0=$(now_ms)
  wait_for 30 sh -c "[ \$(grep -c 'firewall rules for $CLIP' $FWLOG) -gt $k0 ]"
  t1=$(now_ms)
  n0=$(last_fetch)
  wait_for 60 sh -c "[ \$(grep -ao 'FW-FETCH [0-9]*' $CLLOG | tail -1 | cut -d' ' -f2) -ge $((n0 + 3)) ]"
  n1=$(last_fetch)
  # The fetch running at the commit (n0 + 1) may still have gone through; later ones must not.
  ! fetched_after $((n0 + 1)) && [ "$n1" -ge $((n0 + 3)) ] && \
    ! grep -aE "FW-FETCH ($((n0 + 2))|$((n0 + 3))) ok" "$CLLOG" > /dev/null
  local deny=$?
  fw_drops
  grep -q "$CLIP" /tmp/$FW.drops && grep -qi "tcp" /tmp/$FW.drops
  check fw-drop-log $? "qubes.UnikernelFirewallDrops from dom0: $(grep -i "$CLIP.*tcp\|tcp.*$CLIP" /tmp/$FW.drops | tail -1 | head -c 160); $(grep -o 'counters: .*' /tmp/$FW.drops)"
  [ $deny = 0 ]
  check fw-rule-deny $? "drop tcp $UPIP:8080 committed; applied $((t1 - t0)) ms after the write ($(grep -ao "firewall rules for $CLIP.*" "$FWLOG" | tail -1)); fetches $((n0 + 2))..$n1: $(grep -aE "FW-FETCH ($((n0 + 2))|$((n0 + 3))) " "$CLLOG" | tr '\n' ' ')"
  k0=$(rules_applied)
  fw_qdb "action=accept"
  wait_for 30 sh -c "[ \$(grep -c 'firewall rules for $CLIP' $FWLOG) -gt $k0 ]"
  n0=$(last_fetch)
  wait_for 60 fetched_after "$n0"
  check fw-rule-allow $? "accept again: fetch after $n0 reached dom0: $(grep -o "HTTP $FWIP .*" $PEERLOG | tail -1)"

}

# fw_release: the toolstack removes the AppVM: the firewall must unmap, say Closed, and drop its
# backend dir; then `xl shutdown -w` of the firewall must be a clean poweroff.
fw_release() {
  local t0 rc
  t0=$SECONDS
  xl destroy "$CL" > /tmp/$CL.destroy 2>&1
  wait_for 60 sh -c "! xl list $CLID > /dev/null 2>&1"
  local gone=$?
  wait_for 30 sh -c "! xenstore-read /local/domain/$FWID/backend/vif/$CLID/0/state > /dev/null 2>&1"
  local dir_gone=$?
  [ $gone = 0 ] && [ $dir_gone = 0 ] && ! crashed "$FW" && grep -aq "client vif $CLID.0 \(released\|gone\)" "$FWLOG"
  check fw-vif-release $? "AppVM destroyed and released in $((SECONDS - t0)) s; firewall's backend dir $([ $dir_gone = 0 ] && echo removed || echo "still there: state $(xenstore-read /local/domain/$FWID/backend/vif/$CLID/0/state 2>&1)"); $(grep -ao "client vif $CLID.0 \(released\|gone\).*" "$FWLOG" | tr '\n' ' ') $(tail -1 /tmp/$CL.destroy)"

  t0=$SECONDS
  timeout 60 xl shutdown -w "$FW" > /tmp/$FW.shut 2>&1
  rc=$?
  [ $rc = 0 ] && grep -q 'reason code 0' /tmp/$FW.shut
  check fw-shutdown $? "xl shutdown -w rc=$rc in $((SECONDS - t0)) s: $(tail -1 /tmp/$FW.shut) $([ $rc = 0 ] || fw_why)"
}

# fw_linux_bench: the same AppVM -> dom0 transfer through a Linux PV domU that forwards as a
# Linux sys-firewall does (Linux's netback for the AppVM's vif, nftables masquerade to its
# uplink on xenbr0; domu-fw-init.sh's router role). No `xl devd` runs there, so dom0 writes the
# backend's hotplug-status, which Linux's netback waits for before it connects.
fw_linux_bench() {
  local LFW=linux-fw-$MODE CL2=fw-client2-$MODE LFWIP=10.137.99.11 CL2IP=10.137.0.21
  local LFWLOG=/var/log/xen/console/guest-linux-fw-$MODE.log
  local CL2LOG=/var/log/xen/console/guest-fw-client2-$MODE.log
  local rc LFWID CL2ID line
  cat > /tmp/$LFW.cfg <<EOC
name = "$LFW"
type = "pv"
kernel = "/boot/vmlinuz-$(uname -r)"
ramdisk = "$D/linux-domu-fw.cpio.gz"
extra = "console=hvc0 quiet fw.role=router fw.up=$LFWIP/24 fw.upgw=$UPIP fw.gw=$LFWIP fw.client=$CL2IP"
memory = 256
vcpus = 1
vif = [ 'mac=00:16:3e:5e:6c:11,bridge=xenbr0' ]
on_crash = "preserve"
EOC
  rm -f "$LFWLOG" "$CL2LOG"
  xl create /tmp/$LFW.cfg > /tmp/$LFW.create 2>&1
  rc=$?
  LFWID=$(xl domid "$LFW" 2>/dev/null)
  [ $rc = 0 ] && wait_for 240 sh -c "grep -aq 'LFW: \(ready\|nft FAILED\)' $LFWLOG || ! xl list $LFW > /dev/null 2>&1"
  grep -aq 'LFW: ready' "$LFWLOG" && grep -aq 'LFW: nft masquerade' "$LFWLOG"
  check linux-fw-up $? "Linux PV domU with nftables masquerade: rc=$rc $(grep -ao 'LFW: \(nft\|netfilter\|xen-netback\).*' "$LFWLOG" | tr '\n' ' ' | head -c 300)"
  if grep -aq 'LFW: ready' "$LFWLOG"; then
    sed -e "s/^name = .*/name = \"$CL2\"/" \
        -e "s/fw.ip=$CLIP fw.gw=$FWIP/fw.ip=$CL2IP fw.gw=$LFWIP/" \
        -e "s/^vif = .*/vif = [ 'backend=$LFW,ip=$CL2IP,mac=00:16:3e:5e:6c:00' ]/" /tmp/$CL.cfg > /tmp/$CL2.cfg
    # In the background: `xl create` may wait for the backend, which waits for hotplug-status.
    ( for _ in $(seq 1 240); do
        CL2ID=$(xl domid "$CL2" 2>/dev/null) &&
          xenstore-read /local/domain/$LFWID/backend/vif/$CL2ID/0/state > /dev/null 2>&1 &&
          xenstore-write /local/domain/$LFWID/backend/vif/$CL2ID/0/hotplug-status connected && break
        sleep 0.5
      done ) &
    timeout 120 xl create /tmp/$CL2.cfg > /tmp/$CL2.create 2>&1
    wait_for 600 sh -c "grep -aq 'FW-BENCH-SENT' $CL2LOG || ! xl list $CL2 > /dev/null 2>&1"
    line=$(grep -o "SINK $LFWIP .*" $PEERLOG | tail -1)
    LINUX_BENCH=$(echo "$line" | sed -n 's/.*= \([0-9.]*\) MB\/s/\1/p')
  fi
  [ -n "$LINUX_BENCH" ]
  check linux-fw-bench $? "AppVM -> Linux PV firewall -> dom0, $BENCH_MIB MiB: ${line:-no result: $(grep -a 'FW-\|LFW' "$CL2LOG" "$LFWLOG" 2>/dev/null | tail -4 | tr '\n' ' ' | head -c 300)}"
  grep -av '^ *$' "$LFWLOG" 2>/dev/null | tail -30 | sed 's/^/XEN-FW-LINUXFW /'
  grep -a 'FW-' "$CL2LOG" 2>/dev/null | head -10 | sed 's/^/XEN-FW-DOMU2 /'
  xl destroy "$CL2" 2>/dev/null
  xl destroy "$LFW" 2>/dev/null
}

BENCH_MIB=${BENCH_MIB:-32}
BENCH_ARG=
[ "$QUICK" = 1 ] && BENCH_MIB=8
BENCH_ARG=" fw.bench=$UPIP:5001:$BENCH_MIB"
FW_BENCH=
LINUX_BENCH=
SERVE=
fw_run
fw_serve_stop
[ -n "$FW_BENCH" ] && fw_linux_bench
if [ -n "$FW_BENCH" ] && [ -n "$LINUX_BENCH" ]; then
  echo "XEN-BENCH firewall-$MODE unikernel=$FW_BENCH MB/s linux=$LINUX_BENCH MB/s ratio=$(awk -v u="$FW_BENCH" -v l="$LINUX_BENCH" 'BEGIN { if (l > 0) printf "%.2f", u / l; else print "?" }') ($BENCH_MIB MiB AppVM -> dom0, same run)"
fi
sed 's/^/XEN-FW-CONSOLE /' "$FWLOG" 2>/dev/null | head -80
sed 's/^/XEN-FW-DOM0D /' /tmp/$FW.err /tmp/$FW.serve 2>/dev/null | head -20
grep -av '^ *$' "$CLLOG" 2>/dev/null | tail -60 | sed 's/^/XEN-FW-DOMU /'
sed 's/^/XEN-FW-PEER /' $PEERLOG | head -40
xl list "$CL" > /dev/null 2>&1 && xl destroy "$CL"
xl list "$FW" > /dev/null 2>&1 && xl destroy "$FW"
kill "$PEER" 2>/dev/null
