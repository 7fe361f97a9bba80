"""Generated docs stay in step with the code."""

from __future__ import annotations

from pathlib import Path

from yunstack import config

ROOT = Path(__file__).resolve().parents[2]


def test_the_config_reference_is_generated_from_the_code() -> None:
    written = (ROOT / "docs/reference/config.md").read_text()
    hint = "run: yun config-doc --output docs/reference/config.md"
    assert written.strip() == config.reference_markdown().strip(), hint


def test_the_readme_quick_start_is_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
