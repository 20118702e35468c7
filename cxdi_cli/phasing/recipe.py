"""The recipe language of `cxdi phase`: a short, shell-friendly string of steps run left to right.

Grammar (whitespace is ignored)::

    recipe  := item ("," item)*
    item    := atom ("**" INT)?
    atom    := NAME ("(" [param ("," param)*] ")")?  |  "(" recipe ")"
    param   := NAME "=" NUMBER

Examples: ``raar**800,er**200``; ``(hio**50,er**5)**10``; ``raar(beta=0.8)**600,ml**50``.
Steps run left to right like a shell pipeline: the reverse of PyNX's right-to-left operator
notation (``ER**200 * RAAR**800`` in PyNX is ``raar**800,er**200`` here).

The string is tokenised and parsed, never `eval()`-ed; step names and their parameters are checked
against a registry supplied by the caller, so an unknown name or parameter is a `UsageError` that
points at the place in the string and lists the valid names.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence, Union

from cxdi_cli.model import UsageError


@dataclasses.dataclass(frozen=True)
class Step:
    """One named step with its parameters, repeated `count` times."""

    name: str
    params: tuple[tuple[str, float], ...] = ()
    count: int = 1

    def __str__(self) -> str:
        p = f"({','.join(f'{k}={_num(v)}' for k, v in self.params)})" if self.params else ""
        return f"{self.name}{p}" + (f"**{self.count}" if self.count != 1 else "")


@dataclasses.dataclass(frozen=True)
class Group:
    """A parenthesised sub-recipe, repeated `count` times."""

    items: tuple["Item", ...]
    count: int = 1

    def __str__(self) -> str:
        return f"({format_recipe(self.items)})" + (f"**{self.count}" if self.count != 1 else "")


Item = Union[Step, Group]


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def format_recipe(items: Sequence[Item]) -> str:
    """The canonical text of a parsed recipe (parsing it again gives the same items)."""
    return ",".join(str(i) for i in items)


_TOKEN = re.compile(r"\s*(?:(?P<pow>\*\*)|(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),=]))")


def _tokenise(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            bad = len(text[pos:]) - len(text[pos:].lstrip())
            raise _error(text, pos + bad, f"unexpected character {text[pos + bad]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        tokens.append((kind, value, m.start(kind)))
        pos = m.end()
    tokens.append(("end", "", len(text)))
    return tokens


def _error(text: str, pos: int, what: str, valid: Sequence[str] | None = None) -> UsageError:
    marker = f"{text[:pos]}>>>{text[pos:]}" if text else "(empty)"
    tail = f"; valid steps: {', '.join(valid)}" if valid else ""
    return UsageError(f"recipe {text!r}: {what} at character {pos + 1} ({marker}){tail}")


def parse(text: str, steps: Mapping[str, Sequence[str]]) -> tuple[Item, ...]:
    """Parse a recipe; `steps` maps each valid step name to its valid parameter names.

    Raises UsageError (exit 2) naming the position of the fault and the valid step names.
    """
    tokens = _tokenise(text)
    i = 0
    valid = sorted(steps)

    def peek() -> tuple[str, str, int]:
        return tokens[i]

    def take(kind: str, value: str | None = None, what: str = "") -> tuple[str, str, int]:
        nonlocal i
        tok = tokens[i]
        if tok[0] != kind or (value is not None and tok[1] != value):
            found = "the end" if tok[0] == "end" else repr(tok[1])
            raise _error(text, tok[2], f"expected {what or value or kind}, found {found}", valid)
        i += 1
        return tok

    def count() -> int:
        if peek()[0] != "pow":
            return 1
        take("pow")
        tok = take("num", what="a repeat count after '**'")
        try:
            n = int(tok[1])
        except ValueError:
            raise _error(text, tok[2], f"repeat count {tok[1]!r} is not a whole number") from None
        if n < 1:
            raise _error(text, tok[2], f"repeat count {n} must be at least 1")
        return n

    def atom() -> Item:
        kind, value, pos = peek()
        if kind == "punct" and value == "(":
            take("punct", "(")
            items = sequence()
            take("punct", ")", "')' closing the group")
            return Group(items, count())
        if kind != "name":
            found = "the end" if kind == "end" else repr(value)
            raise _error(text, pos, f"expected a step name, found {found}", valid)
        take("name")
        name = value.lower()
        if name not in steps:
            raise _error(text, pos, f"unknown step {value!r}", valid)
        params: list[tuple[str, float]] = []
        if peek()[0] == "punct" and peek()[1] == "(":
            take("punct", "(")
            while not (peek()[0] == "punct" and peek()[1] == ")"):
                if params:
                    take("punct", ",", "',' or ')'")
                _, pname, ppos = take("name", what=f"a parameter name of {name}")
                pname = pname.lower()
                if pname not in steps[name]:
                    allowed = ", ".join(steps[name]) or "none"
                    raise _error(text, ppos, f"step {name!r} has no parameter {pname!r} (its parameters: {allowed})")
                if any(pname == p for p, _ in params):
                    raise _error(text, ppos, f"parameter {pname!r} given twice")
                take("punct", "=", "'='")
                _, num, _ = take("num", what=f"a number for {pname}")
                params.append((pname, float(num)))
            take("punct", ")")
        return Step(name, tuple(params), count())

    def sequence() -> tuple[Item, ...]:
        items = [atom()]
        while peek()[0] == "punct" and peek()[1] == ",":
            take("punct", ",")
            items.append(atom())
        return tuple(items)

    if not text.strip():
        raise _error(text, 0, "empty recipe", valid)
    items = sequence()
    kind, value, pos = peek()
    if kind != "end":
        raise _error(text, pos, f"unexpected {value!r}", valid)
    return items


def flatten(items: Sequence[Item]) -> list[Step]:
    """The steps in the order they run, each with its own repeat count (groups unrolled)."""
    out: list[Step] = []
    for item in items:
        if isinstance(item, Step):
            out.append(item)
        else:
            inner = flatten(item.items)
            for _ in range(item.count):
                out.extend(inner)
    return out
