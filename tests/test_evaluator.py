"""The BrainScript evaluator: laziness, scoping, calls, operators, arrays, helpers, overrides, paths."""
from __future__ import annotations

import math
import sys

import pytest

from netlang.compiler.lang import values
from netlang.compiler.lang.evaluator import evaluate_expression, evaluate_file, evaluate_text, force_all
from netlang.compiler.lang.nodes import NO_NODES, NodeFactory
from netlang.compiler.lang.values import NONE, Array, Lambda
from netlang.errors import EvalError, NetlangError, UsageError

# The node factory `run` evaluates with (the fake_nodes fixture swaps in FakeNodes).
NODES = NO_NODES


def run(text: str, name: str = "v", overrides=()):
    """The value of member `name` of the config `text`."""
    return evaluate_text(text, overrides=overrides, nodes=NODES).get(name)


def error_of(text: str, name: str = "v", overrides=()) -> EvalError:
    with pytest.raises(EvalError) as info:
        run(text, name, overrides)
    return info.value


def items(value) -> list:
    """Nested Python lists for BrainScript arrays."""
    if isinstance(value, Array):
        return [items(v) for v in value.items()]
    return value


# --- laziness and memoisation ------------------------------------------------------------------

def test_unused_member_with_an_error_is_never_evaluated():
    assert run('bad = Fail("boom") ; v = 1') == 1.0


def test_unused_argument_is_never_evaluated():
    assert run('first(a, b) = a ; v = first(1, Fail("boom"))') == 1.0


def test_branch_not_taken_is_never_evaluated():
    assert run('v = if true then 1 else Fail("boom")') == 1.0


def test_unused_array_element_is_never_evaluated():
    assert run('arr = 1 : Fail("boom") : 3 ; v = arr[2]') == 3.0


def test_member_is_evaluated_once(capsys):
    assert run('a = Print("hi") ; v = a + a') == "hihi"
    assert capsys.readouterr().err.count("hi") == 1


def test_members_may_be_used_before_their_definition():
    assert run("v = a * b ; a = b + 1 ; b = 2") == 6.0


def test_failed_member_raises_again_on_the_next_read():
    record = evaluate_text('v = Fail("boom")')
    for _ in range(2):
        with pytest.raises(EvalError, match="boom"):
            record.get("v")


# --- scoping -----------------------------------------------------------------------------------

def test_inner_record_sees_outer_names():
    assert run("x = 2 ; r = { y = x + 1 } ; v = r.y") == 3.0


def test_inner_definition_shadows_outer_one():
    assert run("x = 2 ; r = { x = 10 ; y = x + 1 } ; v = r.y") == 11.0


def test_argument_expressions_are_evaluated_in_the_caller_scope():
    assert run("A = 1 ; F(A, B) = B ; v = F(13, A)") == 1.0


def test_named_argument_expressions_are_evaluated_in_the_caller_scope():
    assert run("A = 5 ; F(A=0, B=0) = B ; v = F(A=13, B=A)") == 5.0


def test_default_values_are_evaluated_in_the_definition_scope():
    text = "y = 100 ; f(x, d=y) = d ; r = { y = 5 ; w = f(1) } ; v = r.w"
    assert run(text) == 100.0


def test_default_value_cannot_see_other_parameters():
    assert run("x = 7 ; f(x, d=x) = d ; v = f(1)") == 7.0


def test_dot_searches_the_record_and_its_lexical_parents():
    assert run("outer = 5 ; r = { a = 1 } ; v = r.outer") == 5.0


def test_dot_on_a_function_result_selects_a_member():
    assert run("F(x) = { a = x ; b = a * 2 } ; v = F(4).b") == 8.0


def test_closure_captures_the_definition_scope():
    assert run("mk(n) = (x => x + n) ; add3 = mk(3) ; v = add3(4)") == 7.0


def test_unknown_identifier_suggests_a_close_name():
    err = error_of("width = 3 ; v = widht + 1")
    assert err.message == "unknown identifier 'widht'"
    assert "width" in err.hint
    assert (err.span.line, err.span.col) == (1, 17)


def test_unknown_member_of_a_record_is_an_error():
    err = error_of("r = { a = 1 } ; v = r.b")
    assert "unknown member 'b'" in err.message


def test_dot_on_a_number_is_a_type_error():
    err = error_of("x = 1 ; v = x.y")
    assert err.message == "expected expression of type 'record'"


# --- calls -------------------------------------------------------------------------------------

def test_recursive_function():
    assert run("Fib(n) = if n < 2 then n else Fib(n-1) + Fib(n-2) ; v = Fib(15)") == 610.0


def test_deep_legal_recursion_works():
    assert run("count(n) = if n == 0 then 0 else 1 + count(n-1) ; v = count(2000)") == 2000.0


def test_user_factorial_of_200_works():
    assert run("F(n) = if n > 1 then F(n-1) * n else 1 ; v = F(200)") == math.inf


def test_runaway_recursion_is_an_eval_error(monkeypatch):
    monkeypatch.setattr(values, "MAX_NESTING", 2_000)
    err = error_of("f(x) = f(x) ; v = f(1)")
    assert "recursion too deep" in err.message


def test_positional_count_must_match():
    err = error_of("f(x, y) = x ; v = f(1)")
    assert err.message == "function expects 2 positional parameters, 1 were provided"
    assert (err.span.line, err.span.col) == (1, 19)


def test_unknown_named_argument_is_an_error_at_the_argument():
    err = error_of("f(x, opt=1) = x ; v = f(1, opz=2)")
    assert err.message == "function does not have an optional argument 'opz'"
    assert (err.span.line, err.span.col) == (1, 28)
    assert "opt" in err.hint


def test_calling_a_number_is_a_type_error():
    err = error_of("x = 1 ; v = x(2)")
    assert err.message == "expected expression of type 'function'"
    assert (err.span.line, err.span.col) == (1, 13)


def test_brace_call_is_the_same_as_paren_call():
    assert run("f{x, s=2} = x * s ; v = f{3} + f(3, s=1)") == 9.0


def test_error_in_a_function_carries_the_call_chain():
    err = error_of('inner(x) = Fail("deep") ; outer(x) = inner(x) ; v = outer(1)')
    whats = [frame.what for frame in err.call_chain]
    assert whats[:3] == ["call of inner", "call of outer", "member 'v'"]


def test_lambda_call_api_accepts_plain_values():
    fn = run("f(a, b=10) = a + b", "f")
    assert isinstance(fn, Lambda)
    assert fn.call([1.0], {}) == 11.0
    assert fn.call([1.0], {"b": 2.0}) == 3.0


# --- cycles ------------------------------------------------------------------------------------

def test_cyclic_reference_names_the_cycle():
    err = error_of("x = y\ny = x", "x")
    assert err.message == "cyclic reference: x -> y -> x"
    assert (err.span.line, err.span.col) == (2, 1)


def test_self_reference_through_a_record_member_is_cyclic():
    err = error_of("r = { a = r.a } ; v = r.a")
    assert err.message == "cyclic reference: r.a -> r.a"


# --- operators ---------------------------------------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    ("7 - 2 * 3", 1.0), ("7 / 2", 3.5), ("-7 % 3", -1.0), ("2 ** 10", 1024.0), ("+3", 3.0),
    ("1 < 2", True), ("2 <= 1", False), ("3 == 3", True), ("3 != 3", False), ("2 >= 2", True),
])
def test_number_operators(expr, expected):
    assert evaluate_expression(expr) == expected


def test_division_by_zero_follows_c():
    assert evaluate_expression("1 / 0") == math.inf
    assert math.isnan(evaluate_expression("0 / 0"))
    assert math.isnan(evaluate_expression("5 % 0"))


@pytest.mark.parametrize("expr, expected", [
    ('"abc" < "abd"', True), ('"b" > "abc"', True), ('"x" == "x"', True), ('"x" != "y"', True),
    ('"a" + "b"', "ab"),
])
def test_string_operators(expr, expected):
    assert evaluate_expression(expr) == expected


@pytest.mark.parametrize("expr, expected", [
    ("true && false", False), ("true || false", True), ("!true", False), ("true == true", True),
    ("false != true", True),
])
def test_bool_operators(expr, expected):
    assert evaluate_expression(expr) is expected


@pytest.mark.parametrize("expr", ['"a" - "b"', "1 + true", '1 + "a"', "true + true", "2 .* 3",
                                  "1 && 2", '"a" * 2', "(1:2) + 1"])
def test_operator_on_wrong_types_is_an_error(expr):
    with pytest.raises(EvalError, match="cannot be applied to operands of type"):
        evaluate_expression(expr)


@pytest.mark.parametrize("expr", ['-"a"', "!1", "-true"])
def test_unary_operator_on_wrong_type_is_an_error(expr):
    with pytest.raises(EvalError, match="cannot be applied to an operand of type"):
        evaluate_expression(expr)


def test_with_is_not_implemented():
    with pytest.raises(EvalError, match="operator 'with' is not implemented"):
        evaluate_expression("{ a = 1 } with { a = 2 }")


def test_forward_composition_applies_left_then_right():
    assert run("F(x) = x + 1 ; G(x) = x * 10 ; v = (F >> G)(2)") == 30.0


def test_composition_keeps_the_signature_of_the_left_function():
    text = "F(x, s=1) = x * s ; G(y) = y + 1 ; H = F >> G ; v = H(2, s=3)"
    assert run(text) == 7.0
    assert "expects 1 positional" in error_of(text.replace("H(2, s=3)", "H(2, 3)")).message


def test_array_shift_drops_leading_elements():
    assert items(evaluate_expression("(1:2:3:4) << 2")) == [3.0, 4.0]


def test_if_requires_a_boolean():
    err = error_of("v = if 1 then 2 else 3")
    assert err.message == "expected expression of type 'boolean'"
    assert (err.span.line, err.span.col) == (1, 8)


# --- arrays ------------------------------------------------------------------------------------

def test_array_member_elements_may_reference_each_other():
    text = "layers[l:1..3] = if l == 1 then 1 else layers[l-1] * 2 ; v = layers[3]"
    assert run(text) == 4.0


def test_array_constructor_expression():
    arr = evaluate_expression("array[2..4](i => i * 10)")
    assert (arr.first, len(arr), arr.items()) == (2, 3, [20.0, 30.0, 40.0])


def test_colon_arrays_flatten_in_the_syntax_but_nest_through_names():
    assert items(run("v = (1:2):3")) == [1.0, 2.0, 3.0]
    assert items(run("x = 1:2 ; v = x:3")) == [[1.0, 2.0], 3.0]


def test_index_out_of_bounds():
    err = error_of("arr = 5:6 ; v = arr[2]")
    assert err.message == "Index 2 out of bounds [0..1]"
    assert (err.span.line, err.span.col) == (1, 21)


def test_index_must_be_an_integer():
    assert error_of("arr = 5:6 ; v = arr[0.5]").message == "expected expression of type 'integer'"


def test_array_bounds_must_be_integers():
    err = error_of("v = array[1..2.5](i => i)")
    assert err.message == "expected expression of type 'integer'"
    assert (err.span.line, err.span.col) == (1, 14)


def test_indexing_a_number_is_a_type_error():
    assert error_of("x = 3 ; v = x[0]").message == "expected expression of type 'array'"


def test_array_initializer_must_take_one_argument():
    assert "initializer function with one argument" in error_of("v = array[1..2](3)").message


def test_empty_fsharp_array_is_the_none_singleton():
    assert run("v = [| |]") is NONE
    assert run("v = IsSameObject(None, [| |])") is True


def test_array_api():
    arr = run("v = array[1..3](i => i * i)")
    assert (len(arr), arr.first, arr.get(2)) == (3, 1, 4.0)
    with pytest.raises(EvalError, match=r"Index 4 out of bounds \[1..3\]"):
        arr.get(4)


# --- strings -----------------------------------------------------------------------------------

def test_interpolation_formats_numbers_like_format():
    assert run('n = 3 ; p = 2.5 ; v = "n=$n$ p=$p$"') == "n=3 p=2.500000"


def test_interpolation_of_strings():
    assert run('dir = "/data" ; v = "$dir$/train.txt"') == "/data/train.txt"


# --- helpers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    ('Length("hello")', 5.0), ("Length(1:2:3)", 3.0), ("Length(None)", 0.0),
    ('Format(42, "5")', "   42"), ('Format(2.5, ".3")', "2.500"), ('Format("ab", "")', "ab"),
    ('Format(true, "")', "true"), ('Substr("hello", 1, 3)', "ell"), ('Substr("hello", 2, -1)', "llo"),
    ('Substr("hello", -10, 2)', ""), ('Substr("hello", 3, 100)', "lo"),
    ('Replace("a-b-c", "-", "+")', "a+b+c"), ("Chr(65)", "A"),
    ("Mod(-7, 3)", -1.0), ("IntDiv(-7, 2)", -3.0), ("Min(3, 4)", 3.0), ("Max(3, 4)", 4.0),
    ('Min("b", "a")', "a"), ("Sign(5)", 1.0), ("Sign(0)", 0.0), ("Fac(5)", 120.0),
    ("IsArray(1:2)", True), ("IsArray(1)", False), ("IsDouble(1)", True), ("IsDouble(true)", False),
    ("IsBool(false)", True), ("IsSameObject(1:2, 1:2)", False),
])
def test_helpers(expr, expected):
    assert evaluate_expression(expr) == expected


def test_length_requires_a_zero_based_array():
    with pytest.raises(EvalError, match="This array is expected to begin with index 0."):
        evaluate_expression("Length(array[1..3](i => i))")


def test_format_rejects_percent():
    with pytest.raises(EvalError, match="must not contain %"):
        evaluate_expression('Format(1, "%d")')


def test_format_rejects_a_malformed_format():
    with pytest.raises(EvalError, match="invalid format"):
        evaluate_expression('Format(1, "x9")')


def test_mod_by_zero_is_an_error():
    with pytest.raises(EvalError, match="division by zero"):
        evaluate_expression("Mod(1, 0)")


def test_print_writes_to_stderr_and_returns_its_value(capsys):
    assert evaluate_expression('Print(2.5, format=".1")') == 2.5
    assert capsys.readouterr().err == "2.5\n"


def test_fail_raises_at_the_call():
    err = error_of('v = 1 + Fail("no good")')
    assert err.message == "no good"
    assert (err.span.line, err.span.col) == (1, 9)


def test_repeat_builds_nested_arrays_like_cntk():
    assert items(evaluate_expression("Repeat(2, 7)")) == [[[], 7.0], 7.0]
    assert evaluate_expression("Repeat(0, 7)") is NONE


def test_concat_arrays_accepts_scalars_and_arrays():
    assert items(evaluate_expression("_ConcatArrays(1, 2:3)")) == [1.0, 2.0, 3.0]
    assert evaluate_expression("_ConcatArrays(None, None)") is NONE


def test_as_array_wraps_a_scalar():
    assert items(evaluate_expression("_AsArray(4)")) == [4.0]


def test_force_resize_array_chops_or_repeats_the_last_element():
    assert items(evaluate_expression("_ForceResizeArray(2, 1:2:3)")) == [1.0, 2.0]
    assert items(evaluate_expression("_ForceResizeArray(4, 1:2)")) == [1.0, 2.0, 2.0, 2.0]


def test_none_is_available_at_the_root():
    assert evaluate_expression("None") is NONE


# --- the Record API ----------------------------------------------------------------------------

RECORD_TEXT = "top = 1\nr = {\n  b = 2\n  A = b + top\n}\nf(x) = x\n"


def test_record_names_keep_definition_order():
    record = evaluate_text(RECORD_TEXT)
    assert record.names() == ["top", "r", "f"]
    assert record.get("r").names() == ["b", "A"]


def test_record_get_of_a_missing_member_is_an_eval_error():
    record = evaluate_text(RECORD_TEXT)
    with pytest.raises(EvalError, match="has no member 'tpo'") as info:
        record.get("tpo")
    assert "top" in info.value.hint


def test_record_find_searches_lexical_parents():
    inner = evaluate_text(RECORD_TEXT).get("r")
    assert inner.find("top") == 1.0
    assert inner.find("nothing") is None
    assert inner.has("b") and not inner.has("top")


def test_record_find_ci_matches_own_members_ignoring_case():
    inner = evaluate_text(RECORD_TEXT).get("r")
    assert inner.find_ci("a") == "A"
    assert inner.find_ci("TOP") is None


def test_record_span_origin_expression_and_scope_of_a_member():
    record = evaluate_text(RECORD_TEXT)
    inner = record.get("r")
    assert (inner.span_of("A").line, inner.span_of("A").col) == (4, 3)
    assert inner.origin_of("A") == "file"
    expr = inner.expr_of("A")
    from netlang.compiler.lang.evaluator import evaluate

    assert evaluate(expr, inner.scope_of("A")) == 3.0
    assert inner.path == "r"


def test_origin_of_a_library_member_is_stdlib():
    record = evaluate_text("x = 1")
    library = record.parent
    assert library.names(), "the standard library defines members"
    assert library.origin_of(library.names()[0]) == "stdlib"


def test_force_all_surfaces_an_error_in_any_member():
    record = evaluate_text('a = 1 ; r = { b = [| 1 ; Fail("hidden") |] }')
    with pytest.raises(EvalError, match="hidden"):
        force_all(record)


def test_evaluate_file_reads_and_evaluates(tmp_path):
    path = tmp_path / "cfg.net"
    path.write_text("a = 2\nb = a * 21\n")
    assert evaluate_file(str(path), overrides=["a=3"]).get("b") == 63.0


# --- overrides ---------------------------------------------------------------------------------

CONFIG = """
lr = 0.5
SGD = { maxEpochs = 10 ; minibatchSize = 32 }
train = { action = "train" ; SGD = { maxEpochs = 5 ; learningRate = 0.1 } }
"""


def test_dotted_override_replaces_a_nested_member():
    record = evaluate_text(CONFIG, overrides=["SGD.maxEpochs=2"])
    assert record.get("SGD").get("maxEpochs") == 2.0
    assert record.get("SGD").get("minibatchSize") == 32.0


def test_deeper_dotted_override():
    record = evaluate_text(CONFIG, overrides=["train.SGD.maxEpochs=1"])
    assert record.get("train").get("SGD").get("maxEpochs") == 1.0
    assert record.get("SGD").get("maxEpochs") == 10.0


def test_block_override_merges_member_by_member():
    record = evaluate_text(CONFIG, overrides=["train=[SGD=[maxEpochs=2]]"])
    sgd = record.get("train").get("SGD")
    assert (sgd.get("maxEpochs"), sgd.get("learningRate")) == (2.0, 0.1)
    assert record.get("train").get("action") == "train"


def test_override_keys_match_case_insensitively():
    record = evaluate_text(CONFIG, overrides=["sgd.MAXEPOCHS=3"])
    assert record.get("SGD").get("maxEpochs") == 3.0
    assert record.get("SGD").names() == ["maxEpochs", "minibatchSize"]


def test_override_value_that_is_not_an_expression_is_a_string():
    record = evaluate_text(CONFIG, overrides=["modelPath=out/model.dnn", "precision=float", "x=a b ("])
    assert record.get("modelPath") == "out/model.dnn"
    assert record.get("precision") == "float"
    assert record.get("x") == "a b ("


def test_string_override_interpolates_dollar_names():
    record = evaluate_text('dir = "/runs"\n', overrides=["modelPath=$dir$/model.dnn"])
    assert record.get("modelPath") == "/runs/model.dnn"


def test_override_value_may_refer_to_config_members():
    assert evaluate_text(CONFIG, overrides=["rate=lr*2"]).get("rate") == 1.0


def test_later_override_wins():
    record = evaluate_text(CONFIG, overrides=["SGD.maxEpochs=2", "SGD=[maxEpochs=7]"])
    assert record.get("SGD").get("maxEpochs") == 7.0


def test_override_adds_a_missing_dotted_key():
    record = evaluate_text(CONFIG, overrides=["reader.randomize=false"])
    assert record.get("reader").get("randomize") is False


def test_overridden_member_has_override_origin_and_command_line_span():
    record = evaluate_text(CONFIG, overrides=["lr=1", "SGD.maxEpochs=2"])
    assert record.origin_of("lr") == "override"
    span = record.get("SGD").span_of("maxEpochs")
    assert (span.file, span.line) == ("<command line>", 2)


def test_error_in_an_override_value_points_at_the_command_line():
    record = evaluate_text(CONFIG, overrides=["bad=lr + \"x\""])
    with pytest.raises(EvalError) as info:
        record.get("bad")
    assert (info.value.span.file, info.value.span.line, info.value.span.col) == ("<command line>", 1, 5)


@pytest.mark.parametrize("argument", ["=5", "noequals", "a..b=1", "1x=2"])
def test_malformed_override_is_a_usage_error_naming_it(argument):
    with pytest.raises(UsageError) as info:
        evaluate_text(CONFIG, overrides=[argument])
    assert argument in info.value.message


def test_overrides_do_not_modify_the_parsed_file():
    from netlang.compiler.lang.overrides import apply_overrides
    from netlang.grammar.parser import parse_text

    file_ast = parse_text(CONFIG)
    before = [m.name for m in file_ast.members]
    apply_overrides(file_ast, ["SGD.maxEpochs=2", "extra=1"])
    assert [m.name for m in file_ast.members] == before
    sgd = next(m for m in file_ast.members if m.name == "SGD").expr
    assert [m.expr.value for m in sgd.members] == [10.0, 32.0]


# --- node paths (a fake node type through compiler/hooks) --------------------------------------

class FakeNode:
    def __init__(self, op, path, inputs):
        self.op, self.path, self.inputs = op, path, inputs


class FakeNodes(NodeFactory):
    """Nodes that record how the evaluator made them: op, expression path, operands."""

    def __init__(self):
        self.types = {"Fake": lambda record, ctx: FakeNode(record.find("op"), ctx.path, []),
                      "ComputationNetwork": lambda record, ctx: record}

    def is_node(self, value):
        return isinstance(value, FakeNode)

    def binary(self, op, left, right, ctx):
        return FakeNode(op, ctx.path, [left, right])

    def unary(self, op, operand, ctx):
        return FakeNode(op, ctx.path, [operand])

    def if_node(self, cond, then_value, else_value, ctx):
        return FakeNode("If", ctx.path, [cond, then_value, else_value])

    def member(self, node, name, ctx):
        return getattr(node, name)

    def constructors(self):
        return self.types


@pytest.fixture
def fake_nodes(monkeypatch):
    factory = FakeNodes()
    monkeypatch.setattr(sys.modules[__name__], "NODES", factory)
    return factory


def test_node_in_a_member_is_named_by_the_member_path(fake_nodes):
    assert run("N(x) = new Fake [ op = 'N' ] ; r = { s = { v = N(1) } }", "r").get("s").get("v").path == "r.s.v"


def test_function_body_record_takes_the_callers_path(fake_nodes):
    text = ("N(x) = new Fake [ op = 'N' ]\n"
            "model(x) = { h1 = N(x) ; z = N(h1) }\n"
            "out = model(1)\n")
    out = run(text, "out")
    assert (out.get("h1").path, out.get("z").path) == ("out.h1", "out.z")


def test_layer_parameters_are_named_under_the_applying_member(fake_nodes):
    text = ("Dense{dim} = { W = new Fake [ op = 'W' ] ; apply(x) = W * x }.apply\n"
            "out = { h1 = Dense{200}(s1) ; s1 = new Fake [ op = 'In' ] }\n")
    h1 = run(text, "out").get("h1")
    assert h1.op == "*" and h1.path == "out.h1"
    assert h1.inputs[0].path == "out.h1.W"


def test_infix_operands_are_named_op_args(fake_nodes):
    text = "W = new Fake [ op = 'W' ] ; x = W ; b = W ; z = W * x + b ; y = 2 * (W * x)"
    z = run(text, "z")
    assert (z.op, z.path, z.inputs[0].path) == ("+", "z", "z.PlusArgs[0]")
    assert run(text, "y").inputs[1].path == "y.TimesArgs[1]"


def test_array_elements_are_named_by_index(fake_nodes):
    arr = run("N(x) = new Fake [ op = 'N' ] ; arr = N(1) : N(2)", "arr")
    assert [node.path for node in arr.items()] == ["arr[0]", "arr[1]"]


def test_array_constructor_elements_are_named_by_index(fake_nodes):
    arr = run("N(x) = new Fake [ op = 'N' ] ; layers[i:1..2] = N(i)", "layers")
    assert [node.path for node in arr.items()] == ["layers[1]", "layers[2]"]


def test_arguments_are_named_under_the_caller_path(fake_nodes):
    text = "W = new Fake [ op = 'W' ] ; Id(x) = x ; y = Id(W * W)"
    assert run(text, "y").path == "y.x"


def test_network_record_starts_a_fresh_path(fake_nodes):
    text = "N(x) = new Fake [ op = 'N' ] ; train = { network = new ComputationNetwork [ ce = N(1) ] }"
    net = run(text, "train").get("network")
    assert net.get("ce").path == "ce"


def test_node_operands_dispatch_to_the_node_factory(fake_nodes):
    text = "W = new Fake [ op = 'W' ] ; a = -W ; b = !W ; c = if W then 1 else 2 ; d = W.op ; e = +W"
    record = evaluate_text(text, nodes=fake_nodes)
    assert [record.get(n).op for n in "abc"] == ["-", "!", "If"]
    assert record.get("d") == "W"
    assert record.get("e") is record.get("W")


def test_and_or_with_constant_bool_return_the_first_operand(fake_nodes):
    record = evaluate_text("W = new Fake [ op = 'W' ] ; a = W && false ; b = true || W", nodes=fake_nodes)
    assert record.get("a") is record.get("W")
    assert record.get("b") is True


def test_unknown_type_after_new_is_an_error(fake_nodes):
    with pytest.raises(EvalError, match="unknown type 'Fak'"):
        run("v = new Fak [ ]")


def test_only_netlang_errors_escape_from_bad_programs():
    for text in ["v = 1 +", "v = (", "v = x", "v = 1 ; v = 2", "v = {", "f(x x) = 1"]:
        with pytest.raises(NetlangError):
            force_all(evaluate_text(text))


def test_constructor_sees_the_enclosing_function_arguments(fake_nodes):
    fake_nodes.types["Args"] = lambda record, ctx: values.enclosing_arguments(record)
    text = "F(x, tag='t') = { r = new Args [ op = 1 ] }.r ; v = F(1)"
    assert run(text) == [("x", 1.0), ("tag", "t")]


def test_enclosing_argument_thunks_are_not_forced(fake_nodes):
    fake_nodes.types["Args"] = lambda record, ctx: values.enclosing_argument_thunks(record)
    pairs = run('F(x, late) = new Args [ ] ; v = F(1, Fail("not yet"))')
    assert [name for name, _ in pairs] == ["x", "late"]
    with pytest.raises(EvalError, match="not yet"):
        pairs[1][1].force()


def test_array_from_values():
    arr = Array.from_values([1.0, "a"], first=3)
    assert (arr.first, arr.items()) == (3, [1.0, "a"])
