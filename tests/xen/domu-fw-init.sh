#!/bin/busybox sh
# /init of the lab's Linux PV AppVM behind the firewall unikernel (Debian's kernel, busybox-static,
# xen-netfront.ko). eth0 is set up as Qubes' setup-ip does: fw.ip/32, the gateway on-link with a
# permanent neighbour entry fe:ff:ff:ff:ff:ff, default route via it. Then, printed on hvc0
# (xenconsoled logs it): "FW-PING n/5" (pings of the gateway), "FW-DNS ..." (a lookup through
# the virtual resolver), and "FW-FETCH <n> ok|fail" once a second (wget of dom0's page) until
# destroyed; with fw.bench=HOST:PORT:MIB, after the first fetch that works, it sends MIB MiB to
# HOST:PORT once ("FW-BENCH-SENT"; dom0's sink times it).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec > /dev/console 2>&1 < /dev/null
arg() { sed -n "s/.*fw\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
IP=$(arg ip); GW=$(arg gw); URL=$(arg url); DNS=$(arg dns); BENCH=$(arg bench)
if [ "$(arg role)" = router ]; then
  # The Linux counterpart of the firewall (bench only): a PV driver domain with Linux's netback
  # for the client's vif and nftables masquerade to its uplink, set up as Qubes' vif-route-qubes
  # and qubes-ipv4.nft do (client /32 route, gateway address on the vif, proxy ARP).
  UP=$(arg up); UPGW=$(arg upgw); CLIENT=$(arg client)
  echo "LFW: init, kernel $(uname -r), uplink $UP via $UPGW, client $CLIENT gateway $GW"
  insmod /xen-netfront.ko
  # The kernel's own module requests (nft's expressions, crc32c for libcrc32c) need a modprobe.
  echo /bin/modprobe > /proc/sys/kernel/modprobe
  modprobe xen-netback && echo "LFW: xen-netback loaded"
  for m in crc32c_generic nf_tables nft_chain_nat nft_masq; do
    modprobe "$m" 2> /tmp/mod.err || echo "LFW: netfilter module $m FAILED: $(cat /tmp/mod.err)"
  done
  i=0
  until [ -e /sys/class/net/eth0 ] || [ $i -ge 120 ]; do sleep 1; i=$((i + 1)); done
  ip link set lo up
  ip link set eth0 up
  ip addr add "$UP" dev eth0
  ip route add default via "$UPGW"
  echo 1 > /proc/sys/net/ipv4/ip_forward
  printf 'table ip qubes {\n chain postrouting {\n  type nat hook postrouting priority srcnat; policy accept;\n  oifname "eth0" masquerade\n }\n}\n' > /etc/fw.nft
  if nft -f /etc/fw.nft 2> /tmp/nft.err; then
    echo "LFW: nft masquerade on eth0: $(nft list ruleset | tr -s ' \n' ' ')"
    echo "LFW: ready"
  else
    echo "LFW: nft FAILED: $(cat /tmp/nft.err)"
  fi
  done_vifs=
  while :; do
    for v in /sys/class/net/vif*; do
      [ -e "$v" ] || continue
      n=${v##*/}
      case " $done_vifs " in *" $n "*) continue ;; esac
      ip link set "$n" up
      ip addr add "$GW/32" dev "$n"
      echo 1 > "/proc/sys/net/ipv4/conf/$n/proxy_arp"
      ip route add "$CLIENT/32" dev "$n"
      done_vifs="$done_vifs $n"
      echo "LFW: $n up for $CLIENT"
    done
    sleep 1
  done
fi
echo "FW-DOMU: init, kernel $(uname -r), ip $IP gateway $GW"
insmod /xen-netfront.ko && echo "FW-DOMU: xen-netfront loaded"
i=0
until [ -e /sys/class/net/eth0 ] || [ $i -ge 120 ]; do sleep 1; i=$((i + 1)); done
ip link set eth0 up
ip addr add "$IP/32" dev eth0
ip neigh replace "$GW" lladdr fe:ff:ff:ff:ff:ff dev eth0 nud permanent
ip route add "$GW" dev eth0
ip route add default via "$GW" dev eth0
echo "nameserver $DNS" > /etc/resolv.conf
echo "FW-DOMU: eth0 $(cat /sys/class/net/eth0/address) up after $i s"
# The firewall connects our vif when it sees the frontend: the first answers may take a while.
i=0
until ping -c 1 -W 2 "$GW" > /dev/null 2>&1 || [ $i -ge 60 ]; do i=$((i + 1)); done
ping -c 5 -W 3 "$GW" > /tmp/ping.txt 2>&1
got=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/ping.txt)
echo "FW-PING ${got:-0}/5 (first reply after $i tries) $(grep -o 'min/avg/max = [0-9./]*' /tmp/ping.txt)"
if [ -n "$DNS" ]; then
  echo "FW-DNS $(nslookup fw-test.lab "$DNS" 2>&1 | tr '\n' ' ')"
fi
n=0
while :; do
  n=$((n + 1))
  # busybox 1.35's wget crashes on -T: bound it with timeout instead.
  if timeout 5 wget -q -O /tmp/page "$URL/seq-$n" 2>/dev/null; then
    echo "FW-FETCH $n ok $(head -c 40 /tmp/page)"
    if [ -n "$BENCH" ]; then
      h=${BENCH%%:*}; rest=${BENCH#*:}; p=${rest%%:*}; mib=${rest#*:}
      dd if=/dev/zero bs=65536 count=$((mib * 16)) 2>/dev/null | nc "$h" "$p"
      echo "FW-BENCH-SENT $mib MiB rc=$?"
      BENCH=
    fi
  else
    echo "FW-FETCH $n fail"
    [ $n = 3 ] && grep -A1 -E '^(Ip|Tcp|Udp):' /proc/net/snmp | sed 's/^/FW-SNMP /'
  fi
  sleep 1
done
