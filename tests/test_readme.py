"""The README's tour runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_tour_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python tour"
    for code in blocks:
        exec(compile(code, str(README), "exec"), {})


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert len(commands) >= 2
    first, second = (c.strip() for c in commands[:2])
    assert first.endswith("python -m benchmarks") and "pip install" in first
    assert second.endswith("python -m pytest") and "pip install" in second
    assert text.index(commands[0]) < text.index("## ")
