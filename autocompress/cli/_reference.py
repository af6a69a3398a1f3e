"""The settings reference page (``docs/reference.md``), generated from the settings' own declarations.

``python -m autocompress.cli._reference docs/reference.md`` rewrites it; a test keeps the file current.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from autocompress.cli._study_commands import SEARCH_GROUPS
from autocompress.settings import SETTING_OPTIONS, SearchSettings, default_of
from autocompress.strategies import registry_of

HEADER = """# Settings reference

Generated from the settings' declarations (`autocompress/settings/_search.py`) by
`python -m autocompress.cli._reference docs/reference.md`; `tests/test_cli.py` fails when this page is stale.

Every setting can be given in a preset (`--config FILE.yaml`, the key is the name), from Python
(`SearchSettings(name=...)`, `load_settings`), or with `--set NAME=VALUE`. The settings in **bold** also have a
flag of their own in `autocompress search --help`. A setting given a value other than its default in a search of
a mode that does not read it is refused, naming the mode it belongs to. *Kept*: part of what a study is; rerunning
a study under another value is refused (start another with `--study-name`).
"""


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def reference_markdown() -> str:
    """The whole page."""
    parts = [HEADER]
    for title, scopes in SEARCH_GROUPS:
        parts.append(f"\n## {title[0].upper() + title[1:]}\n")
        parts.append("| setting | flag | default | kept | what it sets |")
        parts.append("|---|---|---|---|---|")
        for name, declared in SETTING_OPTIONS.items():
            if declared.scope not in scopes:
                continue
            flag = "" if declared.expert or declared.flag is None else f"`{declared.flag}`"
            shown_name = f"`{name}`" if flag == "" else f"**`{name}`**"
            allowed = getattr(declared.read, "allowed", None) or registry_of(declared, search=True)
            listed = f" One of: {', '.join(allowed())}." if allowed is not None and not declared.is_switch else ""
            scope = f" (scope: {declared.scope})" if declared.scope not in (None, "bo", "admm", "bayesbits") else ""
            help_text = (declared.help + "." + listed + scope).replace("|", "\\|")
            parts.append(f"| {shown_name} | {flag} | `{_shown(default_of(SearchSettings, name))}` | "
                         f"{'yes' if declared.kept else ''} | {help_text} |")
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path("docs/reference.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(reference_markdown(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
