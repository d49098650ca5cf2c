"""The table of math verdicts gradus must give: (kind, gold, completion, expected pass).

Written for gradus, in the shapes of math-verify's own tests (huggingface/Math-Verify `tests/`:
a gold in `$…$` or bare, a prediction that is a whole answer text) and of the completions real
models write and trainers' reward code reads (verl's / open-r1's: `\\boxed{}`, "The answer is",
GSM8K's `####`, Minerva's "Final Answer:"). `expected` is the verdict a careful grader gives.

Kinds:
- `math_verify_style`: notation (delimiters, fractions, roots, sets, intervals, tuples, units,
  thousands separators) with a short prediction;
- `realistic`: whole completions with reasoning, several numbers and an answer marker, including
  every wrong verdict issue 21 lists;
- `bare_latex_gold`: golds as MATH-style datasets store them (`\\frac{\\pi}{2}`, `(2, 3)`);
- `digits`: digits of other scripts (issue 22, case 8).
"""

MATH_VERIFY_STYLE = [
    ("$9$", "Answer $ 9 $", True),
    ("$9$", "Answer \\[ 9 \\]", True),
    ("$9$", "Answer \\( 9 \\)", True),
    ("$9$", "Answer $$ 9 $$", True),
    ("$10$", "Answer \\( (9+1) \\)", True),
    ("$9$", "Answer \\[ \n 9 \n \\]", True),
    ("$1/3$", "$\\frac13 $", True),
    ("$1/3$", "$\\dfrac{1}{3}$", True),
    ("$1/3$", "$\\tfrac{1}{3}$", True),
    ("$1/3$", "$ 1/3 $", True),
    ("$1/3$", "$\\frac{2}{3}$", False),
    ("$\\sqrt{3}$", "$\\sqrt3 $", True),
    ("$\\sqrt{3}$", "$\\sqrt{3}$", True),
    ("$\\sqrt{3}$", "$3$", False),
    ("$3\\sqrt{13}$", "$3\\sqrt{13}$", True),
    ("$3\\sqrt{13}$", "$\\sqrt{117}$", True),
    ("$3\\sqrt{13}$", "$3$", False),
    ("$-5$", "$-5$", True),
    ("$-5$", "$5$", False),
    ("$7425000$", "$7,425,000$", True),
    ("$1000$", "$1{,}000$", True),
    ("$0.4$", "$.4$", True),
    ("$0.5$", "$\\frac{1}{2}$", True),
    ("$\\frac{1}{2}$", "$0.5$", True),
    ("$\\frac{1}{2}$", "$0.6$", False),
    ("$10/9$", "$\\frac{10}{9}$", True),
    ("$-10/9$", "$-\\frac{10}{9}$", True),
    ("$\\frac{10}{9}$", "$\\frac{9}{10}$", False),
    ("$[0,1)$", "$[0,1)$", True),
    ("$[0,9)$", "$[0,1)$", False),
    ("$(0,9)$", "$[0,9)$", False),
    ("$(2, 3)$", "$(2,3)$", True),
    ("$(2, 3)$", "$(3, 2)$", False),
    ("$\\{1,2\\}$", "$\\{2,1\\}$", True),
    ("$\\{1,2\\}$", "$\\{1,3\\}$", False),
    ("$x^2+1$", "$1+x^2$", True),
    ("$x^2+1$", "$x^2-1$", False),
    ("$2x+3$", "$3+2x$", True),
    ("$\\pi$", "$\\pi$", True),
    ("$\\frac{\\pi}{2}$", "$\\pi/2$", True),
    ("$\\frac{\\pi}{2}$", "$\\frac{\\pi}{3}$", False),
    ("$\\infty$", "$\\infty$", True),
    ("$-\\infty$", "$\\infty$", False),
    ("$x=5$", "$5$", True),
    ("$5$", "$x = 5$", True),
    ("$5$", "$x = 6$", False),
    ("$20\\%$", "$20\\%$", True),
    ("$12$", "$12$ cm", True),
    ("$12$", "$13$ cm", False),
    ("$2$", "$\\boxed{2}$", True),
    ("$2$", "$\\boxed{3}$", False),
    ("$\\frac{7}{2}$", "$\\boxed{\\frac{7}{2}}$", True),
    ("$\\frac{7}{2}$", "$\\boxed{3.5}$", True),
    ("$\\text{(B)}$", "$\\boxed{\\text{(B)}}$", True),
    ("$\\text{(B)}$", "$\\boxed{\\text{(C)}}$", False),
    ("$e^{i\\pi}$", "$-1$", True),
    ("$2^{10}$", "$1024$", True),
    ("$\\sqrt{2}/2$", "$\\frac{\\sqrt{2}}{2}$", True),
    ("$\\sqrt{2}/2$", "$\\frac{1}{\\sqrt{2}}$", True),
    ("$6$", "$\\binom{4}{2}$", True),
]

REALISTIC = [
    # The wrong verdicts of issue 21: wrong answers that passed.
    ("4", "We need three quarters of the cake. So the answer is $\\frac{3}{4}$.", False),
    ("3", "The side length is $\\sqrt{3}$.", False),
    ("(2, 3)", "Solving both equations gives $x = 5$, $y = 3$. \\boxed{(5, 3)}", False),
    ("3", "Using the Pythagorean theorem, the distance is \\boxed{3\\sqrt{13}}.", False),
    # ... and right answers that failed.
    ("\\frac{5}{2}", "Dividing, we get $\\frac{10}{4}$, which simplifies to \\boxed{\\dfrac{5}{2}}.", True),
    ("14916", "Adding the two amounts: 12,000 + 2,916 = 14,916. The total is \\boxed{14{,}916}.", True),
    ("18", "Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = 18 dollars.\n#### 18\nNote: 3 eggs for breakfast, 4 for muffins.", True),
    ("10/9", "Simplifying the ratio, x = \\frac{10}{9}", True),
    ("9", "Simplifying the ratio, x = \\frac{10}{9}", False),
    # Answer phrases.
    ("12", "There are 3 boxes with 4 apples each, so 3 * 4 = 12. The answer is 12.", True),
    ("12", "There are 3 boxes with 4 apples each. The answer is 12 apples.", True),
    ("13", "There are 3 boxes with 4 apples each. The answer is 12 apples, not 13.", False),
    ("72", "Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 72 clips.\n#### 72", True),
    ("24", "Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 72 clips.\n#### 72", False),
    ("10", "Weng earns 12/60 = $0.2 per minute.\nFor 50 minutes she earned 0.2 x 50 = $10.\n#### 10", True),
    ("1250", "The price is 1,000 + 250 = 1,250 dollars.\n#### 1,250", True),
    ("5", "Final Answer: The final answer is $5$. I hope it is correct.", True),
    ("5", "We have $2 + 3 = 5$ and $5 - 1 = 4$.\nFinal Answer: The final answer is $5$. I hope it is correct.", True),
    ("4", "We have $2 + 3 = 5$ and $5 - 1 = 4$.\nFinal Answer: The final answer is $5$. I hope it is correct.", False),
    ("\\frac{1}{2}", "The probability is one half.\nFinal Answer: $\\frac{1}{2}$", True),
    ("\\frac{1}{2}", "Each outcome is equally likely. The answer is: $\\frac{1}{2}$", True),
    ("0.5", "Each outcome is equally likely. The answer is \\frac{1}{2}.", True),
    ("\\frac{1}{3}", "Each outcome is equally likely. The answer is \\frac{1}{2}.", False),
    ("(2, 3)", "Substituting back, the solution is the pair. The answer is (2, 3).", True),
    ("(2, 3)", "Substituting back, the solution is the pair. The answer is (3, 2).", False),
    ("x^2+1", "Expanding and collecting terms, the answer is $1 + x^2$.", True),
    ("-3", "Moving everything to one side, x = -3. The answer is -3.", True),
    ("3", "Moving everything to one side, x = -3. The answer is -3.", False),
    ("0.000025", "Converting to standard form, the answer is 2.5e-05.", True),
    ("18", "The shirt costs $10 and the hat costs $8, so the answer is $18.", True),
    ("18", "The shirt costs $10 and the hat costs $8, so she pays $18 in total.", True),
    ("8", "The shirt costs $10 and the hat costs $8, so she pays $18 in total.", False),
    # Boxes and tags.
    ("42", "First, 6 * 7 = 42. Therefore the answer is \\boxed{42}.", True),
    ("42", "First, 6 * 7 = 42. Checking 6 + 7 = 13. \\boxed{42}", True),
    ("13", "First, 6 * 7 = 42. Checking 6 + 7 = 13. \\boxed{42}", False),
    ("\\frac{\\pi}{2}", "The angle is a right angle, so $\\theta = \\boxed{\\frac{\\pi}{2}}$.", True),
    ("\\frac{\\pi}{4}", "The angle is a right angle, so $\\theta = \\boxed{\\frac{\\pi}{2}}$.", False),
    ("7", "<think>3 + 4 = 7</think>\n<answer>7</answer>", True),
    ("7", "<think>3 + 4 = 7, or maybe 8</think>\n<answer>8</answer>", False),
    ("\\frac{3}{4}", "<think>Three of four parts.</think><answer>\\frac{3}{4}</answer>", True),
    ("3", "<think>Three of four parts.</think><answer>\\frac{3}{4}</answer>", False),
    ("3\\sqrt{13}", "<answer>$3\\sqrt{13}$</answer>", True),
    # No marker: the last number, never a number cut out of LaTeX.
    ("12", "3 boxes of 4 apples make 12", True),
    ("4", "3 boxes of 4 apples make 12", False),
    ("\\frac{10}{9}", "So we get $x = \\frac{10}{9}$.", True),
    ("9", "So we get $x = \\frac{10}{9}$.", False),
    ("12", "We have $x = 3$ boxes, and the total is 12.", True),
    ("3", "We have $x = 3$ boxes, and the total is 12.", False),
    ("13", "so the distance is 3\\sqrt{13}", False),
    ("3\\sqrt{13}", "so the distance is 3\\sqrt{13}", True),
]

BARE_LATEX_GOLD = [
    ("\\frac{\\pi}{2}", "\\boxed{\\frac{\\pi}{2}}", True),
    ("\\frac{\\pi}{2}", "\\boxed{\\pi}", False),
    ("(2, 3)", "\\boxed{(2, 3)}", True),
    ("(2, 3)", "\\boxed{3}", False),
    ("3\\sqrt{13}", "\\boxed{3\\sqrt{13}}", True),
    ("3\\sqrt{13}", "\\boxed{3}", False),
    ("\\sqrt{3}", "\\boxed{3}", False),
    ("\\{1, 2\\}", "\\boxed{\\{2, 1\\}}", True),
    ("[0, 1)", "\\boxed{[0, 1)}", True),
    ("[0, 1)", "\\boxed{(0, 1)}", False),
    ("x^2 + 1", "\\boxed{x^2+1}", True),
    ("x^2 + 1", "\\boxed{x^2}", False),
    ("-\\infty", "\\boxed{-\\infty}", True),
    ("\\text{(C)}", "\\boxed{\\text{(C)}}", True),
    ("\\text{(C)}", "\\boxed{\\text{(D)}}", False),
    ("$\\frac{1}{2}$", "\\boxed{0.5}", True),
    ("\\dfrac{5}{2}", "\\boxed{\\frac{5}{2}}", True),
]

DIGITS = [
    ("42", "The answer is \uff14\uff12.", True),  # fullwidth ４２
    ("42", "The answer is 4\uff12.", True),  # 4２: one ASCII, one fullwidth
    ("42", "The answer is \u0664\u0662.", True),  # Arabic-Indic ٤٢
    ("42", "\\boxed{\u0664\u0662}", True),
    ("42", "The answer is \u0664\u0663.", False),  # ٤٣
    ("\u0664\u0662", "The answer is 42.", True),
]

CASES = (
    [("math_verify_style", *c) for c in MATH_VERIFY_STYLE]
    + [("realistic", *c) for c in REALISTIC]
    + [("bare_latex_gold", *c) for c in BARE_LATEX_GOLD]
    + [("digits", *c) for c in DIGITS]
)
