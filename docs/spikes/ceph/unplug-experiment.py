import json, socket, sys, time, subprocess, os
def run(machine_args, bus, after):
    sock='/tmp/ys-exp.sock'
    if os.path.exists(sock): os.unlink(sock)
    p=subprocess.Popen(['qemu-system-x86_64','-accel','tcg','-nodefaults','-display','none','-S','-m','128',*machine_args,'-qmp',f'unix:{sock},server=on,wait=on'])
    for _ in range(50):
        if os.path.exists(sock): break
        time.sleep(0.1)
    s=socket.socket(socket.AF_UNIX); s.connect(sock); buf=b''; ev=[]
    def line(t=None):
        nonlocal buf
        s.settimeout(t)
        while b'\n' not in buf:
            try: d=s.recv(65536)
            except socket.timeout: return None
            buf+=d
        l,buf=buf.split(b'\n',1); return json.loads(l)
    def cmd(c,**a):
        s.sendall((json.dumps({'execute':c,'arguments':a})+'\n').encode())
        while True:
            m=line()
            if 'event' in m: ev.append(m['event']); continue
            return m
    line(); cmd('qmp_capabilities')
    cmd('blockdev-add',driver='null-co',**{'node-name':'n1'})
    a={'driver':'virtio-blk-pci','id':'vd1','drive':'n1','serial':'x'}
    if bus: a['bus']=bus
    r=cmd('device_add',**a)
    cmd('device_del',id='vd1')
    for act in after: cmd(act)
    t=time.time()+2
    while time.time()<t:
        m=line(0.3)
        if m and 'event' in m: ev.append(m['event'])
    r=cmd('blockdev-del',**{'node-name':'n1'})
    print(machine_args, bus, after, 'events', ev, 'blockdev-del', r)
    cmd('quit'); p.wait()
run(['-M','q35','-device','pcie-root-port,id=rp1,chassis=1'],'rp1',[])
run(['-M','q35','-device','pcie-root-port,id=rp1,chassis=1'],'rp1',['system_reset'])
run(['-M','pc'],None,[])
run(['-M','pc'],None,['system_reset'])
run(['-M','q35'],None,['system_reset'])
