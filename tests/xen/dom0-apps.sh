# Sourced by dom0-test.sh after the smoke checks: the apps on real Xen, driven from dom0 by
# qubes-dom0d (QubesDB server, qrexec daemon, GUI daemon for one domain over platform-dom0).
D=/usr/local/lib/xen-test
DOM0D=$D/qubes-dom0d
APPMEM=${APPMEM:-192}  # passman/image.toml and ssh-agent-vm/image.toml: memory = 192

# dom0_probe: platform-dom0's own checks (xenstore, evtchn loopback, gntalloc+gntdev, unmap-notify).
timeout 120 "$D/dom0_probe" > /tmp/probe.txt 2>&1
rc=$?
sed 's/^/XEN-PROBE /' /tmp/probe.txt
while read -r _ name verdict rest; do
  case "$verdict" in
    ok:) check "probe-${name//[^a-z0-9-]/}" 0 "$rest" ;;
    FAILED:) check "probe-${name//[^a-z0-9-]/}" 1 "$rest" ;;
  esac
done < /tmp/probe.txt
sum=$(grep -o '[0-9]* passed, [0-9]* failed' /tmp/probe.txt | tail -1)
[ $rc = 0 ] && [ -n "$sum" ]; check dom0-probe $? "rc=$rc ${sum:-no summary: $(tail -2 /tmp/probe.txt | tr '\n' ' ')}"

# app_start APP IMAGE DISK EXTRA: writes the config and the QubesDB file, `xl create -p`.
app_start() {
  local app=$1 img=$2 disk=$3 extra=$4
  ANAME=$app-$MODE
  ALOG=/var/log/xen/console/guest-$ANAME.log
  AQDB=/tmp/$ANAME.qdb
  printf '/name %s\n/type AppVM\n/qubes-vm-type AppVM\n/default-user user\n/qubes-gui-enabled True\n/qubes-gui-domain-xid 0\n' "$ANAME" > "$AQDB"
  {
    echo "name = \"$ANAME\""; echo "type = \"$MODE\""; echo "kernel = \"$img\""
    echo "memory = $APPMEM"; echo "vcpus = 1"; echo "extra = \"$extra\""
    [ -n "$disk" ] && echo "disk = [ 'format=raw,vdev=xvdb,access=rw,target=$disk' ]"
    echo 'on_crash = "preserve"'
  } > /tmp/$ANAME.cfg
  rm -f "$ALOG"
  A0=$(now_ms)
  xl create -p /tmp/$ANAME.cfg > /tmp/$ANAME.create 2>&1
  local rc=$?
  check $app-create $rc "xl create -p rc=$rc in $(( $(now_ms) - A0 )) ms $(tail -1 /tmp/$ANAME.create)"
  [ $rc = 0 ] || return 1
  ADOM=$(xl domid "$ANAME")
}
# app_first_line: after `xl unpause`, waits (up to 60 s) for the first console line.
app_first_line() {
  local t=
  for _ in $(seq 1 3000); do
    [ -s "$ALOG" ] && { t=$(( $(now_ms) - A0 )); break; }
    crashed "$ANAME" && break
    sleep 0.02
  done
  echo "XEN-TEST $MODE timing $ANAME:xl-create-to-first-console-line=${t:-?}ms"
}
# dom0d ARGS...: qubes-dom0d for the current app domain; stderr to /tmp/$ANAME.err.
dom0d() {
  timeout 200 "$DOM0D" --backend dom0 --domid "$ADOM" --name "$ANAME" --qubesdb "$AQDB" --timeout 150 "$@" 2>>/tmp/$ANAME.err
}
why() {  # why: one line of context for a failing check (dom0d's error, the console's tail)
  echo "dom0d: $(grep -v '^$' /tmp/$ANAME.err 2>/dev/null | tail -1 | head -c 200) | console: $(tail -2 "$ALOG" 2>/dev/null | tr '\n' ' ' | head -c 300)"
}
# app_stop APP: `xl shutdown -w` → a clean poweroff (reason code 0). A domain that already went
# away on its own passes only if xl's log says it powered off (a crash is preserved, state c).
app_stop() {
  local t=$SECONDS rc st
  st=$(xl list "$ANAME" 2>/dev/null | awk 'NR==2{print $5}')
  if [ -z "$st" ]; then
    grep -q 'shut down, reason code 0' /var/log/xen/xl-$ANAME.log 2>/dev/null
    check $1-shutdown $? "powered off on its own before xl shutdown: $(grep -o 'shut down, reason code [0-9]*' /var/log/xen/xl-$ANAME.log 2>/dev/null | tail -1); console: $(tail -1 "$ALOG" | head -c 200)"
  elif [[ "$st" == *c* ]]; then
    check $1-shutdown 1 "crashed before shutdown: $(why)"
  else
    timeout 60 xl shutdown -w "$ANAME" > /tmp/$ANAME.shut 2>&1
    rc=$?
    [ $rc = 0 ] && grep -q 'reason code 0' /tmp/$ANAME.shut
    check $1-shutdown $? "xl shutdown -w rc=$rc in $((SECONDS - t)) s: $(tail -1 /tmp/$ANAME.shut) $([ $rc = 0 ] || why)"
  fi
  sed 's/^/XEN-APP-CONSOLE /' "$ALOG" | head -60
  sed 's/^/XEN-APP-DOM0D /' /tmp/$ANAME.err 2>/dev/null | head -20
  xl list "$ANAME" >/dev/null 2>&1 && xl destroy "$ANAME"
}

if [ ! -x "$DOM0D" ]; then
  check apps 1 "no $DOM0D in the dom0 root"
else
  # passman with a 64 MiB file-backed vault disk (xvdb).
  PDISK=/var/lib/xen-test-passman.img
  rm -f "$PDISK"; truncate -s 64M "$PDISK"
  if app_start passman "$D/passman.vmlinuz" "$PDISK" "passman.idle=600"; then
    rm -f /tmp/$ANAME.err
    # dom0d first (its QubesDB server is then up before the VM looks for it), then unpause.
    printf 'correct horse\nkdf=argon2id:8:1:1\ntime=1700000000\n' > /tmp/pm-init.in
    dom0d call passman.Init < /tmp/pm-init.in > /tmp/pm-init.out &
    pid=$!
    xl unpause "$ANAME"
    app_first_line
    wait $pid; rc=$?
    check passman-init $rc "passman.Init (argon2id:8:1:1) exit $rc $(head -c 100 /tmp/pm-init.out | tr '\n' ' ') $([ $rc = 0 ] || why)"
    printf 'hunter2\nusername: me\n' | dom0d call passman.Put+github.com > /tmp/pm-put.out; rc=$?
    check passman-put $rc "passman.Put+github.com exit $rc $([ $rc = 0 ] || why)"
    got=$(dom0d call passman.Get+github.com < /dev/null); rc=$?
    [ $rc = 0 ] && [ "$got" = hunter2 ]
    check passman-get $? "passman.Get+github.com exit $rc, got \"$(echo "$got" | head -c 40)\" $([ "$got" = hunter2 ] || why)"
    # The vault is on the disk: its header is no longer zeros.
    nz=$(tr -d '\0' < "$PDISK" | wc -c)
    [ "$nz" -gt 0 ]; check passman-disk $? "$nz non-zero bytes on the 64 MiB vault disk (xvdb)"
    app_stop passman
  fi

  # ssh-agent-vm with its key-store disk: request-identities over qrexec → IDENTITIES_ANSWER.
  SDISK=/var/lib/xen-test-ssh.img
  rm -f "$SDISK"; truncate -s 64M "$SDISK"
  if app_start ssh-agent-vm "$D/ssh-agent-vm.vmlinuz" "$SDISK" ""; then
    rm -f /tmp/$ANAME.err
    printf '\0\0\0\1\13' > /tmp/ssh-req.in
    dom0d call qubes.SshAgent+work < /tmp/ssh-req.in > /tmp/ssh-ans.out &
    pid=$!
    xl unpause "$ANAME"
    app_first_line
    wait $pid; rc=$?
    ans=$(od -An -tx1 /tmp/ssh-ans.out | tr -s ' \n' ' ' | sed 's/^ //;s/ $//')
    [ $rc = 0 ] && [ "$ans" = "00 00 00 05 0c 00 00 00 00" ]
    check ssh-agent-identities $? "qubes.SshAgent+work request-identities exit $rc, answer [$ans] $([ "$ans" = "00 00 00 05 0c 00 00 00 00" ] || why)"
    app_stop ssh-agent-vm
  fi

  # fb-viewer: the GUI handshake with a PNG opened through qubes.OpenInVM.
  if app_start fb-viewer "$D/fb-viewer.vmlinuz" "" ""; then
    rm -f /tmp/$ANAME.err
    python3 - <<'EOP'
import struct, zlib
w, h = 40, 30
raw = b"".join(b"\0" + b"".join(b"\xff\0\0" if x < w // 2 else b"\0\0\xff" for x in range(w)) for _ in range(h))
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
open("/tmp/small.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
EOP
    dom0d gui-handshake --open /tmp/small.png --screenshot /tmp/shot.png > /tmp/gui.out &
    pid=$!
    xl unpause "$ANAME"
    app_first_line
    wait $pid; rc=$?
    [ $rc = 0 ] && grep -q 'mapped' /tmp/gui.out
    check fb-viewer-window $? "gui-handshake --open small.png exit $rc: $(head -1 /tmp/gui.out) $([ $rc = 0 ] || why)"
    # The screenshot (dom0d's 8-bit RGB PNG of the mapped framebuffer) shows the picture's colours.
    python3 - /tmp/shot.png > /tmp/shot.txt 2>&1 <<'EOP'
import struct, sys, zlib
d = open(sys.argv[1], "rb").read()
assert d[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
i, idat, w = 8, b"", 0
while i + 8 <= len(d):
    n, t = struct.unpack(">I4s", d[i:i + 8])
    body = d[i + 8:i + 8 + n]
    if t == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert (depth, ctype) == (8, 2), "not 8-bit RGB"
    elif t == b"IDAT":
        idat += body
    i += 12 + n
raw = zlib.decompress(idat)
stride = 1 + 3 * w
red = blue = 0
for y in range(h):
    row = raw[y * stride:(y + 1) * stride]
    assert row[0] == 0, "filtered row"
    for x in range(w):
        r, g, b = row[1 + 3 * x:4 + 3 * x]
        red += r > 200 and g < 60 and b < 60
        blue += b > 200 and r < 60 and g < 60
print(f"{w}x{h} screenshot: {red} red and {blue} blue pixels")
sys.exit(0 if red and blue else 1)
EOP
    check fb-viewer-pixels $? "$(tail -1 /tmp/shot.txt) (the picture: red left half, blue right half)"
    app_stop fb-viewer
  fi
fi
