"""The `yun` command line; cloud resources are reached only through `yunstack.client`."""
