"""Typed HTTP client for the yunstack API; the CLI and dashboard reach the cloud only through it."""

from yunstack.client.http import ApiError, CloudCredentials, YunClient, load_cloud

__all__ = ["ApiError", "CloudCredentials", "YunClient", "load_cloud"]
