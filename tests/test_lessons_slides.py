"""Every lesson section and every `minitx check` row names the slide of the talk it demonstrates, and the
slides resolve: docs/notation.md ("The talk") names the talk and sums up each of its 18 slides."""
from __future__ import annotations

import re
from pathlib import Path

from minitx.teaching import check

ROOT = Path(__file__).resolve().parent.parent
CITED = ("01_parameters.py", "02_memory.py", "03_compute.py", "04_kv_cache.py", "05_prefill_decode.py",
         "06_batching.py", "07_self_hosting.py", "08_serving.py", "09_precision.py")


def _slides(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


def test_every_lesson_section_cites_a_slide_of_the_talk():
    for name in CITED:
        sections = [line for line in (ROOT / "lessons" / name).read_text().splitlines() if line.startswith("# ## ")]
        assert sections, name
        for line in sections:
            cited = re.search(r"\(slides? ([\d, ]+)\)$", line)
            assert cited, f"{name}: {line!r} names no slide"
            assert all(1 <= n <= 18 for n in _slides(cited.group(1))), line


def test_every_check_section_and_row_gets_a_slide():
    assert set(check.SECTIONS) <= set(check.SECTION_SLIDES)
    claims = [check.Claim(section, "m", claim, 1, 1) for section in check.SECTIONS
              for claim in ("a claim", "Adam's m and v", "recompute ÷ cached step")]
    for c in check._cite_slides(claims):
        assert c.slide and all(1 <= n <= 18 for n in _slides(c.slide)), (c.section, c.claim)
        assert c.to_dict()["slide"] == c.slide
    assert "slide" in check.format_table(claims).splitlines()[2]


def test_the_docs_name_the_talk_so_citations_resolve():
    notation = (ROOT / "docs" / "notation.md").read_text()
    for fact in ("LLM Inference Arithmetics", "Luca Baggi", "PyData London", "2025-06-07", "speakerdeck.com"):
        assert fact in notation
    listed = re.findall(r"^(\d+)\. \*\*", notation, flags=re.M)
    assert [int(n) for n in listed] == list(range(1, 19))


def test_every_exercise_names_its_slide():
    """Each graded exercise (minitx grade) and each exercise file's title cite the slides they practise."""
    from minitx.teaching.grade import exercises
    for e in exercises.EXERCISES:
        assert e.slide.startswith("slide") and all(1 <= n <= 18 for n in _slides(e.slide)), e.name
    for path in sorted((ROOT / "lessons" / "exercises").glob("ex*.py")):
        title = path.read_text().splitlines()[1]
        cited = re.search(r"\(slides? ([\d, ]+(?:(?:and|to) \d+)?)\)$", title)     # "slides 13 to 16"
        assert cited and all(1 <= n <= 18 for n in _slides(cited.group(1))), (path.name, title)
