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
