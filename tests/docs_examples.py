"""Run the Python examples of a page in docs/ as the tests of that page do: every ```python
block, in order, as one program (settings lines pointed at generated files)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(page: str) -> list[str]:
    """The ```python blocks of docs/<page>, in order (indented ones dedented)."""
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, flags=re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(code) for _, code in blocks]


def run_docs(page: str, settings: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run docs/<page>'s examples; each `NAME = ...` line named in `settings` is replaced by
    `NAME = <value>` first (and must occur once). The program's namespace."""
    code = "\n".join(python_blocks(page))
    assert code, page
    for name, value in (settings or {}).items():
        code, found = re.subn(rf"^{name} = .*$", f"{name} = {value}", code, flags=re.MULTILINE)
        assert found == 1, name
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS / page), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace
