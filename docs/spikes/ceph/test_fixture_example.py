import subprocess

from conftest_example import ceph_cluster, rbd_image  # noqa: F401  (fixtures)


def test_qemu_io_roundtrip(ceph_cluster, rbd_image):
    url = ceph_cluster.qemu_url(rbd_image)
    out = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M",
                          "-c", "read -P 0x5a 0 1M", url],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    assert "Pattern verification failed" not in out
    info = subprocess.run(["qemu-img", "info", "--output=json", url], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    assert '"virtual-size": 67108864' in info


def test_images_listed(ceph_cluster, rbd_image):
    assert rbd_image in ceph_cluster.rbd("ls", ceph_cluster.pool).split()
