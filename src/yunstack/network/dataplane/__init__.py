"""The host dataplane of Neutron networking: makes this host match a ``HostNetworkState``.

``base.Dataplane`` is the protocol; ``linux.LinuxDataplane`` the real one, ``fake.FakeDataplane``
the recorder for functional tests.  The design is in ``docs/explanation/networking.md``.
"""

from __future__ import annotations

from yunstack.network.dataplane.base import ApplyReport, Dataplane

__all__ = ["DATAPLANES", "ApplyReport", "Dataplane"]

# name -> dotted path of the class, imported lazily (the fake must not need iproute2).
DATAPLANES = {
    "linux": "yunstack.network.dataplane.linux.LinuxDataplane",
    "fake": "yunstack.network.dataplane.fake.FakeDataplane",
}
