"""The quick conformance checks of reference/brainscript.md §3.10, one test per row."""
from __future__ import annotations

import pytest

from netlang.compiler.lang.evaluator import evaluate_expression, evaluate_text
from netlang.compiler.lang.values import Array
from netlang.errors import EvalError, ParseError


def items(value) -> list:
    if isinstance(value, Array):
        return [items(v) for v in value.items()]
    return value


def eval_error(text: str, member: str) -> EvalError:
    with pytest.raises(EvalError) as info:
        evaluate_text(text).get(member)
    return info.value


def test_arithmetic_precedence_modulo_and_left_associative_power():
    assert evaluate_expression("1 + 2 * 3") == 7.0
    assert evaluate_expression("10 % 4") == 2.0
    assert evaluate_expression("2 ** 3 ** 2") == 64.0


def test_unary_minus_binds_tighter_than_power():
    assert evaluate_expression("-2 ** 2") == 4.0


def test_string_concatenation_and_comparison():
    assert evaluate_expression("\"ab\" + 'cd'") == "abcd"
    assert evaluate_expression('"a" < "b"') is True


def test_record_members_in_any_order():
    assert evaluate_expression("{ a = b + 1 ; b = 2 }.a") == 3.0


def test_parenthesised_colon_arrays_flatten_but_named_arrays_nest():
    assert items(evaluate_expression("(1:2):3")) == [1.0, 2.0, 3.0]
    record = evaluate_text("x = 1:2\ny = x:3\nn = Length(y)")
    assert items(record.get("y")) == [[1.0, 2.0], 3.0]
    assert record.get("n") == 2.0


def test_length_of_fsharp_arrays():
    assert evaluate_expression("Length([| |])") == 0.0
    assert evaluate_expression("Length([| 5 |])") == 1.0


def test_array_shift():
    assert items(evaluate_expression("(1:2:3) << 1")) == [2.0, 3.0]


def test_lambda_application():
    assert evaluate_expression("(x => x * 2)(21)") == 42.0


def test_optional_arguments_and_their_errors():
    text = "f(x, y=1) = x + y\na = f(2, y=5)\nb = f(2, z=1)\nc = f(2, 3)\n"
    assert evaluate_text(text).get("a") == 7.0
    err = eval_error(text, "b")
    assert err.message == "function does not have an optional argument 'z'"
    assert (err.span.line, err.span.col) == (3, 10)
    err = eval_error(text, "c")
    assert err.message == "function expects 1 positional parameters, 2 were provided"
    assert (err.span.line, err.span.col) == (4, 5)


def test_array_member_constructor_and_out_of_bounds_index():
    text = "arr[i:1..3] = i * i\nnine = arr[3]\nbad = arr[0]\n"
    assert evaluate_text(text).get("nine") == 9.0
    err = eval_error(text, "bad")
    assert err.message == "Index 0 out of bounds [1..3]"
    assert (err.span.line, err.span.col) == (3, 11)


def test_if_condition_must_be_boolean():
    err = eval_error("v = if 1 then 2 else 3", "v")
    assert err.message == "expected expression of type 'boolean'"
    assert (err.span.line, err.span.col) == (1, 8)


def test_substr_and_format():
    assert evaluate_expression('Substr("hello", -3, 2)') == "ll"
    assert evaluate_expression('Format(3.14159, ".2")') == "3.14"
    assert evaluate_expression('Format(3, "")') == "3"


def test_mod_and_intdiv():
    assert evaluate_expression("Mod(7, 3)") == 1.0
    assert evaluate_expression("IntDiv(7, 2)") == 3.0


def test_members_without_separator_are_accepted():
    record = evaluate_text("a = 13 b = 42")
    assert (record.get("a"), record.get("b")) == (13.0, 42.0)


def test_double_semicolon_is_a_syntax_error():
    with pytest.raises(ParseError):
        evaluate_text("a = 1 ;; b = 2")


def test_mutual_reference_is_a_cyclic_reference_error():
    err = eval_error("x = y ; y = x", "x")
    assert err.message == "cyclic reference: x -> y -> x"
    assert (err.span.line, err.span.col) == (1, 9)
