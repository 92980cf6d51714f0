"""VQA's answer rules for a new question/answer data set: answer normalisation, soft scores
and the answer table (`tools.make_qa_dataset` uses them; docs/own_qa_data.md).

Normalisation (`normalize_answer`) is the one VQA's answer files were made with, the rule behind
the answers of LXMERT's tables (e.g. "t shirt", "don't know", "12:35", "2.00" in the 3129-answer
table), followed by LXMERT's own `convert_answer` (the one its QA-head surgery applies, e.g.
"grey" -> "gray"), so an answer is spelled as the pre-trained answer head knows it:

1. punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when the text
   has it next to a space (or holds a digit-comma-digit group), else replaced by a space;
   a period is deleted unless a digit follows it ("2.00" keeps its period);
2. words: lower case; number words "none", "zero" ... "ten" become digits; the articles "a",
   "an" and "the" are dropped; apostrophe-less contractions get their apostrophes back
   ("dont" -> "don't");
3. LXMERT's `convert_answer`.

Soft scores (`soft_scores`) follow VQA's accuracy: an answer given by the annotators scores
the mean, over the k subsets that leave one of the k given answers out, of
min(1, matches in the subset / 3). With VQA's ten answers per question that is 0.3, 0.6, 0.9
and 1.0 for 1, 2, 3 and 4+ matching answers: the values of the `label` field of LXMERT's VQA
files. With fewer than four answers VQA's rule could never give full credit (a subset holds
fewer than three), so full credit then needs all k - 1 others: two or three identical answers
score 1.0, "red|red|blue" scores red 2/3 and blue 1/3. A single answer scores 1.0.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

from lxrt.loading import convert_answer

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
# The contractions VQA restores. Each is also recognised with any of its apostrophes missing
# ("couldnt've", "couldn'tve", "couldntve" -> "couldn't've").
CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've "
    "hasn't haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am "
    "mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't "
    "she'd've should've shouldn't shouldn't've somebody'd've somebody'll somebody's someone'd "
    "someone'd've someone'll someone's something'd something'd've something'll that's there'd "
    "there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've "
    "we've weren't what'll what're what's what've when's where'd where's where've who'd "
    "who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've "
    "y'all y'all'll y'all'd've you'd you'd've you'll you're you've").split()
# VQA's accuracy: an answer counts fully once this many other annotators gave it (all the
# others when there are fewer)
FULL_CREDIT_MATCHES = 3
YES_NO = frozenset({"yes", "no"})


def _without_apostrophes(word: str) -> set[str]:
    """Every spelling of `word` with a non-empty subset of its apostrophes removed."""
    spots = [i for i, c in enumerate(word) if c == "'"]
    out = set()
    for mask in range(1, 2 ** len(spots)):
        drop = {spots[b] for b in range(len(spots)) if mask >> b & 1}
        out.add("".join(c for i, c in enumerate(word) if i not in drop))
    return out


RESTORE_APOSTROPHES = {spelling: word for word in CONTRACTIONS
                       for spelling in _without_apostrophes(word)}


def strip_punctuation(text: str) -> str:
    """Step 1 of `normalize_answer` (VQA's punctuation rule)."""
    glued = bool(_DIGIT_COMMA_DIGIT.search(text))
    out = text
    for mark in PUNCTUATION:
        delete = glued or f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if delete else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def normalize_words(text: str) -> str:
    """Step 2 of `normalize_answer`: case, number words, articles, contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(RESTORE_APOSTROPHES.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """An answer as VQA's answer files and LXMERT's answer tables spell it ("" if nothing is
    left, e.g. for "the" or "?")."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return convert_answer(normalize_words(strip_punctuation(text))).strip()


def soft_scores(answers: Sequence[str]) -> dict[str, float]:
    """{answer: VQA accuracy} of each distinct (already normalised) answer among `answers`,
    the k answers annotators gave to one question; see the module docstring. Rounded to 6
    places, so ten answers give exactly LXMERT's 0.3 / 0.6 / 0.9 / 1.0."""
    k = len(answers)
    if k == 0:
        raise ValueError("a question needs at least one answer")
    if k == 1:
        return {answers[0]: 1.0}
    full = min(FULL_CREDIT_MATCHES, k - 1)
    out = {}
    for answer, n in Counter(answers).items():
        # leaving out one of the n matching answers leaves n - 1 matches (n such subsets);
        # leaving out any other answer leaves n (k - n subsets)
        left_out_match = min(1.0, (n - 1) / full)
        left_out_other = min(1.0, n / full)
        out[answer] = round((n * left_out_match + (k - n) * left_out_other) / k, 6)
    return out


def top_answer(answers: Sequence[str]) -> str:
    """The most frequent answer (the first given among equals): VQA's `multiple_choice_answer`."""
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


def answer_type(answer: str) -> str:
    """VQA's answer types: "yes/no", "number" (digits) or "other"."""
    if answer in YES_NO:
        return "yes/no"
    return "number" if answer.isdigit() else "other"


def answer_table(top_answers: Iterable[str], max_answers: int,
                 min_count: int = 1) -> tuple[list[str], Counter]:
    """(label2ans, counts): the answers that are the top answer of at least `min_count`
    questions, most frequent first (ties alphabetical), at most `max_answers` of them; `counts`
    holds every top answer's count, kept or not. As VQA's table, it counts each question's
    top answer once."""
    counts = Counter(top_answers)
    ranked = sorted((a for a, n in counts.items() if n >= min_count),
                    key=lambda a: (-counts[a], a))
    return ranked[:max_answers], counts
