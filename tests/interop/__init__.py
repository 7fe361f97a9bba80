"""The interop stage: OpenStack's own conformance suite (Tempest, 2020.06 guideline) against `yun up`."""
