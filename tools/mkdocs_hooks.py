"""MkDocs hooks: pages whose content comes from the code, so the reference cannot fall behind it.

A page holds a marker comment; at build time the hook puts the generated Markdown in its place:

    <!-- generated: cli-reference -->   every command of the typer app, every flag, its help
    <!-- generated: target-options -->  per target: names, files, precisions, the export flags it takes

Run ``python tools/mkdocs_hooks.py`` to print the generated CLI reference
(``python tools/mkdocs_hooks.py targets``: the target options).
"""
from __future__ import annotations

import re

import typer.main

MARKERS = {"<!-- generated: cli-reference -->": lambda: cli_reference(),
           "<!-- generated: target-options -->": lambda: target_options()}
CODE_WIDTH = 88  # the characters a code line shows at 1280 px without a scrollbar (tests/test_docs.py)
_RICH_TAG = re.compile(r"\[/?(?:b|bold|dim|i|italic|u|cyan|green|red|yellow)\]")


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, build in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, build())
    return markdown


# href="/…", src="/…", and Material's page config ("base": "/", "search": "/assets/…")
_ROOT_ABSOLUTE = re.compile(r'(?P<attr>\b(?:href|src|action)="|"(?:base|search)":\s*")/(?!/)')


def on_post_build(config) -> None:
    """404.html links its styles, scripts and pages from the site root ("/assets/…"), which works only
    when the site is served at a domain's root. Relative to the site's root folder, they also work
    under a path (GitHub Pages' /<repo>/) and from the files on disk; the 404 page is then styled at
    a missing page one level below the site root (the usual mistyped address)."""
    from pathlib import Path

    page = Path(config["site_dir"]) / "404.html"
    if page.is_file() and not config.get("site_url"):
        page.write_text(_ROOT_ABSOLUTE.sub(lambda m: f'{m["attr"]}./', page.read_text()))


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
        lines += [f"**{title.strip()}**", "", "```bash", *(w for c in commands for w in _wrap_shell(c)), "```", ""]
    return lines


def _wrap_shell(line: str, width: int = CODE_WIDTH) -> list[str]:
    """A command as lines of at most ``width`` characters where it can be: a trailing comment on a
    line of its own above it, then the command broken before an option with ``\\`` continuations."""
    found = re.match(r"^(?P<command>.*?\S)\s+#\s+(?P<comment>.*)$", line)
    if len(line) <= width:
        return [line]
    out = [f"# {found['comment']}"] if found else []
    groups: list[str] = []
    for word in (found["command"] if found else line).split(" "):
        if word.startswith("-") or not groups:
            groups.append(word)
        else:
            groups[-1] += " " + word
    current = groups[0]
    for group in groups[1:]:
        if len(f"{current} {group}") > width - 2:
            out.append(current + " \\")
            current = "    " + group
        else:
            current += " " + group
    return out + [current]


def cli_reference() -> str:
    """Markdown for every command of ``rmt-deploy``, in the order ``--help`` lists them."""
    from rmt_deploy.cli import app

    root = typer.main.get_command(app)
    lines = [_plain(root.help), ""]
    for name, command in root.commands.items():
        if not command.hidden:
            lines += _command_section(f"rmt-deploy {name}", command)
    return "\n".join(lines)


# -- target options: from the Target contract (targets.base.Target) and `rmt-deploy export` -------------

PRECISION_FLAGS = {"fp32": "--fp32", "fp16": "--fp16", "int8": "--int8"}
DYNAMIC_SIZE_FLAGS = ("--dynamic", "--min-size", "--max-size")
CALIBRATION_FLAGS = ("--calib", "--calib-size", "--statistic")
ACCURACY_FLAGS = ("--max-drop",)


def _export_params() -> dict:
    """``rmt-deploy export``'s options by flag (``--int8`` → its click parameter)."""
    from rmt_deploy.cli import app

    command = typer.main.get_command(app).commands["export"]
    return {opt: p for p in command.params if not _is_argument(p) for opt in p.opts}


def _file_names(target, precision: str) -> list[str]:
    """What the target writes for ``precision``, by the names its contract gives."""
    from pathlib import Path

    folder = Path(".")
    names = []
    onnx_path = getattr(target, "onnx_path", None)  # TensorRT: the TensorRT-ready ONNX beside the engine
    if onnx_path is not None:
        names.append(onnx_path(folder, precision).name)
    name = target.artifact_path(folder, precision).name
    names.append(name + (" + .bin" if name.endswith(".xml") else ""))  # OpenVINO: the weights beside the IR
    return names


def _extra_files(target) -> list[str]:
    """Files a target writes once per run (TensorRT: build_engine.sh), from its module's BUILD_SCRIPT."""
    import sys

    script = getattr(sys.modules[type(target).__module__], "BUILD_SCRIPT", None)
    return [script] if script else []


def target_flags(target) -> dict[str, str]:
    """Every export flag that depends on the target, and how it applies to ``target`` ("" = not at all)."""
    from rmt_deploy.quant.policy import STATISTICS

    int8 = "int8" in target.precisions
    cells: dict[str, str] = {}
    for precision, flag in PRECISION_FLAGS.items():
        if precision not in target.precisions:
            cells[flag] = ""
        elif precision == "fp32" and target.always_fp32:
            cells[flag] = "always written"
        else:
            cells[flag] = "default" if precision == target.default_precision else "yes"
    cells["--dynamic-batch"] = "yes" if target.dynamic_batch else ""
    for flag in DYNAMIC_SIZE_FLAGS:
        cells[flag] = "yes" if target.dynamic_size else ""
    calibrated = int8 and target.calibrated_int8
    cells["--calib"] = cells["--calib-size"] = f"with `--int8` ({target.calibrator})" if calibrated else ""
    statistics = target.statistics or tuple(STATISTICS)
    cells["--statistic"] = ", ".join(f"`{s}`" for s in statistics) if calibrated else ""
    cells["--max-drop"] = ("with `--int8`" if target.gates_accuracy else "not checked here") if int8 else ""
    for other in _targets():
        for key in (other.options_type.KEYS if other.options_type else {}):
            cells[f"--{key}"] = "yes" if other is target else ""
    return cells


def _flag_cells(target) -> list[str]:
    """One row of the flags table: precisions, dynamic shapes, INT8 calibration, --max-drop, own flags."""
    cells = target_flags(target)
    precisions = []
    for precision, flag in PRECISION_FLAGS.items():
        if cells[flag]:
            how = {"yes": "", "default": " (default)", "always written": " (always)"}[cells[flag]]
            precisions.append(precision.upper() + how)
    dynamic = [name for name, flag in (("batch", "--dynamic-batch"), ("size", "--dynamic")) if cells[flag]]
    if cells["--calib"]:
        statistics = cells["--statistic"].split(", ")
        calibration = f"{target.calibrator}: " + ("any" if len(statistics) > 2 else ", ".join(statistics))
    elif "w8a8" in (target.options_type.KEYS if target.options_type else {}):
        calibration = "with `--w8a8` only"
    else:
        calibration = ""
    own = [f"`--{key}`" for key in (target.options_type.KEYS if target.options_type else {})]
    return [", ".join(precisions), ", ".join(dynamic), calibration, cells["--max-drop"], "<br>".join(own)]


def _targets() -> list:
    from rmt_deploy.targets import TARGETS

    return list(TARGETS.values())


def _title(target) -> str:
    """The target's name in prose: "Core ML" with a space (the code's title reads "CoreML")."""
    return (target.title or target.name).replace("CoreML", "Core ML")


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else "—"


def target_options() -> str:
    """Markdown: every target's names, files, precisions and extra, then which export flag applies to which."""
    from rmt_deploy.quant.policy import STATISTICS

    targets = _targets()
    params = _export_params()
    lines = ["## Targets", "",
             "| target | `--target` (aliases) | precisions (default first) | files | extra | its runtime needs |",
             "|---|---|---|---|---|---|"]
    for t in targets:
        order = [t.default_precision] + [p for p in t.precisions if p != t.default_precision]
        precisions = ", ".join(p.upper() for p in order) + (" (FP32 always)" if t.always_fp32 else "")
        files = "<br>".join(f'<code class="rd-file">{n}</code>'
                            for n in [*(n for p in order for n in _file_names(t, p)), *_extra_files(t)])
        names = f"`{t.name}`" + (f" ({', '.join(f'`{a}`' for a in t.aliases)})" if t.aliases else "")
        extra = f"`{t.extra}`" if t.extra else "none (base install)"
        if t.calibrated_int8 and t.calibrator == "nncf" and "int8" in t.precisions:
            extra += ", `int8` for `--int8`"
        needs = f"`{t.needs}`" if t.needs else "—"
        lines.append(f"| {_title(t)} | {names} | {precisions} | {files} | {extra} | {needs} |")
    statistics = ", ".join(f"`{s}`" for s in STATISTICS)
    lines += ["", "## Export flags by target", "",
              "One row per target: the `rmt-deploy export` flags whose effect depends on the target. "
              "Flags not listed here (`--weights`, `--img-size`, `--eval`, `--atol`, `--threads` …) apply to "
              "every target. — : none.", "",
              "- **precisions**: `--fp32`, `--fp16`, `--int8`; *always*: FP32 is written on every run.",
              "- **dynamic**: *batch* takes `--dynamic-batch`; *size* takes `--dynamic` with `--min-size` "
              "and `--max-size`.",
              "- **calibration**: the calibrator that `--calib` and `--calib-size` feed with `--int8`, and the "
              f"`--statistic` values it takes (*any*: {statistics}).",
              "- **`--max-drop`**: the INT8 top-1 budget (with a labelled `--eval`); *not checked here*: the "
              "export does not gate that target's INT8 on it; gate the report with `rmt-deploy check` on "
              "the device.", "",
              "| target | precisions | dynamic | calibration | `--max-drop` | its own flags |",
              "|---|---|---|---|---|---|"]
    for t in targets:
        lines.append(f"| `{t.name}` | " + " | ".join(_cell(c) for c in _flag_cells(t)) + " |")
    defaults = [f"`{flag}` {_default(params[flag])}" for flag in ("--calib-size", "--statistic")
                if flag in params and _default(params[flag])]
    if defaults:
        lines += ["", "Defaults: " + ", ".join(defaults) + "."]
    for t in targets:
        if not t.options_type:
            continue
        defaults = t.options_type()
        lines += ["", f"## {_title(t)} options", "", "| flag | meaning | default |", "|---|---|---|"]
        for key, (field_name, _) in t.options_type.KEYS.items():
            param = params.get(f"--{key}")
            meaning = _plain(getattr(param, "help", "")).replace("|", "\\|").replace("\n", " ")
            value = getattr(defaults, field_name)
            shown = "off" if value is False else ("on" if value is True else (f"`{value}`" if value != "" else "none"))
            lines.append(f"| `--{key}` | {meaning} | {shown} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(target_options() if sys.argv[1:] == ["targets"] else cli_reference())
