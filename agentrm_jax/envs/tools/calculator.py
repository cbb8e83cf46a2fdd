"""The `calculate` tool's arithmetic: a whitelisted AST walk over numbers and + - * / // % ** (never eval)."""

from __future__ import annotations

import ast
import math
import operator
import re

__all__ = ["safe_calculate"]

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def safe_calculate(expression: str) -> float:
    """Evaluate + - * / // % ** and parentheses over numbers by walking a whitelisted AST (no eval).

    Thousands separators ("52,000") and "$" are accepted. Raises ValueError on anything else.
    """
    cleaned = re.sub(r"(?<=\d),(?=\d{3}\b)", "", str(expression)).replace("$", "").replace("^", "**").strip()
    if not cleaned or len(cleaned) > 200:
        raise ValueError("empty or too long expression")
    try:
        tree = ast.parse(cleaned, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot parse {expression!r}") from exc

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
                raise ValueError("exponent too large")
            try:
                return _BINARY[type(node.op)](left, right)
            except ZeroDivisionError as exc:
                raise ValueError("division by zero") from exc
        raise ValueError(f"unsupported element {type(node).__name__} in {expression!r}")

    result = walk(tree)
    if isinstance(result, complex) or not math.isfinite(result):
        raise ValueError("result is not a finite real number")
    return result
