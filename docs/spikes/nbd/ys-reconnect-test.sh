#!/bin/bash
# usage: ys-reconnect-test.sh RECONNECT_DELAY DOWN_SECONDS
# Keeps one qemu-io NBD+TLS client open, SIGKILLs the storage daemon, restarts it after
# DOWN_SECONDS, and issues I/O while it is down and after it is back.
D=/tmp/ys-nbd-spike; cd $D; RD=$1; DOWN=$2; P=$(cat port); V=$(cat volid)
ts() { date +%T.%N | cut -c1-12; }
rm -f ys-fifo; mkfifo ys-fifo
qemu-io --object tls-creds-psk,id=tls0,endpoint=client,dir=$D/client-ok,username=ys-host-a \
  --image-opts driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$P,export=$V,tls-creds=tls0,reconnect-delay=$RD \
  < ys-fifo 2>&1 | while IFS= read -r l; do echo "$(ts) client: $l"; done &
CLIENT=$!
exec 3>ys-fifo
say() { echo "$(ts) cmd: $1"; echo "$1" >&3; }
sleep 1; say "write -P 0x61 16M 1M"; sleep 0.5
echo "$(ts) SIGKILL qsd $(cat qsd.pid)"; kill -9 $(cat qsd.pid); sleep 0.3
say "write -P 0x62 17M 1M"      # issued while the server is down
say "read -P 0x61 16M 1M"
sleep $DOWN
echo "$(ts) restarting qsd"; setsid nohup ./ys-qsd-start.sh $D $P $V ys-host-a >> qsd.log 2>&1 < /dev/null &
for i in $(seq 50); do ss -ltn | grep -q ":$P " && break; sleep 0.1; done; echo "$(ts) qsd listening again"
sleep 1
for i in $(seq ${PROBES:-1}); do say "read -P 0x61 16M 1M"; sleep ${PROBE_GAP:-0}; done; say "write -P 0x63 18M 1M"; sleep 1
say "read -P 0x62 17M 1M"; say "read -P 0x63 18M 1M"; sleep 1
say "quit"; exec 3>&-; wait $CLIENT; rm -f ys-fifo
