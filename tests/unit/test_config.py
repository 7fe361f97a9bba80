"""Configuration loading: defaults, TOML, YUN_* variables, overrides, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from yunstack import config
from yunstack.errors import BadRequest


def test_defaults_serve_the_all_in_one_cloud() -> None:
    c = config.load(None, env={})
    assert c.server.port == 8080 and c.compute.driver == "qemu"
    assert c.database_url.startswith("sqlite:///")


def test_toml_then_environment_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "y.toml"
    f.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[identity]\ntoken_expiration = 60\n')
    c = config.load(f, env={"YUN_SERVER_PORT": "9100", "YUN_COMPUTE_RAM_ALLOCATION_RATIO": "2.5"},
                    server={"state_dir": str(tmp_path)})
    assert c.server.port == 9100 and c.server.host == "0.0.0.0"
    assert c.identity.token_expiration == 60
    assert c.compute.ram_allocation_ratio == 2.5
    assert c.server.base_url == "http://127.0.0.1:9100"
    assert c.database_url == f"sqlite:///{tmp_path}/yunstack.db"


@pytest.mark.parametrize("text,env", [
    ("[nope]\nx = 1\n", {}),
    ("[server]\nbogus = 1\n", {}),
    ("[server]\nport = \"eighty\"\n", {}),
    ("", {"YUN_SERVER_PORT": "eighty"}),
])
def test_bad_config_says_what_is_wrong(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    f = tmp_path / "y.toml"
    f.write_text(text)
    with pytest.raises(BadRequest):
        config.load(f, env=env)


def test_config_is_frozen() -> None:
    c = config.load(None, env={})
    with pytest.raises(AttributeError):
        c.server.port = 1  # type: ignore[misc]


def test_the_reference_lists_every_field() -> None:
    text = config.reference_markdown()
    for name, cls in config.sections().items():
        for field in cls.__dataclass_fields__:
            assert f"YUN_{name.upper()}_{field.upper()}" in text
