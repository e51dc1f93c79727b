"""Plain numbers in normalised answers: ``1,000``, ``0.25``, ``4.5e33``, ``3\\times10^{8}``, ``\\frac{3}{4}``,
``3/4``, ``1\\frac{4}{5}``, as an exact ``Fraction`` and whether it is exact (integers and fractions of
integers are; decimals and e-notation are measurements), and their comparison (see grade.py's rule 3)."""

from __future__ import annotations

import re
from fractions import Fraction

REL_TOL = 1e-4
ABS_TOL = 1e-12  # used only when one side is exactly 0 (else 1/2^99 would "equal" 1/2^98)

Number = tuple[Fraction, bool]  # (value, exact)

_UNSIGNED = r"(?:\d{1,3}(?:, ?\d{3})+|\d+)(?:\.\d*)?|\.\d+"  # "11, 111, 100" from 11,\! 111,\! 100
_TIMES_TEN = r"\s*(?:\\times|\\cdot|\*)\s*10\s*\^\s*\{?\s*(?P<exp2>[+-]?\d+)\s*\}?"  # 3\times10^{8}
_PLAIN_RE = re.compile(rf"(?P<mant>{_UNSIGNED})(?:[eE](?P<exp>[+-]?\d+)|{_TIMES_TEN})?")


def _plain(s: str) -> Number | None:
    """'1,000', '0.25', '4.5e33', '3\\times10^{8}' (unsigned)."""
    m = _PLAIN_RE.fullmatch(s.strip())
    if not m:
        return None
    mant = m["mant"].replace(",", "").replace(" ", "")
    exp = m["exp"] or m["exp2"]
    if exp is not None and abs(int(exp)) > 400:  # keep Fraction arithmetic cheap
        return None
    value = Fraction(mant + "0" if mant.endswith(".") else mant)
    if exp is not None:
        value *= Fraction(10) ** int(exp)
    # Decimals and e-notation are measurements (compared with tolerance); integers are exact.
    return value, "." not in mant and m["exp"] is None


def _signed(s: str) -> Number | None:
    s = s.strip()
    sign = -1 if s.startswith("-") else 1
    num = _plain(s.lstrip("+-").strip())
    return None if num is None else (sign * num[0], num[1])


def _frac_args(rest: str) -> tuple[str, str] | None:
    """The two arguments of ``\\frac``: ``{a}{b}``, ``ab`` (single digits), ``a{b}``, ``{a}b``."""
    args = []
    rest = rest.strip()
    for _ in range(2):
        if rest.startswith("{"):
            end = rest.find("}")
            if end < 0 or "{" in rest[1:end]:
                return None
            args.append(rest[1:end])
            rest = rest[end + 1 :].strip()
        elif rest[:1].isdigit():
            args.append(rest[0])
            rest = rest[1:].strip()
        else:
            return None
    return (args[0], args[1]) if not rest else None


def parse_number(s: str) -> Number | None:
    """A plain (normalised) number as (Fraction value, exact), or None if ``s`` is anything else."""
    s = s.strip()
    sign = -1 if s.startswith("-") else 1
    body = s[1:].strip() if s[:1] in "+-" else s
    m = re.fullmatch(r"(?:(?P<whole>\d+)\s*)?\\frac(?P<rest>.*)", body)
    if m:
        args = _frac_args(m["rest"])
        if args is None:
            return None
        num, den = _signed(args[0]), _signed(args[1])
        if num is None or den is None or den[0] == 0:
            return None
        value, exact = num[0] / den[0], num[1] and den[1]
        if m["whole"]:  # mixed number 1\frac{4}{5} = 9/5 (the MATH convention)
            if value < 0:
                return None
            value += int(m["whole"])
        return sign * value, exact
    if body.count("/") == 1:
        a, b = (_signed(x) for x in body.split("/"))
        if a is None or b is None or b[0] == 0:
            return None
        return sign * a[0] / b[0], a[1] and b[1]
    num = _plain(body)
    return None if num is None else (sign * num[0], num[1])


def numbers_close(a: Number, b: Number) -> bool:
    """Exact equality when both are exact, else relative ``REL_TOL`` (absolute ``ABS_TOL`` near 0)."""
    if a[1] and b[1]:
        return a[0] == b[0]
    diff = abs(a[0] - b[0])
    if a[0] == 0 or b[0] == 0:
        return diff <= ABS_TOL
    return diff <= Fraction(REL_TOL) * max(abs(a[0]), abs(b[0]))
