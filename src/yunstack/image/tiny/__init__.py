"""The tiny guest image: a CirrOS-like cloud image built offline from the host's Debian packages.

``build_tiny_image(out_dir)`` returns a self-contained bootable qcow2; see
``docs/howto/tiny-image.md`` for what the guest does and the console markers it prints.
"""

from yunstack.image.tiny.build import IMAGE_NAME, MANIFEST_NAME, build_tiny_image

__all__ = ["IMAGE_NAME", "MANIFEST_NAME", "build_tiny_image"]
