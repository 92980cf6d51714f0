"""The documentation stands alone: its links and section anchors resolve inside the repository
(code comments cite docs/authors_code.md by section name, so its headings must stay findable)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "data" / "README.md",
        ROOT / "tests" / "fixtures" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(line.lstrip("#")) for line in path.read_text().splitlines()
            if line.startswith("#")}


def test_every_local_link_and_anchor_resolves():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (doc.parent / file_part).resolve() if file_part else doc
            if not linked.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such section)")
    assert not broken, "\n".join(broken)


def test_docs_refer_to_nothing_outside_the_repository():
    for doc in DOCS:
        text = doc.read_text()
        # spelled in pieces so that this file does not match the search it enforces
        for outside in ("../" + "shared", "shared" + "/spec", "shared" + "/perf",
                        "reference" + ".md", "\u00a7"):
            assert outside not in text, f"{doc.relative_to(ROOT)} refers to {outside}"


def test_authors_code_has_the_sections_code_comments_cite():
    anchors = _anchors(ROOT / "docs" / "authors_code.md")
    for section in ("Word-level position ids", "Answer-table surgery", "Training recipe",
                    "Retrieval protocols", "BertAdam", "State-dict keys",
                    "Parity fixtures and tolerances", "Data locations"):
        assert _anchor(section) in anchors, section


CITATION = re.compile(r"authors_code\.md,([^)]*)\)")


def cited_sections(text: str) -> list[str]:
    """Section names cited as `(docs/authors_code.md, "Name" and "Other")`, also when the
    citation wraps over comment lines or sits in an escaped string."""
    sections = []
    for match in CITATION.finditer(text):
        body = match.group(1).replace("\\n", " ").replace("\\", "").replace("#", "")
        body = re.sub(r"\s+", " ", body)
        sections += re.findall(r'"([^"]+)"', body)
    return sections


def test_every_cited_section_of_authors_code_exists():
    anchors = _anchors(ROOT / "docs" / "authors_code.md")
    sources = [p for d in ("src", "tests", "bench") for p in (ROOT / d).rglob("*.py")
               if p.name != "test_docs.py"]
    cited = {(path, section) for path in sources for section in cited_sections(path.read_text())}
    assert len(cited) >= 10, "the citation pattern no longer finds the code's citations"
    missing = [f"{path.relative_to(ROOT)}: {section!r}" for path, section in sorted(cited)
               if _anchor(section) not in anchors]
    assert not missing, "\n".join(missing)


def test_cited_sections_reads_wrapped_citations():
    text = '# x (docs/authors_code.md, "Parity fixtures\n# and tolerances" and "VQA")'
    assert cited_sections(text) == ["Parity fixtures and tolerances", "VQA"]


# ---------------------------------------------------------------- measured figures live once
RESULTS = ROOT / "docs" / "results.md"
# a number with a decimal point or thousands separators (not part of a version, date or name)
NUMBER = re.compile(r"(?<![\w.\-/#])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+)(?!\.\d)(?=x?\b)")
# a table of figures published elsewhere (the paper's targets) follows this marker
PUBLISHED = "<!-- published figures"
# the shape of a measurement: a rate, a speed-up, a percentage with decimals, a duration
MEASUREMENT = re.compile(r"\d[\d,.]*\s*(?:samples/s|pairs/s|sentences/s|items/s|s/step)\b"
                         r"|\b\d+\.\d+x\b|\b\d+\.\d+\s?%|\b\d+(?:\.\d+)? (?:min|minutes)\b")


# sizes of the model and its tables, which any document may name
CONSTANTS = {"30,522", "2,048", "3,129", "1,842", "9,500"}


def figures_of(text: str) -> set:
    """The numbers of `text` precise enough to be a measurement (three significant digits or
    more: 99.99, 87,530, 1.12), not a setting, a round count (0.1, 5,000) or a size of the
    model (the vocabulary's 30,522 word pieces)."""
    return {n for n in NUMBER.findall(text)
            if len(re.sub(r"\D", "", n).strip("0")) >= 3 and n not in CONSTANTS}


def test_every_measured_figure_lives_once_in_results_md():
    """docs/results.md holds every measured figure with its date and machine; the README and
    the other documents link to it instead of repeating (and so contradicting) one."""
    figures = figures_of(RESULTS.read_text())
    assert len(figures) > 50, "the figure pattern no longer finds results.md's figures"
    offences = []
    for doc in DOCS:
        if doc == RESULTS:
            continue
        published = False
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            published = line.startswith(PUBLISHED) or (published and bool(line.strip()))
            if published:
                continue
            where = f"{doc.relative_to(ROOT)}:{n}"
            offences += [f"{where}: {f} is a figure of docs/results.md"
                         for f in sorted(figures_of(line) & figures)]
            offences += [f"{where}: a measurement, {m.group(0)!r}: it belongs in "
                         f"docs/results.md" for m in MEASUREMENT.finditer(line)]
    assert not offences, "\n".join(offences)


def test_the_figure_checks_can_fail():
    assert figures_of("99.99% at 87,530 sentences/s, 1.12x; lr 0.1, 5,000 images, v2.13.0") \
        == {"99.99", "87,530", "1.12"}
    assert [m.group(0) for m in MEASUREMENT.finditer("1,493 pairs/s, 1.16x, 23.7 minutes")] \
        == ["1,493 pairs/s", "1.16x", "23.7 minutes"]


# ---------------------------------------------------------------- architecture.md and the code
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def tree_paths(text: str) -> list:
    """Every file and folder the code block under "The tree" names, as paths from the
    repository root: a line's leading names (before two spaces), under the folders above it
    (by indentation); the aligned description lines are skipped."""
    block = text.split("## The tree", 1)[1].split("```", 2)[1]
    stack, paths = [], []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        if not line.strip() or indent >= 20 or not re.fullmatch(r"[\w.]+/?(, [\w.]+/?)*", head):
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        names = head.split(", ")
        paths += [parent + name for name in names]
        if len(names) == 1 and names[0].endswith("/"):
            stack.append((indent, parent + names[0]))
    return paths


def named_code(text: str) -> list:
    """Paths (`src/...`, `tests/...`, `run/...`) and dotted names (`tasks.common.task.TaskBase`)
    in backticks."""
    spans = re.findall(r"`([^`\s]+)`", text)
    paths = [s for s in spans if re.match(r"(src|tests|run|bench|docs|data)/[\w./]*$", s)]
    dotted = [re.match(r"[\w.]+", s).group(0) for s in spans
              if re.match(r"(lxrt|tasks|tools)\.\w", s)]
    return paths + dotted


def resolves(name: str) -> bool:
    """A path that exists, or a dotted name whose module exists and defines what follows."""
    if "/" in name:
        return (ROOT / name).exists()
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        base = ROOT / "src" / Path(*parts[:k])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else \
            base / "__init__.py"
        if module.is_file():
            rest = parts[k:]
            return not rest or re.search(rf"^\s*(def|class) {rest[0]}\b|^{rest[0]} =",
                                         module.read_text(), re.M) is not None
    return False


def test_architecture_md_names_only_what_exists():
    text = ARCHITECTURE.read_text()
    tree = tree_paths(text)
    assert len(tree) > 60 and "src/tasks/common/registry.py" in tree
    named = named_code(text)
    assert len(named) > 10
    missing = [p for p in tree + named if not resolves(p)]
    assert not missing, f"docs/architecture.md names what the code does not have: {missing}"


def test_the_tree_reader_sees_a_missing_file():
    text = "## The tree\n\n```\nsrc/\n  lxrt/\n    config.py   x\n    nothing.py\n```\n"
    assert tree_paths(text) == ["src/", "src/lxrt/", "src/lxrt/config.py", "src/lxrt/nothing.py"]
    assert [resolves(p) for p in tree_paths(text)] == [True, True, True, False]
    assert resolves("tasks.common.task.TaskBase") and not resolves("tasks.common.task.Nope")
