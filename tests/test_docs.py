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
