"""The manual cannot drift from the code: every command README.md and docs/*.md show names a
script that exists and flags its --help lists, config files that exist and config keys the
config has, make targets the Makefile has; every link between the pages (and to files of
the repository) resolves, anchors included; every docs page is reachable from the README.
The --help runs are forked from one process that imported torch once (tests/forked_runs.py).
"""

import json
import os
import re
import subprocess
import sys

from lastreid.startup import build_cfg

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.join("docs", n) for n in os.listdir(os.path.join(REPO, "docs")) if n.endswith(".md")
)
SCRIPT = re.compile(r"(?:^|[\s/])((?:tools|benchmarks)/[a-z_]+\.py)\b")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
CONFIG_FILE = re.compile(r"\bconfigs/[\w./-]+\.yml\b")
CONFIG_KEY = re.compile(
    r"(?<![\w.])((?:MODEL|INPUT|DATASETS|DATALOADER|SOLVER|TEST)\.[A-Z0-9_.]+[A-Z0-9])"
)
MAKE = re.compile(r"^\s*make ([a-z-]+)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Flags of launchers and of python itself, not of our scripts.
FOREIGN_FLAGS = {
    "--standalone", "--nproc-per-node", "--nnodes", "--node-rank", "--master-addr",
    "--master-port", "--rdzv-backend", "--rdzv-id", "--rdzv-endpoint", "--nodes",
    "--ntasks-per-node", "--gpus-per-node", "--cpus-per-task", "--no-deps", "--only-binary",
    "--python-version", "--platform", "--no-index", "--target", "--no-build-isolation",
}  # fmt: skip


def read(page):
    with open(os.path.join(REPO, page)) as f:
        return f.read()


def code_lines(text):
    """The command lines of a page's code blocks (indented 4 spaces or fenced), with their
    backslash continuations joined; comments after `#` dropped."""
    lines, fenced, joined = [], False, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            continue
        text = joined + line.strip()
        if text.endswith("\\"):
            joined = text[:-1].rstrip() + " "
            continue
        joined = ""
        lines.append(text.split("  #")[0].split(" # ")[0])
    return lines


def commands():
    """[(page, script, flags used with it)] of every shown command."""
    found = []
    for page in PAGES:
        for line in code_lines(read(page)):
            scripts = SCRIPT.findall(line)
            if scripts:
                found.append((page, scripts[-1], set(FLAG.findall(line)) - FOREIGN_FLAGS))
    return found


@pytest.fixture(scope="module")
def helps(tmp_path_factory):
    """{script: the text of its --help}, each run in its own forked process."""
    tmp = tmp_path_factory.mktemp("helps")
    scripts = sorted({script for _, script, _ in commands()})
    cases = [
        {"name": s, "argv": [os.path.join(REPO, s), "--help"], "moment": None, "output": None}
        for s in scripts
    ]
    (tmp / "cases.json").write_text(json.dumps(cases))
    runner = os.path.join(REPO, "tests", "forked_runs.py")
    subprocess.run(
        [sys.executable, runner, str(tmp / "cases.json"), str(tmp / "results.json")],
        cwd=REPO,
        check=True,
        timeout=900,  # a guard against a hang only
    )
    return json.loads((tmp / "results.json").read_text())


def test_the_pages_show_commands_of_every_tool():
    shown = {script for _, script, _ in commands()}
    tools = {f"tools/{n}" for n in os.listdir(os.path.join(REPO, "tools")) if n.endswith(".py")}
    assert tools - shown == set()


def test_every_command_shown_exists_and_its_flags_are_in_its_help(helps):
    for page, script, flags in commands():
        result = helps[script]
        assert result["status"] == 0, (page, script, result["stderr"][-2000:])
        listed = set(FLAG.findall(result["stdout"]))
        assert flags <= listed, (page, script, sorted(flags - listed))


def test_config_files_and_keys_shown_exist():
    cfg = build_cfg("", ["MODEL.BACKBONE.PRETRAIN", "False"])
    for page in PAGES:
        text = read(page)
        for path in CONFIG_FILE.findall(text):
            assert os.path.isfile(os.path.join(REPO, path)), (page, path)
        for key in set(CONFIG_KEY.findall(text)):
            node = cfg
            for part in key.split("."):
                assert part in node, (page, key)
                node = node[part]


def test_make_targets_shown_exist():
    makefile = read("Makefile")
    for page in PAGES:
        for line in code_lines(read(page)):
            found = MAKE.match(line)
            if found:
                assert re.search(rf"^{found.group(1)}:", makefile, re.M), (page, line)


def anchors(page):
    """GitHub's anchors of a page's headings."""
    found = set()
    for line in read(page).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title)
            found.add(title.replace(" ", "-"))
    return found


def test_links_resolve_and_every_page_is_reachable_from_the_readme():
    linked = {}
    for page in PAGES:
        folder = os.path.dirname(page)
        for target in LINK.findall(read(page)):
            if re.match(r"^[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(folder, path)) if path else page
            assert os.path.exists(os.path.join(REPO, path)), (page, target)
            if anchor:
                assert anchor in anchors(path), (page, target, sorted(anchors(path)))
            linked.setdefault(page, set()).add(path)
    reached, todo = {"README.md"}, ["README.md"]
    while todo:
        for path in linked.get(todo.pop(), ()):
            if path.endswith(".md") and path not in reached:
                reached.add(path)
                todo.append(path)
    assert set(PAGES) - reached == set()


def test_the_readme_is_short_and_opens_with_the_commands_a_newcomer_needs():
    lines = read("README.md").splitlines()
    assert len(lines) <= 210
    first_screen = "\n".join(lines[:60])
    for command in ("make demo", "make test", "--config-file configs/LaST/bagtricks_R50.yml"):
        assert command in first_screen, command
    assert "--eval-only" in first_screen


def test_code_lines_joins_continuations_and_drops_comments():
    # The reader the tests above rely on, on a tiny page.
    text = "x\n\n    tools/a.py --one \\\n        --two  # a --three\n\n```\nmake demo\n```\n"
    assert code_lines(text) == ["tools/a.py --one --two", "make demo"]
    assert FLAG.findall(code_lines(text)[0]) == ["--one", "--two"]
