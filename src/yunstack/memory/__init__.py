"""The memory overcommit manager: collect -> decide -> act, every couple of seconds (mom's pipeline)."""
