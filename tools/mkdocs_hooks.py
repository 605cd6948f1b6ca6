"""MkDocs hooks: pages whose content comes from the code, so the reference cannot fall behind it.

A page holds a marker comment; at build time the hook puts the generated Markdown in its place:

    <!-- generated: cli-reference -->   every command of the typer app, every flag, its help

Run ``python tools/mkdocs_hooks.py`` to print the generated CLI reference.
"""
from __future__ import annotations

import re

import typer.main

MARKERS = {"<!-- generated: cli-reference -->": lambda: cli_reference()}
_RICH_TAG = re.compile(r"\[/?(?:b|bold|dim|i|italic|u|cyan|green|red|yellow)\]")


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, build in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, build())
    return markdown


def _plain(text: str | None) -> str:
    """Help text without rich markup, as the terminal shows it."""
    return _RICH_TAG.sub("", text or "").replace("\\[", "[").strip()


def _is_argument(param) -> bool:
    return param.param_type_name == "argument"


def _default(param) -> str | None:
    if not getattr(param, "show_default", False) or getattr(param, "is_flag", False):
        return None
    value = param.default
    if value is None or value == "" or callable(value):
        return None
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return str(value)


def _flags(param) -> str:
    if _is_argument(param):
        return f"`{param.metavar or param.name.upper()}`"
    return " / ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])


def _param_rows(params: list) -> list[str]:
    rows = ["| flag | meaning | default |", "|---|---|---|"]
    for p in params:
        meaning = _plain(getattr(p, "help", None)).replace("|", "\\|").replace("\n", " ")
        if _is_argument(p) and p.required:
            meaning += " (required)"
        default = _default(p)
        rows.append(f"| {_flags(p)} | {meaning} | {f'`{default}`' if default else ''} |")
    return rows


def _command_section(name: str, command) -> list[str]:
    help_text = _plain(command.help)
    first, _, rest = help_text.partition("\n\n")
    lines = [f"## `{name}`", "", first, ""]
    if rest:
        lines += [rest.strip(), ""]
    usage = " ".join(command.collect_usage_pieces(command.context_class(command, info_name=name)))
    lines += ["```text", f"{name} {usage}", "```", ""]
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    panels: dict[str, list] = {}
    for p in params:
        if _is_argument(p):
            panel = "Arguments"
        else:
            panel = getattr(p, "rich_help_panel", None) or "Options"
        panels.setdefault(panel, []).append(p)
    for panel in sorted(panels, key=lambda k: (k != "Arguments", k != "Options")):
        lines += [f"**{panel}**", "", *_param_rows(panels[panel]), ""]
    epilog = _plain(command.epilog)
    if epilog:
        title, _, body = epilog.partition("\n")
        commands = [line.strip() for line in body.splitlines() if line.strip()]
        lines += [f"**{title.strip()}**", "", "```bash", *commands, "```", ""]
    return lines


def cli_reference() -> str:
    """Markdown for every command of ``rmt-deploy``, in the order ``--help`` lists them."""
    from rmt_deploy.cli import app

    root = typer.main.get_command(app)
    lines = [_plain(root.help), ""]
    for name, command in root.commands.items():
        if not command.hidden:
            lines += _command_section(f"rmt-deploy {name}", command)
    return "\n".join(lines)


if __name__ == "__main__":
    print(cli_reference())
