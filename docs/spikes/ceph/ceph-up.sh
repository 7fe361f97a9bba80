#!/bin/bash
# ceph-up.sh - start a throw-away single-node Ceph (pacific 16.2) cluster:
#   1 mon, 1 mgr, 1 bluestore OSD, cephx on, everything on 127.0.0.1,
#   everything (config, keys, data, sockets, logs, pid files) under one private
#   directory; /etc/ceph and /var/lib/ceph are not used.
#
# Usage:  ceph-up.sh                 # creates /tmp/ys-ceph-XXXXXX
#   env:  YS_CEPH_PARENT=/tmp        parent of the cluster dir
#         YS_CEPH_OSD_BACKEND=file   file (plain sparse file) | loop (loop device)
#         YS_CEPH_POOL=yunstack      rbd pool to create
#         YS_CEPH_OSD_SIZE=10G       size of the sparse OSD file
#         YS_CEPH_WAIT_HEALTH=1      wait for HEALTH_OK (0 = stop once rbd works)
#         YS_CEPH_MGR=1              0 = no ceph-mgr (saves ~300 MiB RSS and ~5 s
#                                    CPU; rbd I/O works; cluster stats, rbd_support
#                                    commands and health of PGs need the mgr)
# On success prints shell assignments (CEPH_DIR=..., CEPH_CONF=..., ...) on
# stdout and writes the same to $CEPH_DIR/env.  Tear down: ceph-down.sh DIR
set -euo pipefail

PARENT=${YS_CEPH_PARENT:-/tmp}
BACKEND=${YS_CEPH_OSD_BACKEND:-file}
POOL=${YS_CEPH_POOL:-yunstack}
OSD_SIZE=${YS_CEPH_OSD_SIZE:-10G}
WAIT_HEALTH=${YS_CEPH_WAIT_HEALTH:-1}
MGR=${YS_CEPH_MGR:-1}
[ "$MGR" = 1 ] || WAIT_HEALTH=0
TIMEOUT=${YS_CEPH_TIMEOUT:-120}

T0=$(date +%s.%N)
stamp() { printf '[ceph-up] %6.2fs %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*" >&2; }
die() { echo "[ceph-up] ERROR: $*" >&2; exit 1; }

D=$(mktemp -d "$PARENT/ys-ceph-XXXXXX")
chmod 700 "$D"
# if anything below fails, leave the dir for inspection but stop the daemons
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "[ceph-up] failed (rc=$rc); logs in $D/log; cleaning daemons" >&2; "$(dirname "$0")/ceph-down.sh" --keep "$D" >&2 || true; fi' EXIT

port_free() { ! ss -Htlnp "sport = :$1" | grep -q .; }
pick_port() {  # random free TCP port in 20000-29999
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 10000))
    port_free "$p" && port_free $((p + 1)) && { echo "$p"; return; }
  done
  die "no free port"
}
MON_V2=$(pick_port); MON_V1=$((MON_V2 + 1))
# daemons (mgr, osd) bind in this private range instead of 6800-7300
MS_MIN=$(pick_port); MS_MAX=$((MS_MIN + 40))
FSID=$(uuidgen)
mkdir -p "$D"/{mon,mgr,osd,run,log,crash}

CONF=$D/ceph.conf
cat > "$CONF" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind port min = $MS_MIN
ms bind port max = $MS_MAX
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $D/ceph.client.admin.keyring
run dir = $D/run
admin socket = $D/run/\$cluster-\$name.asok
pid file = $D/run/\$name.pid
log file = $D/log/\$name.log
log to stderr = false
err to stderr = true
crash dir = $D/crash
mon data = $D/mon/\$cluster-\$id
mgr data = $D/mgr/\$cluster-\$id
osd data = $D/osd/\$cluster-\$id
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
# speed: 1 mon, no need to batch paxos proposals for 1 s (default 1.0)
paxos propose interval = 0.1
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
mgr initial modules = iostat
[mon]
keyring = \$mon_data/keyring
mon cluster log file = $D/log/\$cluster.log
[mgr]
keyring = \$mgr_data/keyring
mgr standby modules = false
[osd]
keyring = \$osd_data/keyring
osd objectstore = bluestore
bluestore fsck on mkfs = false
bluestore block size = $(numfmt --from=iec "$OSD_SIZE")
osd memory target = 1073741824
bluestore cache autotune = false
bluestore cache size = 134217728
osd op num shards = 1
osd op num threads per shard = 2
[client]
admin socket = $D/run/\$cluster-\$name.\$pid.asok
log file = $D/log/\$name.\$pid.log
EOF
export CEPH_CONF=$CONF
C=(ceph -c "$CONF" --connect-timeout 20)

# --- keys + monmap + mon -------------------------------------------------------
ceph-authtool "$D/mon.keyring" --create-keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$D/ceph.client.admin.keyring" --create-keyring --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$D/mon.keyring" --import-keyring "$D/ceph.client.admin.keyring" >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]" "$D/monmap" >/dev/null
ceph-mon -c "$CONF" --cluster ceph --mkfs -i a --monmap "$D/monmap" --keyring "$D/mon.keyring"
ceph-mon -c "$CONF" -i a
stamp "mon started (v2 port $MON_V2, v1 port $MON_V1)"
"${C[@]}" mon enable-msgr2 >/dev/null 2>&1 || true

# --- mgr ----------------------------------------------------------------------
if [ "$MGR" = 1 ]; then
  mkdir -p "$D/mgr/ceph-x"
  "${C[@]}" auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
    -o "$D/mgr/ceph-x/keyring"
  ceph-mgr -c "$CONF" -i x
  stamp "mgr started"
fi

# --- pool + client key (mon only, done before the OSD exists to save time) ----
"${C[@]}" osd pool create "$POOL" 8 8 >/dev/null 2>&1
"${C[@]}" auth get-or-create "client.yunstack" mon 'profile rbd' \
  osd "profile rbd pool=$POOL" mgr "profile rbd pool=$POOL" -o "$D/ceph.client.yunstack.keyring"
YS_KEY=$("${C[@]}" auth get-key client.yunstack)
stamp "pool $POOL created, client.yunstack created"

# --- osd ----------------------------------------------------------------------
OSD_UUID=$(uuidgen)
OSD_KEY=$(ceph-authtool --gen-print-key)
OSD_ID=$(echo "{\"cephx_secret\": \"$OSD_KEY\"}" | "${C[@]}" osd new "$OSD_UUID" -i -)
OD=$D/osd/ceph-$OSD_ID
mkdir -p "$OD"
ceph-authtool "$OD/keyring" --create-keyring --name "osd.$OSD_ID" --add-key "$OSD_KEY" >/dev/null
case $BACKEND in
  file)  # bluestore straight on a sparse file: $OD/block is created by mkfs
    EXTRA=() ;;
  loop)
    truncate -s "$OSD_SIZE" "$D/ys-osd$OSD_ID.img"
    LOOP=$(losetup --find --show "$D/ys-osd$OSD_ID.img")
    echo "$LOOP" > "$D/loopdevs"
    EXTRA=(--bluestore-block-path "$LOOP" --bluestore-block-create=false) ;;
  *) die "unknown backend $BACKEND" ;;
esac
ceph-osd -c "$CONF" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" "${EXTRA[@]}" \
  >"$D/log/osd-mkfs.out" 2>&1 || { cat "$D/log/osd-mkfs.out" >&2; die "ceph-osd --mkfs failed"; }
stamp "osd.$OSD_ID mkfs done ($BACKEND)"
ceph-osd -c "$CONF" -i "$OSD_ID" "${EXTRA[@]}" 2>"$D/log/osd-start.err" ||
  { cat "$D/log/osd-start.err" >&2; die "ceph-osd failed to start"; }
stamp "osd.$OSD_ID started"

rbd -c "$CONF" pool init "$POOL"   # needs the OSD: waits until the PGs are active
stamp "rbd pool init done"

# --- wait until usable ------------------------------------------------------------
deadline=$(( $(date +%s) + TIMEOUT ))
until rbd -c "$CONF" --id yunstack --keyring "$D/ceph.client.yunstack.keyring" \
        create --size 4M "$POOL/ys-probe" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || die "rbd create did not work in ${TIMEOUT}s"
  sleep 0.5
done
rbd -c "$CONF" --id yunstack --keyring "$D/ceph.client.yunstack.keyring" rm --no-progress "$POOL/ys-probe"
stamp "rbd create/rm as client.yunstack works"
if [ "$WAIT_HEALTH" = 1 ]; then
  until [ "$("${C[@]}" health 2>/dev/null)" = HEALTH_OK ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { "${C[@]}" health detail >&2; die "no HEALTH_OK in ${TIMEOUT}s"; }
    sleep 1
  done
  stamp "HEALTH_OK"
fi

cat > "$D/env" <<EOF
CEPH_DIR=$D
CEPH_CONF=$CONF
CEPH_FSID=$FSID
CEPH_MON_HOST=127.0.0.1:$MON_V2
CEPH_POOL=$POOL
CEPH_USER=yunstack
CEPH_KEYRING=$D/ceph.client.yunstack.keyring
CEPH_KEY=$YS_KEY
CEPH_ADMIN_KEYRING=$D/ceph.client.admin.keyring
CEPH_OSD_BACKEND=$BACKEND
EOF
trap - EXIT
cat "$D/env"
