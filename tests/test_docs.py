"""The documentation: README stays short, the site builds with --strict, the references show
everything the code has, and every runnable code block of every page runs on the demo."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs_blocks import REPO, RUNNABLE, blocks, pages, runnable

README_LIMIT = 12 * 1024
CHECKOUT = ("docs", "rmt_deploy")  # what a page's code may read from the checkout, linked into its folder
# Pages use `digits/` as `rmt-deploy demo-images digits` writes it; a page that runs that command makes its own
DEMO_COPY = ("digits", "rmt_deploy/assets/calib")
# Blocks of report.json whose keys the report reference must name (others hold op or layer names).
NAMED_BLOCKS = ("model", "verification", "environment", "graph", "parity", "accuracy", "latency_ms", "quantization",
                "accuracy_aware", "delegation", "readiness", "execution", "at_runtime_default", "bench")
REPORT_REFERENCE = REPO / "docs" / "reference" / "report.md"


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def test_readme_is_short_and_keeps_the_two_ci_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= README_LIMIT, f"README.md is {len(readme.encode())} bytes (limit {README_LIMIT})"
    for marker in ("<!-- ci:install-and-run -->", "<!-- ci:test -->"):
        following = readme.split(marker, 1)[1].lstrip().splitlines()
        assert following[0] == "```bash" and following[1].strip(), f"{marker} must sit right above a bash block"
    assert '".[dev,docs]"' in readme, "the test command installs the docs extra, so CI builds the site"


def test_readme_tour_is_the_getting_started_tour_which_runs():
    tour = next(b for b in blocks(REPO / "README.md") if b.skip and "getting-started" in b.skip)
    assert tour.code in [b.code for b in runnable(REPO / "docs" / "getting-started.md")]


def test_readme_links_point_to_pages_that_exist():
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", readme)
    assert len(links) >= 8
    assert [link for link in links if not (REPO / link).is_file()] == []


def test_pages_do_not_install_from_a_registry():
    """rmt-deploy is not on PyPI: pages and the tool's own hints install it from a checkout, a built wheel,
    or a direct reference to its repository (``"rmt-deploy[int8] @ git+https://…@v0.12.0"``)."""
    wrong = re.compile(r"pip install [^\n`&;|]*?(?<![\w/.-])[\"']?rmt[-_]deploy(?:\[[\w,]*\])?"
                       r"(?=[\"'\s`=<>~!]|$)(?!\s*@)")
    assert wrong.search('pip install -c constraints.txt "rmt-deploy[int8]"')
    assert not wrong.search('pip install -c c.txt "rmt-deploy[int8] @ git+https://github.com/o/rmt-deploy@v1"')
    files = [*pages(), *sorted((REPO / "rmt_deploy").rglob("*.py"))]
    found = [f"{path.relative_to(REPO)}:{n}" for path in files
             for n, line in enumerate(path.read_text().splitlines(), 1) if wrong.search(line)]
    assert found == [], "pip install rmt-deploy from a registry: " + ", ".join(found)


def test_every_code_block_is_run_or_says_why():
    problems = []
    for page in pages():
        text = page.read_text().splitlines()
        for number, line in enumerate(text, 1):
            if line.strip().startswith("<!-- docs-test"):
                nxt = next((t.strip() for t in text[number:] if t.strip()), "")
                if not re.match(r"^<!-- docs-test: skip: \S.* -->$", line.strip()) or not nxt.startswith("```"):
                    problems.append(f"{_page_id(page)}:{number}: marker must read "
                                    "'<!-- docs-test: skip: REASON -->' right above a code block")
        for block in blocks(page):
            if block.language in ("sh", "shell", "console", "py", "python3", ""):
                problems.append(f"{block.where}: fence language {block.language!r}: use bash, python or text")
            if block.skip and block.language not in RUNNABLE:
                problems.append(f"{block.where}: a {block.language} block is never run; drop the skip marker")
    assert problems == []
    assert sum(len(runnable(p)) for p in pages()) >= 25


def _documented_names() -> set[str]:
    return set(re.findall(r"`([A-Za-z_][\w.\[\]]*)`", REPORT_REFERENCE.read_text()))


def _report_keys(report: dict) -> set[str]:
    keys = set(report)
    for name in NAMED_BLOCKS:
        if isinstance(report.get(name), dict):
            keys |= {f"{name}.{k}" for k in report[name]}
    for entry in report.get("artifacts", []) + report.get("reference_runs", []):
        keys |= {f"artifacts[].{k}" for k in entry}
        for name in NAMED_BLOCKS:
            if isinstance(entry.get(name), dict):
                keys |= {f"{name}.{k}" for k in entry[name]}
        for cell in entry.get("benchmarks", []):
            keys |= {f"benchmarks[].{k}" for k in cell}
    return keys


def _undocumented(keys: set[str]) -> list[str]:
    """Keys the report reference does not name; a key counts as named by its last part in its block's table."""
    names = _documented_names()
    return sorted(k for k in keys if k not in names and k.split(".")[-1] not in names)


def test_report_reference_names_every_schema_field():
    from rmt_deploy.bench import schema

    fields = {f.name for cls in (schema.Report, schema.Artifact, schema.Parity, schema.Accuracy, schema.Latency)
              for f in dataclasses.fields(cls) if f.name not in ("extra", "details", "keys", "report_path", "folder")}
    assert sorted(fields - _documented_names()) == []


def test_presets_page_lists_every_key():
    from rmt_deploy.jobs.presets import PRESET_KEYS
    from rmt_deploy.targets import TARGETS

    text = (REPO / "docs" / "presets.md").read_text()
    keys = set(PRESET_KEYS) | {k for t in TARGETS.values() if t.options_type for k in t.options_type.KEYS}
    assert sorted(k for k in keys if f"`{k}`" not in text) == []
    assert sorted(t for t in TARGETS if t in text) and all(f"`[{t.name}]`" in text for t in TARGETS.values()
                                                         if t.options_type)


def _needs_docs_tools():
    missing = [m for m in ("mkdocs", "material", "mkdocstrings_handlers.python") if importlib.util.find_spec(
        m.split(".")[0]) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: pip install -e \".[docs]\" to build the docs site")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    _needs_docs_tools()
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_site_builds_with_strict_and_has_every_page(site):
    built = {p.relative_to(site).parent.as_posix() for p in site.rglob("index.html")}
    for page in (REPO / "docs").rglob("*.md"):
        name = page.relative_to(REPO / "docs").with_suffix("").as_posix()
        assert (name.removesuffix("index").rstrip("/") or ".") in built, f"{page} was not built"
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "rmt_deploy.api.export" in api and "calib_size" in api, "the API reference has no docstrings"
    assert (site / "images" / "report-plot.png").is_file()


def test_api_reference_lists_each_result_field_with_its_type(site):
    from rmt_deploy.bench import schema

    html = (site / "reference" / "api" / "index.html").read_text()
    assert "_Block" not in html, "the API reference shows a private base class"
    missing = []
    for cls in (schema.Report, schema.Artifact, schema.Parity, schema.Accuracy, schema.Latency):
        section = html.split(f'id="{cls.__module__}.{cls.__name__}"', 1)[1]
        section = re.split(r"<h[23][ >]", section, maxsplit=1)[0]  # up to the next type's heading
        missing += [f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls)
                    if f.name != "keys" and f'title="{cls.__module__}.{cls.__name__}.{f.name}"' not in section]
    assert missing == [], "the API reference does not list these fields: " + ", ".join(missing)


_EXTERNAL = re.compile(r"^(?:https?:)?//", re.I)  # http://, https:// and protocol-relative //host/…
_FETCHED = re.compile(r"<(script|link)\b[^>]*?\s(src|href)\s*=\s*[\"']?([^\"'\s>]+)", re.I)


def test_site_makes_no_network_calls(site):
    """Offline, every page still works: no script or stylesheet (or font, icon) comes from elsewhere."""
    external = []
    for page in sorted(site.rglob("*.html")):
        for tag, _, url in _FETCHED.findall(page.read_text()):
            if _EXTERNAL.match(url):
                external.append(f"{page.relative_to(site)}: <{tag}> {url}")
    assert external == [], "pages load from the network: " + "; ".join(external[:10])
    config = (REPO / "mkdocs.yml").read_text()
    assert re.search(r"^\s+font:\s*false\b", config, re.M), "theme.font must be false (Google Fonts otherwise)"
    assert 'class="mermaid"' not in (site / "index.html").read_text(), "Material loads mermaid from a CDN"


def test_cli_reference_shows_every_command_and_flag(site):
    import typer.main

    from rmt_deploy.cli import app

    html = (site / "reference" / "cli" / "index.html").read_text()
    root = typer.main.get_command(app)
    missing = []
    for name, command in root.commands.items():
        if f"rmt-deploy {name}" not in html:
            missing.append(f"command {name}")
        for param in command.params:
            shown = param.opts + param.secondary_opts if param.param_type_name == "option" else [
                param.metavar or param.name.upper()]
            missing += [f"{name} {flag}" for flag in shown if f"<code>{flag}</code>" not in html]
    assert missing == [], "the CLI reference does not show: " + ", ".join(missing)


def _contract_flags() -> set[str]:
    """The export flags that the Target contract (targets.base.Target) decides per target."""
    from rmt_deploy.targets import TARGETS

    targets = list(TARGETS.values())
    flags = {f"--{p}" for t in targets for p in t.precisions}
    flags |= {"--dynamic-batch"} if any(t.dynamic_batch for t in targets) else set()
    flags |= {"--dynamic", "--min-size", "--max-size"} if any(t.dynamic_size for t in targets) else set()
    flags |= {"--calib", "--calib-size", "--statistic"} if any(t.calibrated_int8 for t in targets) else set()
    flags |= {"--max-drop"} if any(t.gates_accuracy for t in targets) else set()
    return flags | {f"--{key}" for t in targets if t.options_type for key in t.options_type.KEYS}


def test_target_options_page_shows_every_target_file_and_flag(site):
    """reference/targets.md is generated from the target table, so it names every target and its files,
    and every export flag the contract names (each of which `rmt-deploy export` has)."""
    import typer.main

    from rmt_deploy.cli import app
    from rmt_deploy.targets import TARGETS

    html = (site / "reference" / "targets" / "index.html").read_text()
    export = typer.main.get_command(app).commands["export"]
    options = {o for p in export.params for o in p.opts + p.secondary_opts}
    flags = _contract_flags()
    assert sorted(flags - options) == [], "flags the contract names that `export` does not have"
    missing = [f"flag {flag}" for flag in sorted(flags) if f"<code>{flag}</code>" not in html]
    for target in TARGETS.values():
        found = re.search(rf"<tr>\s*<td>[^<]*</td>\s*<td><code>{target.name}</code>.*?</tr>", html, re.S)
        if found is None:
            missing.append(f"target {target.name}")
            continue
        row = found.group(0)
        missing += [f"{target.name} {alias}" for alias in target.aliases if f"<code>{alias}</code>" not in row]
        missing += [f"{target.name} file {target.artifact_path(Path('.'), p).name}" for p in target.precisions
                    if target.artifact_path(Path("."), p).name not in row]
    assert missing == [], "reference/targets.md does not show: " + ", ".join(missing)
    assert 'href="../reference/targets/"' in (site / "targets" / "index.html").read_text(), \
        "Choosing a target links to the target options"


def _work_folder(tmp_path: Path, page) -> Path:
    for name in CHECKOUT:
        (tmp_path / name).symlink_to(REPO / name, target_is_directory=True)
    if not any(re.search(r"^rmt-deploy demo-images digits\b", block.code, re.M) for block in runnable(page)):
        (tmp_path / DEMO_COPY[0]).symlink_to(REPO / DEMO_COPY[1], target_is_directory=True)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in pages() if runnable(p)], ids=_page_id)
def test_page_code_runs_on_the_demo(page, tmp_path):
    """Each runnable block of the page, in order, in one folder; every report it writes is documented."""
    work = _work_folder(tmp_path, page)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for block in runnable(page):
        if block.language == "bash":
            command = ["bash", "-e", "-o", "pipefail", "-c", block.code]
        else:
            script = work / f"block_{block.line}.py"
            script.write_text(block.code)
            command = [sys.executable, script.name]
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"{block.where} failed (exit {done.returncode}):\n{block.code}\n" \
                                     f"{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    keys: set[str] = set()
    for report in work.rglob("report.json"):
        if report.relative_to(work).parts[0] not in (*CHECKOUT, DEMO_COPY[0]):
            keys |= _report_keys(json.loads(report.read_text()))
    assert _undocumented(keys) == [], "docs/reference/report.md does not name these report.json keys"


# -- layout ---------------------------------------------------------------------------------------

CODE_WIDTH = 88  # characters of a code line the content column shows at 1280 px without a scrollbar


def _generated_blocks() -> list[tuple[str, str]]:
    """(where, code) of the fenced blocks the site's hooks generate (the CLI reference's examples)."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import mkdocs_hooks
    finally:
        sys.path.remove(str(REPO / "tools"))
    text = mkdocs_hooks.cli_reference()
    return [(f"generated CLI reference, block {n}", code)
            for n, code in enumerate(re.findall(r"^```\w*\n(.*?)^```", text, re.M | re.S), 1)]


def test_code_lines_fit_the_column():
    """No line of a fenced block is wider than the column at 1280 px, where a trailing comment would
    hide behind a scrollbar. README's two CI blocks (run verbatim by .ci/run) are exempt."""
    wide = []
    for page in pages():
        for block in blocks(page):
            if block.marker and block.marker.startswith("<!-- ci:"):
                continue
            for n, line in enumerate(block.code.splitlines(), block.line + 1):
                if len(line) > CODE_WIDTH:
                    wide.append(f"{block.page}:{n} ({len(line)} characters)")
    if importlib.util.find_spec("typer") is not None:
        for where, code in _generated_blocks():
            wide += [f"{where}: {line[:40]}… ({len(line)})" for line in code.splitlines() if len(line) > CODE_WIDTH]
    assert wide == [], f"code lines over {CODE_WIDTH} characters: " + ", ".join(wide)


STYLESHEET = REPO / "docs" / "assets" / "stylesheets" / "extra.css"
_NTH = re.compile(r":nth-child\(\s*([^)]*?)\s*\)")


def _css_rules(css: str) -> list[tuple[str, str, str, int]]:
    """(media condition or "", selector, declarations, source order) for every rule of a flat stylesheet
    with one level of @media nesting, which is what extra.css uses."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    rules, order = [], 0
    for found in re.finditer(r"@media([^{]*)\{((?:[^{}]*\{[^{}]*\})*)\s*\}|([^{}@]+)\{([^{}]*)\}", css):
        if found.group(1) is not None:
            for inner in re.finditer(r"([^{}]+)\{([^{}]*)\}", found.group(2)):
                for selector in inner.group(1).split(","):
                    rules.append((found.group(1).strip(), selector.strip(), inner.group(2), order))
                order += 1
        else:
            for selector in found.group(3).split(","):
                rules.append(("", selector.strip(), found.group(4), order))
            order += 1
    return rules


def _media_applies(condition: str, width_px: int) -> bool:
    for kind, value in re.findall(r"\((max|min)-width:\s*([\d.]+)em\)", condition):
        px = float(value) * 16
        if (kind == "max" and width_px > px) or (kind == "min" and width_px < px):
            return False
    return True


def _nth_matches(formula: str, index: int) -> bool:
    formula = formula.replace(" ", "")
    if formula in ("odd", "even"):
        return index % 2 == (formula == "odd")
    if "n" not in formula:
        return index == int(formula)
    a, _, b = formula.partition("n")
    a = -1 if a == "-" else (1 if a in ("", "+") else int(a))
    b = int(b) if b else 0
    return (index - b) % a == 0 and (index - b) // a >= 0 if a else index == b


def _specificity(selector: str) -> tuple[int, int, int]:
    plain = re.sub(r"::[\w-]+", " ", selector)
    pseudo_elements = len(re.findall(r"::[\w-]+", selector))
    ids = len(re.findall(r"#[\w-]+", plain))
    classes = len(re.findall(r"\.[\w-]+|\[[^\]]*\]|:[\w-]+(?:\([^)]*\))?", plain))
    types = len(re.findall(r"(?:^|[\s>+~])([a-zA-Z][\w-]*)", plain)) + pseudo_elements
    return ids, classes, types


def _arrow(width_px: int, step: int) -> str | None:
    """The ``content`` of step ``step``'s ::after in the pipeline figure at a viewport ``width_px`` wide."""
    best = None
    for condition, selector, declarations, order in _css_rules(STYLESHEET.read_text()):
        if "rd-flow" not in selector or not selector.endswith("::after") \
                or not _media_applies(condition, width_px):
            continue
        li = selector.rsplit(" ", 1)[-1]
        if not li.startswith("li") or not all(_nth_matches(f, step) for f in _NTH.findall(li)):
            continue
        content = re.search(r"content:\s*\"([^\"]*)\"", declarations)
        if content:
            rank = (_specificity(selector), order)
            if best is None or rank >= best[0]:
                best = (rank, content.group(1))
    return best[1] if best else None


def test_pipeline_figure_keeps_its_arrows_at_phone_width():
    """The home page's figure: a snake on desktops (→ → → ↓ ← ← ←), one column of ↓ on a 390 px phone.
    A desktop rule more specific than the phone one would keep ← beside steps 5-7 in one column."""
    assert [_arrow(1280, step) for step in range(1, 9)] == ["→", "→", "→", "↓", "←", "←", "←", None]
    assert [_arrow(390, step) for step in range(1, 9)] == ["↓"] * 7 + [None]


def test_no_comment_line_inside_a_continued_command():
    """A comment line after a `\\` continuation ends the command there: bash then runs the rest as
    a command of its own. Wrapped commands keep their comment above the first line."""
    broken = [f"{block.where}: {line.strip()}" for page in pages() for block in blocks(page)
              if block.language == "bash"
              for before, line in zip(block.code.splitlines(), block.code.splitlines()[1:])
              if before.rstrip().endswith("\\") and line.strip().startswith("#")]
    assert broken == []
