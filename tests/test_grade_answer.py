"""The free-form math grader: what it reads, what it pays, and what it refuses to pay."""

from __future__ import annotations

import pytest

from envs.math.grade import final_answer, grade_answer, parse_ground_truth

GSM = "Natalia sold 48 clips in April and half as many in May: 48 + 24 = 72.\n#### 72"

# (completion, ground_truth, expected, note). Notes starting with "adv:" are attempts to get paid
# for a wrong answer or a non-answer.
ROWS: list[tuple[str, str, bool, str]] = [
    # ---- honest answers that must be paid
    ("Tom has 3 bags of 4 apples, so 3*4 = 12. The answer is \\boxed{12}.", "12", True, "boxed integer"),
    ("She sold 48 + 24 = 72 clips.\n#### 72", GSM, True, "GSM8K #### against a GSM8K truth"),
    ("48/2 = 24, 48 + 24 = 72. The answer is 72.", GSM, True, "closing phrase"),
    ("Adding up gives 72.\nFinal Answer: 72", "72", True, "final answer colon"),
    ("**Answer:** 72", "72", True, "markdown emphasis around the phrase"),
    ("The final answer is **72**.", "72", True, "markdown emphasis around the value"),
    ("So the total is \\boxed{1,234}.", "1234", True, "thousands comma in the answer"),
    ("So the total is \\boxed{1234}.", "1,234", True, "thousands comma in the truth"),
    ("Total: \\boxed{1{,}234}", "1234", True, "LaTeX {,} thousands separator"),
    ("Total: \\boxed{1\\,234}", "1234", True, "LaTeX thin-space thousands separator"),
    ("\\boxed{0.50}", "0.5", True, "trailing zero decimal"),
    ("\\boxed{\\frac{1}{2}}", "0.5", True, "nested braces: latex fraction vs decimal"),
    ("\\boxed{1/2}", "\\frac{1}{2}", True, "slash fraction vs latex truth"),
    ("\\boxed{\\dfrac{3}{4}}", "3/4", True, "dfrac"),
    ("\\boxed{\\tfrac{6}{8}}", "0.75", True, "tfrac, unreduced"),
    ("The answer is $\\frac{3}{4}$.", "$\\frac{3}{4}$", True, "inline math on both sides"),
    ("\\boxed{-7}", "-7", True, "negative"),
    ("\\boxed{-\\frac{1}{2}}", "-0.5", True, "negative latex fraction"),
    ("\\boxed{+12}", "12", True, "leading plus"),
    ("\\boxed{012}", "12", True, "leading zero"),
    ("He pays \\boxed{\\$18}.", "18", True, "escaped dollar in the box"),
    ("The answer is $18.", "18", True, "currency sign in the phrase"),
    ("The answer is $18.00.", "18", True, "currency with cents and a full stop"),
    ("\\boxed{25\\%}", "25", True, "percent: dropped against a bare truth"),
    ("The answer is 25%.", "25%", True, "percent on both sides"),
    ("The answer is 12 apples.", "12", True, "unit word"),
    ("\\boxed{12\\text{ cm}}", "12", True, "\\text unit"),
    ("\\boxed{\\text{12}}", "12", True, "number inside \\text"),
    ("\\boxed{3/4 \\text{cup}}", "0.75", True, "fraction with a unit"),
    ("\\boxed{x = 12}", "12", True, "documented: a leading 'x =' is accepted"),
    ("\\fbox{12}", "12", True, "fbox"),
    ("\\[\\boxed{12}\\]", "12", True, "display math around the box"),
    ("\\boxed{\\boxed{12}}", "12", True, "box in a box"),
    ("First I guessed 10 but 3*4 = 12.\n\\boxed{12}\n#### 12", "12", True, "box and #### agree"),
    ("\\boxed{12} and again, to be clear, \\boxed{12.0}", "12", True, "repeated box with the same value"),
    ("The answer is 13? No, recheck: 3*4 = 12.\n\\boxed{12}", "12", True, "an earlier phrase is ignored when boxed"),
    ("\\boxed{\\text{Monday}}", "Monday", True, "textual truth, same text"),
    ("#### 12.", "12", True, "#### with a full stop"),
    ("#### Step 1: clips in May\n48/2 = 24\n#### Step 2: total\n\\boxed{72}", GSM, True, "markdown headings beside a box"),
    ("\\boxed{\\mathrm{12}}", "#### 12", True, "mathrm, bare #### truth"),
    # ---- honest but wrong or unreadable: not paid
    ("\\boxed{13}", "12", False, "plainly wrong"),
    ("\\boxed{0.333}", "1/3", False, "decimal approximation of a fraction truth"),
    ("\\boxed{1/3}", "0.333", False, "fraction vs a decimal truth: exact"),
    ("\\boxed{0.25}", "25%", False, "percent is not divided by 100"),
    ("\\boxed{25}", "0.25", False, "percent is not divided by 100 (other way)"),
    ("I think 12 is likely, 3 times 4.", "12", False, "no final-answer marker"),
    ("\\boxed{12 square feet}", "12", False, "two unit words: unreadable"),
    # ---- adversarial: hedges
    ("\\boxed{12}\\boxed{13}", "13", False, "adv: two boxes with different values"),
    ("\\boxed{12}\\boxed{13}", "12", False, "adv: two boxes, truth is the first"),
    ("Maybe \\boxed{11}, or \\boxed{12}, or \\boxed{13}", "12", False, "adv: spread of boxes"),
    ("\\boxed{12 or 13}", "12", False, "adv: alternatives in one box"),
    ("\\boxed{12, 13}", "12", False, "adv: list in one box"),
    ("\\boxed{12,13}", "12", False, "adv: 12,13 is not a thousands grouping"),
    ("\\boxed{12,13}", "1213", False, "adv: 12,13 is not 1,213"),
    ("\\boxed{12 \\text{ or } 13}", "13", False, "adv: alternatives through \\text"),
    ("\\boxed{12}\n#### 13", "13", False, "adv: a #### line after the box is not read"),
    ("\n".join(f"#### {k}" for k in range(100)), "42", False, "adv: stuffed #### lines"),
    ("The answer is 12 or 13.", "12", False, "adv: phrase with alternatives"),
    ("The answer is 12.\nThe answer is 13.", "13", False, "adv: two closing phrases disagree"),
    ("\\boxed{12 maybe}", "12", False, "adv: hedge word is not a unit"),
    ("\\boxed{12 x 13}", "12", False, "adv: two trailing tokens"),
    ("\\boxed{12 12}", "12", False, "adv: repeated number is not a unit"),
    ("\\boxed{} then \\boxed{12}", "12", False, "adv: an empty box beside an answer"),
    # ---- adversarial: non-answers and copies of the prompt
    ("\\boxed{}", "0", False, "adv: empty box"),
    ("", "0", False, "adv: empty completion"),
    ("\\boxed{3*4}", "12", False, "adv: expression is not evaluated"),
    ("\\boxed{3 \\times 4}", "12", False, "adv: latex expression is not evaluated"),
    ("\\boxed{12+0}", "12", False, "adv: padded expression"),
    ("The answer is 48 + 24.", GSM, False, "adv: prompt copied into the phrase"),
    ("#### 48+24", GSM, False, "adv: prompt copied into ####"),
    ("#### 72\nso the answer is \\boxed{72", "72", False, "adv: unclosed last box, even with ####"),
    ("\\boxed{72", "72", False, "adv: unclosed box alone"),
    ("\\boxed{" + "9" * 80 + "}", "9" * 80, False, "adv: huge answer"),
    ("\\boxed{12.0.0}", "12", False, "adv: malformed decimal"),
    ("\\boxed{1/0}", "0", False, "adv: division by zero"),
    ("\\boxed{\\frac{1}{0}}", "0", False, "adv: latex division by zero"),
    ("\\boxed{--12}", "12", False, "adv: double sign"),
    ("\\boxed{+-12}", "-12", False, "adv: mixed signs"),
    ("\\boxed{١٢}", "12", False, "adv: Arabic-Indic digits"),
    ("\\boxed{１２}", "12", False, "adv: full-width digits"),
    ("\\boxed{1.2e1}", "12", False, "adv: scientific notation"),
    ("\\boxed{twelve}", "12", False, "adv: word for a numeric truth"),
    ("\\boxed{12}", "twelve", False, "adv: number for a textual truth"),
    ("\\boxed{x}", "12", False, "adv: a variable"),
    ("\\boxed{x = 12 = 13}", "12", False, "adv: chained equation"),
    ("The answer is 12." + " Filler." * 100, "12", False, "adv: phrase far from the end"),
    ("The answer is", "0", False, "adv: phrase with no value"),
    ("\\boxed{\\infty}", "inf", False, "adv: latex infinity vs a textual truth"),
    ("\\boxed{nan}", "nan", True, "textual truth compared as text, never as a float"),
]


@pytest.mark.parametrize(("completion", "ground_truth", "expected", "note"), ROWS, ids=[r[3] for r in ROWS])
def test_grade_answer(completion: str, ground_truth: str, expected: bool, note: str) -> None:
    assert grade_answer(completion, ground_truth) is expected, note


def test_table_is_large_and_mostly_adversarial_enough() -> None:
    adversarial = [r for r in ROWS if r[3].startswith("adv:")]
    assert len(ROWS) >= 45
    assert 3 * len(adversarial) >= len(ROWS)
    assert not any(r[2] for r in adversarial), "an adversarial row must never be paid"


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        ("work... \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
        ("\\boxed{a{b{c}}d}", "a{b{c}}d"),
        ("\\boxed{12}\\boxed{12}", "12"),
        ("#### 5\n#### 5", "5"),
        ("so the answer is: 42. Thanks!", "42"),
        ("Answer: $7$\n", "$7$"),
        ("\\boxed{12}\\boxed{13}", None),
        ("\\boxed{12", None),
        ("\\boxed{}", None),
        ("no answer here", None),
    ],
)
def test_final_answer(completion: str, answer: str | None) -> None:
    assert final_answer(completion) == answer


@pytest.mark.parametrize(
    ("truth", "parsed"),
    [
        ("Half of 48 is 24.\n48 + 24 = <<48+24=72>>72\n#### 72", "72"),
        ("#### 1,234", "1,234"),
        ("steps #### 3\n#### 4", "4"),
        ("  72 ", "72"),
        ("\\frac{3}{4}", "\\frac{3}{4}"),
        ("-7", "-7"),
    ],
)
def test_parse_ground_truth(truth: str, parsed: str) -> None:
    assert parse_ground_truth(truth) == parsed


def test_a_long_completion_is_graded_quickly() -> None:
    # linear scanning: long reasoning, deeply nested boxes or many #### lines do not blow up
    assert grade_answer("3*4 = 12. " * 20000 + "\\boxed{12}", "12")
    assert not grade_answer("\\boxed{" * 20000 + "12" + "}" * 20000, "12")  # too long once unwrapped
    assert not grade_answer("\\boxed{" * 20000 + "12", "12")
    assert not grade_answer("#### 1\n" * 20000 + "#### 2", "2")
