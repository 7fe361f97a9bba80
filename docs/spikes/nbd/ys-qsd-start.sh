#!/bin/sh
# Start a qemu-storage-daemon exporting one qcow2 volume over NBD+TLS-PSK, authz'd to one identity.
# usage: ys-qsd-start.sh WORKDIR PORT VOLUME_ID ALLOWED_IDENTITY
set -eu
D=$1; PORT=$2; VOL=$3; IDENT=$4
exec qemu-storage-daemon \
  --chardev socket,id=ys-qmp0,path=$D/qsd-qmp.sock,server=on,wait=off \
  --monitor chardev=ys-qmp0 \
  --object tls-creds-psk,id=tls0,endpoint=server,dir=$D/server-psk \
  --object authz-simple,id=auth0,identity=$IDENT \
  --blockdev driver=file,node-name=file0,filename=$D/vol.qcow2,cache.direct=off,aio=threads \
  --blockdev driver=qcow2,node-name=vol0,file=file0 \
  --nbd-server addr.type=inet,addr.host=127.0.0.1,addr.port=$PORT,tls-creds=tls0,tls-authz=auth0 \
  --export type=nbd,id=exp0,node-name=vol0,name=$VOL,writable=on \
  --pidfile $D/qsd.pid ${QSD_EXTRA:-}
