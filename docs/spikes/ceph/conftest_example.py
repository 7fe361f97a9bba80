"""Example session-scoped pytest fixture for a throw-away Ceph cluster.

Copy into the project's conftest.py (and the two scripts into the repo) when the
RBD backend lands.  Run the spike's own check with:
    python3 -m pytest -q -p no:cacheprovider /work/notes/ceph-spike/test_fixture_example.py
"""
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPTS = Path(os.environ.get("YS_CEPH_SCRIPTS", Path(__file__).parent))


@dataclass(frozen=True)
class CephCluster:
    dir: str
    conf: str
    pool: str
    user: str          # "yunstack" (cephx id, without "client.")
    keyring: str
    key: str           # base64 cephx key (for a QEMU 'secret' object, format=base64)
    admin_keyring: str

    def qemu_url(self, image: str) -> str:
        return (f"rbd:{self.pool}/{image}:id={self.user}:conf={self.conf}"
                f":keyring={self.keyring}")

    def rbd(self, *args: str) -> str:
        return subprocess.run(
            ["rbd", "-c", self.conf, "--id", self.user, "--keyring", self.keyring, *args],
            check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="session")
def ceph_cluster():
    if shutil.which("ceph-mon") is None or shutil.which("ceph-osd") is None:
        if os.environ.get("CI"):
            pytest.fail("ceph packages missing: .ci/run must apt-get install them")
        pytest.skip("ceph-mon/ceph-osd not installed")
    env = dict(os.environ, YS_CEPH_WAIT_HEALTH="0")   # readiness = rbd create works
    proc = subprocess.run([str(SCRIPTS / "ceph-up.sh")], env=env, capture_output=True,
                          text=True, timeout=180)
    if proc.returncode != 0:
        pytest.fail(f"ceph-up.sh failed:\n{proc.stderr[-4000:]}")
    kv = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    cluster = CephCluster(dir=kv["CEPH_DIR"], conf=kv["CEPH_CONF"], pool=kv["CEPH_POOL"],
                          user=kv["CEPH_USER"], keyring=kv["CEPH_KEYRING"], key=kv["CEPH_KEY"],
                          admin_keyring=kv["CEPH_ADMIN_KEYRING"])
    try:
        yield cluster
    finally:
        subprocess.run([str(SCRIPTS / "ceph-down.sh"), cluster.dir], timeout=120)


@pytest.fixture
def rbd_image(ceph_cluster):
    """A fresh 64 MiB image per test, removed afterwards."""
    name = f"ys-test-{uuid.uuid4().hex[:12]}"
    ceph_cluster.rbd("create", "--size", "64M", f"{ceph_cluster.pool}/{name}")
    yield name
    subprocess.run(["rbd", "-c", ceph_cluster.conf, "--id", ceph_cluster.user,
                    "--keyring", ceph_cluster.keyring, "rm", "--no-progress",
                    f"{ceph_cluster.pool}/{name}"], capture_output=True, timeout=60)
