"""The BrainScript parser: text -> AST (reference §1, §2, §3.10).

Tree shapes are compared as compact S-expressions (see `shape`), e.g. `1 + 2 * 3` -> `(+ 1 (* 2 3))`.
"""
from __future__ import annotations

import pickle

import pytest

from netlang import sources
from netlang.errors import ConfigError, IncludeError, NetlangError, ParseError, Span
from netlang.grammar import ast, library
from netlang.grammar.library import load_stdlib
from netlang.grammar.parser import parse_expression, parse_file, parse_member_text, parse_text

# ---- helpers ------------------------------------------------------------------------------

def shape(node) -> str:
    """A compact S-expression of an AST, for asserting tree shapes."""
    if isinstance(node, ast.Number):
        return str(int(node.value)) if node.value == int(node.value) else repr(node.value)
    if isinstance(node, ast.String):
        return repr(node.value)
    if isinstance(node, ast.Bool):
        return "true" if node.value else "false"
    if isinstance(node, ast.Ident):
        return node.name
    if isinstance(node, ast.Interp):
        return "(interp " + " ".join(shape(p) for p in node.parts) + ")"
    if isinstance(node, ast.BinOp):
        return f"({node.op} {shape(node.left)} {shape(node.right)})"
    if isinstance(node, ast.UnaryOp):
        return f"(u{node.op} {shape(node.operand)})"
    if isinstance(node, ast.Dot):
        return f"(. {shape(node.obj)} {node.name})"
    if isinstance(node, ast.Index):
        return f"([] {shape(node.obj)} {shape(node.index)})"
    if isinstance(node, ast.Call):
        args = "".join(" " + (f"{a.name}=" if a.name else "") + shape(a.value) for a in node.args)
        return f"({'call{}' if node.brace else 'call'} {shape(node.fn)}{args})"
    if isinstance(node, ast.ArrayLit):
        return "(: " + " ".join(shape(i) for i in node.items) + ")"
    if isinstance(node, ast.FSharpArray):
        return "([||]" + "".join(" " + shape(i) for i in node.items) + ")"
    if isinstance(node, ast.Lambda):
        params = " ".join(p.name + (f"={shape(p.default)}" if p.default else "") for p in node.params)
        return f"(=> ({params}) {shape(node.body)})"
    if isinstance(node, ast.If):
        return f"(if {shape(node.cond)} {shape(node.then)} {shape(node.else_)})"
    if isinstance(node, ast.New):
        return f"(new {node.type_name} {shape(node.arg)})"
    if isinstance(node, ast.ArrayCtor):
        return f"(array {shape(node.first)} {shape(node.last)} {shape(node.fn)})"
    if isinstance(node, ast.Record):
        return "{" + " ".join(f"{m.name}={shape(m.expr)}" for m in node.members) + "}"
    raise AssertionError(f"unexpected node {node!r}")


def expr(text: str) -> str:
    return shape(parse_expression(text))


def members(text: str) -> dict[str, str]:
    return {m.name: shape(m.expr) for m in parse_text(text).members}


def parse_error(text: str, cls=ParseError) -> NetlangError:
    with pytest.raises(cls) as info:
        parse_text(text, "t.net")
    return info.value


def at(err: NetlangError) -> tuple[int, int]:
    return err.span.line, err.span.col


# ---- precedence: each level against its neighbours -----------------------------------------

@pytest.mark.parametrize("text, tree", [
    ("a * b + c", "(+ (* a b) c)"),                # 10 over 9
    ("a + b * c", "(+ a (* b c))"),
    ("a + b == c", "(== (+ a b) c)"),              # 9 over 8
    ("a == b + c", "(== a (+ b c))"),
    ("a == b && c", "(&& (== a b) c)"),            # 8 over 7
    ("a && b < c", "(&& a (< b c))"),
    ("a && b || c", "(|| (&& a b) c)"),            # 7 over 6
    ("a || b && c", "(|| a (&& b c))"),
    ("a || b >> c", "(>> (|| a b) c)"),            # 6 over 5
    ("a << b || c", "(<< a (|| b c))"),
    ("a >> b : c", "(: (>> a b) c)"),              # 5 over 4
    ("a : b << c", "(: a (<< b c))"),
    ("x => a : b", "(=> (x) (: a b))"),            # 4 over 0
    ("a.b * c", "(* (. a b) c)"),                  # 99 over 10
    ("f(x) + g[1]", "(+ (call f x) ([] g 1))"),
])
def test_precedence_between_adjacent_levels(text, tree):
    assert expr(text) == tree


@pytest.mark.parametrize("op", ["*", "/", ".*", "**", "%"])
def test_multiplicative_operators_share_one_level(op):
    assert expr(f"a {op} b * c") == f"(* ({op} a b) c)"
    assert expr(f"a * b {op} c") == f"({op} (* a b) c)"


@pytest.mark.parametrize("op", ["+", "-", "with"])
def test_additive_operators_share_one_level(op):
    assert expr(f"a {op} b + c") == f"(+ ({op} a b) c)"
    assert expr(f"a {op} b * c") == f"({op} a (* b c))"


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_comparison_operators_sit_between_additive_and_and(op):
    assert expr(f"a {op} b + c && d") == f"(&& ({op} a (+ b c)) d)"


# ---- associativity ------------------------------------------------------------------------

@pytest.mark.parametrize("text, tree", [
    ("a - b - c", "(- (- a b) c)"),
    ("a / b * c", "(* (/ a b) c)"),
    ("2 ** 3 ** 2", "(** (** 2 3) 2)"),            # ** is left-associative (reference §3.10: 64)
    ("a < b < c", "(< (< a b) c)"),
    ("a >> b >> c", "(>> (>> a b) c)"),
    ("a || b || c", "(|| (|| a b) c)"),
])
def test_binary_operators_are_left_associative(text, tree):
    assert expr(text) == tree


def test_lambda_is_right_associative():
    assert expr("x => y => x * y") == "(=> (x) (=> (y) (* x y)))"


# ---- unary operators ----------------------------------------------------------------------

def test_unary_minus_binds_tighter_than_power():
    assert expr("-2 ** 2") == "(** (u- 2) 2)"


def test_unary_minus_applies_after_member_access():
    assert expr("-a.b") == "(u- (. a b))"


def test_unary_operators_nest():
    assert expr("!-+a") == "(u! (u- (u+ a)))"


def test_unary_minus_binds_tighter_than_product():
    assert expr("-a * b") == "(* (u- a) b)"


# ---- postfix ------------------------------------------------------------------------------

def test_postfix_operators_chain_left_to_right():
    assert expr("f(x).y[0]{z}") == "(call{} ([] (. (call f x) y) 0) z)"


def test_chained_calls_with_braces_then_parens():
    assert expr("DenseLayer{1024}(x)") == "(call (call{} DenseLayer 1024) x)"


def test_call_arguments_may_mix_named_and_positional():
    assert expr("f(a, k = 1, b)") == "(call f a k=1 b)"


def test_call_with_no_arguments():
    assert expr("f()") == "(call f)"


def test_member_of_a_record_literal():
    assert expr("{ a = b + 1 ; b = 2 }.a") == "(. {a=(+ b 1) b=2} a)"


# ---- the ':' array ------------------------------------------------------------------------

def test_colon_chain_is_one_flat_array():
    assert expr("a : b : c") == "(: a b c)"


def test_parenthesised_left_colon_is_flattened():
    node = parse_expression("(a:b):c")
    assert isinstance(node, ast.ArrayLit) and len(node.items) == 3


def test_parenthesised_right_colon_stays_nested():
    # CNTK flattens only the left operand: the right one is parsed as a separate sub-expression.
    assert expr("a:(b:c)") == "(: a (: b c))"


def test_lambda_in_an_array_needs_parentheses():
    assert expr("(x => x) : g") == "(: (=> (x) x) g)"
    with pytest.raises(ParseError, match="=>"):
        parse_expression("g : x => x")


def test_lambda_left_side_must_be_one_identifier():
    with pytest.raises(ParseError, match="single identifier"):
        parse_expression("a + x => x")


# ---- if / then / else ---------------------------------------------------------------------

def test_else_branch_extends_as_far_as_possible():
    assert expr("if c then a else b : d") == "(if c a (: b d))"


def test_if_is_an_operand():
    assert expr("1 + if c then 2 else 3 * 4") == "(+ 1 (if c 2 (* 3 4)))"


def test_if_then_branch_is_a_full_expression():
    assert expr("if c then x => x else y") == "(if c (=> (x) x) y)"


def test_nested_if_in_else():
    assert expr("if a then 1 else if b then 2 else 3") == "(if a 1 (if b 2 3))"


# ---- primaries ----------------------------------------------------------------------------

def test_parentheses_leave_no_trace():
    assert expr("((a))") == "a"


def test_new_takes_one_operand_without_postfix():
    assert expr("new ComputationNetwork [ a = 1 ]") == "(new ComputationNetwork {a=1})"
    assert expr("new T r .x") == "(. (new T r) x)"


def test_array_constructor_expression():
    assert expr("array[1..n](i => i * i)") == "(array 1 n (=> (i) (* i i)))"


@pytest.mark.parametrize("text, tree", [
    ("[| |]", "([||])"),
    ("[||]", "([||])"),
    ("[| 5 |]", "([||] 5)"),
    ("[| a ; b + 1 ; c |]", "([||] a (+ b 1) c)"),
])
def test_fsharp_array_literal_holds_zero_or_more_items(text, tree):
    assert expr(text) == tree


def test_records_in_braces_and_brackets_are_the_same():
    assert expr("{ a = 1 ; b = 2 }") == expr("[ a = 1 ; b = 2 ]") == "{a=1 b=2}"


def test_empty_record():
    assert expr("{}") == "{}"


def test_booleans():
    assert expr("true && false") == "(&& true false)"


# ---- lexical: numbers, strings, comments, identifiers -------------------------------------

@pytest.mark.parametrize("text, value", [
    ("13", 13.0), ("3.14", 3.14), (".5", 0.5), ("5.", 5.0), ("1e-3", 1e-3), ("1E30", 1e30),
    ("2.5e+2", 250.0), ("0x1F", 31.0),
])
def test_number_literals(text, value):
    node = parse_expression(text)
    assert isinstance(node, ast.Number) and node.value == value


def test_range_dots_are_not_a_decimal_point():
    node = parse_expression("array[1..2](i => i)")
    assert (node.first.value, node.last.value) == (1.0, 2.0)


def test_number_out_of_range_is_an_error():
    with pytest.raises(ParseError, match="too large"):
        parse_expression("1e400")


def test_strings_in_either_quote_hold_the_other():
    assert expr("\"it's\" + 'say \"hi\"'") == "(+ \"it's\" 'say \"hi\"')"


def test_strings_have_no_escapes():
    assert parse_expression(r"'a\nb'").value == "a\\nb"


def test_string_may_span_lines_and_later_positions_stay_right():
    record = parse_text("a = 'one\ntwo'\nb = 1\n")
    assert record.members[0].expr.value == "one\ntwo"
    assert record.members[0].expr.span == Span("<string>", 1, 5, 2, 5)
    assert record.members[1].name_span == Span("<string>", 3, 1, 3, 2)


def test_unterminated_string_is_reported_at_its_quote():
    err = parse_error("a = 1\nb = 'abc\n")
    assert "string without closing quotation mark" in err.message
    assert at(err) == (2, 5)


def test_comments_of_all_kinds_are_skipped():
    text = "# hash\na = 1 // slashes\n/* block\n   over lines */ b = /* inline */ 2\n"
    assert members(text) == {"a": "1", "b": "2"}


def test_block_comment_keeps_line_numbers():
    record = parse_text("/* one\ntwo\nthree */ a = 1")
    assert record.members[0].name_span.line == 3


def test_unterminated_block_comment_is_an_error():
    err = parse_error("a = 1\n  /* never closed\n")
    assert "comment without closing */" in err.message and at(err) == (2, 3)


def test_identifiers_with_underscore_digits_and_unicode():
    assert members("_ = 1\nx_2 = 2\nÄrger = 3") == {"_": "1", "x_2": "2", "Ärger": "3"}


def test_keywords_are_not_identifiers():
    err = parse_error("then = 1")
    assert "then" in err.message and "reserved word" in err.hint


def test_single_bar_is_an_unexpected_character():
    err = parse_error("a = b | c")
    assert "unexpected character '|'" in err.message and at(err) == (1, 7)
    assert "||" in err.hint


# ---- $name$ ---------------------------------------------------------------------------------

def test_dollar_name_outside_a_string_is_an_identifier():
    assert expr("$x$ + 1") == "(+ x 1)"


def test_dollar_name_inside_a_string_interpolates():
    assert expr("'$Root$/data/$file_1$.txt'") == "(interp Root '/data/' file_1 '.txt')"


def test_dollar_that_is_not_a_pattern_stays_literal():
    assert expr("'costs $5 or $ x$ or $$'") == "'costs $5 or $ x$ or $$'"


def test_interpolated_identifier_points_into_the_string():
    node = parse_expression("  'ab $x$'")
    assert node.parts[1].span == Span("<override>", 1, 7, 1, 10)


def test_interpolation_on_a_later_line_of_a_string():
    node = parse_expression("'a\n  $x$'")
    assert node.parts[1].span == Span("<override>", 2, 3, 2, 6)


# ---- members ------------------------------------------------------------------------------

def test_members_need_no_separator():
    assert members("a = 13 b = 42") == {"a": "13", "b": "42"}


def test_members_separated_by_newline_or_one_semicolon():
    assert members("a = 1\nb = 2 ; c = 3 ;") == {"a": "1", "b": "2", "c": "3"}


def test_double_semicolon_is_a_syntax_error():
    err = parse_error("a = 1 ;; b = 2")
    assert "';'" in err.message and at(err) == (1, 8)


def test_function_member_becomes_a_named_lambda():
    member = parse_text("F(x, y = 1) = x + y").members[0]
    assert member.name == "F" and shape(member.expr) == "(=> (x y=1) (+ x y))"
    assert member.expr.name == "F"


def test_brace_function_member_is_the_same_as_paren():
    assert members("F{x, opt = 2} = x") == members("F(x, opt = 2) = x") == {"F": "(=> (x opt=2) x)"}


def test_function_member_with_no_parameters():
    assert members("F() = 1") == {"F": "(=> () 1)"}


def test_parameters_without_default_keep_their_order_among_defaulted_ones():
    params = parse_text("L(a, b = 1, c) = a").members[0].expr.params
    assert [(p.name, p.default is None) for p in params] == [("a", True), ("b", False), ("c", True)]


def test_array_member_becomes_an_array_constructor():
    assert members("arr[i:1..3] = i * i") == {"arr": "(array 1 3 (=> (i) (* i i)))"}


def test_array_member_bounds_are_expressions():
    assert members("L[l:0..n-1] = l") == {"L": "(array 0 (- n 1) (=> (l) l))"}


def test_line_starting_with_a_bracket_continues_the_expression():
    assert members("a = f\n(x)\nb = g\n.y\n- 1") == {"a": "(call f x)", "b": "(- (. g y) 1)"}


def test_duplicate_member_is_reported_at_the_second_definition():
    err = parse_error("a = 1\nb = 2\n  a = 3\n")
    assert err.message == "duplicate member definition 'a'"
    assert at(err) == (3, 3) and "t.net:1:1" in err.hint


def test_duplicate_member_in_a_nested_record():
    err = parse_error("r = {\n x = 1 ; x = 2 }")
    assert "duplicate member definition 'x'" in err.message and at(err) == (2, 10)


def test_duplicate_parameter_is_an_error():
    assert "duplicate parameter 'x'" in parse_error("F(x, x = 1) = x").message


def test_duplicate_named_argument_is_an_error():
    assert "duplicate named argument 'k'" in parse_error("a = f(k = 1, k = 2)").message


def test_junk_at_end_of_source():
    err = parse_error("a = 1\n)")
    assert "junk at end of source" in err.message and at(err) == (2, 1)


def test_with_parses_as_a_binary_operator():
    assert expr("a with b") == "(with a b)"


def test_file_record_spans_the_whole_text():
    record = parse_text("a = 1\nbb = 22", "f.net")
    assert record.span == Span("f.net", 1, 1, 2, 8)


def test_empty_file_is_an_empty_record():
    assert parse_text("  # nothing\n").members == []


def test_members_keep_source_order_and_origin():
    record = parse_text("z = 1 a = 2")
    assert [m.name for m in record.members] == ["z", "a"]
    assert {m.origin for m in record.members} == {"file"}


def test_origin_argument_marks_every_member():
    record = parse_text("a = { b = 1 }", origin="stdlib")
    assert [m.origin for m in ast.walk(record) if isinstance(m, ast.Member)] == ["stdlib", "stdlib"]


# ---- spans --------------------------------------------------------------------------------

def test_member_span_covers_the_definition_and_name_span_the_name():
    member = parse_text("\n  abc = 1 + 22\n", "s.net").members[0]
    assert member.name_span == Span("s.net", 2, 3, 2, 6)
    assert member.span == Span("s.net", 2, 3, 2, 15)


def test_binop_span_runs_from_left_operand_to_right_operand():
    assert parse_expression("x + f(y)").span == Span("<override>", 1, 1, 1, 9)


def test_record_span_includes_its_brackets():
    assert parse_expression(" { a = 1 } ").span == Span("<override>", 1, 2, 1, 11)


def test_every_node_has_a_span_in_the_file():
    text = "a = { b = f(x, y = [| 1 |])[0].c ; g(q) = if q then -q else new T { } }\nc[i:1..2] = 'x$a$'"
    for node in ast.walk(parse_text(text, "w.net")):
        assert isinstance(node, ast.Node) and node.span.file == "w.net" and node.span.line >= 1


# ---- error messages and positions ---------------------------------------------------------

def test_missing_operand_error_names_the_token_and_position():
    err = parse_error("a = 1 +\n  ;")
    assert err.message == "unexpected ';' — expected an expression after '+'"
    assert err.span == Span("t.net", 2, 3, 2, 4)


def test_identifier_expected_after_dot():
    err = parse_error("a = x. 3")
    assert err.message == "identifier expected after '.'" and at(err) == (1, 8)


def test_unclosed_bracket_is_reported_at_end_of_input():
    err = parse_error("a = f(1,\n  2")
    assert "end of input" in err.message and "')'" in err.message and at(err) == (2, 4)


def test_unclosed_bracket_hint_names_where_it_was_opened():
    err = parse_error("net = {\n  z = Dense{10}(x\n  ce = CE(l, z)\n}")
    assert at(err) == (3, 3) and err.hint == "the '(' at t.net:2:16 is still open"


def test_missing_else_says_so():
    err = parse_error("a = if c then 1\n")
    assert "'else'" in err.message and "both branches" in err.hint


def test_call_argument_error_lists_only_what_fits():
    err = parse_error("a = f(x y)")
    assert err.message == "unexpected identifier 'y' — expected ',' or ')'"


def test_function_parameters_must_be_names():
    err = parse_error("F(1) = 2")
    assert at(err) == (1, 3) and "parameters" in err.hint


def test_parse_errors_are_config_errors_with_exit_code_78():
    err = parse_error("a = ")
    assert isinstance(err, ConfigError) and err.exit_code == 78


def test_source_text_is_registered_for_error_display():
    parse_text("first = 1\nsecond = 2", "registered.net")
    assert sources.line_of("registered.net", 2) == "second = 2"


# ---- parse_expression and parse_member_text -----------------------------------------------

def test_parse_expression_rejects_trailing_tokens():
    with pytest.raises(ParseError, match="after the end of the expression"):
        parse_expression("a b")


def test_parse_expression_of_a_path_is_a_parse_error():
    with pytest.raises(ParseError):
        parse_expression("/tmp/model.dnn")


def test_parse_member_text_with_dotted_name():
    member = parse_member_text("a.b.c=3", "<command line>")
    assert (member.name, shape(member.expr), member.origin) == ("a.b.c", "3", "override")
    assert member.name_span == Span("<command line>", 1, 1, 1, 6)


def test_parse_member_text_with_nested_records():
    member = parse_member_text("train=[SGD=[maxEpochs=2]]", "<command line>")
    assert (member.name, shape(member.expr)) == ("train", "{SGD={maxEpochs=2}}")
    assert {m.origin for m in ast.walk(member) if isinstance(m, ast.Member)} == {"override"}


def test_parse_member_text_requires_an_assignment():
    with pytest.raises(ParseError):
        parse_member_text("justaname", "<command line>")


# ---- include ------------------------------------------------------------------------------

def write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_include_splices_members_relative_to_the_including_file(tmp_path):
    main = write(tmp_path / "main.net", 'a = 1\ninclude "sub/more.net"\nc = 3\n')
    write(tmp_path / "sub" / "more.net", "b = 2\n")
    record = parse_file(main)
    assert [(m.name, m.origin) for m in record.members] == [("a", "file"), ("b", "include"), ("c", "file")]


def test_include_spans_point_into_the_included_file(tmp_path):
    main = write(tmp_path / "main.net", 'include "lib.net"')
    lib = write(tmp_path / "lib.net", "\n\n  x = 7")
    member = parse_file(main).members[0]
    assert member.name_span == Span(lib, 3, 3, 3, 4)


def test_include_may_stand_mid_expression(tmp_path):
    main = write(tmp_path / "main.net", 'a = 1 + include "two.net" * 3')
    write(tmp_path / "two.net", "2")
    assert shape(parse_file(main).members[0].expr) == "(+ 1 (* 2 3))"


def test_nested_include_resolves_relative_to_its_own_file(tmp_path):
    main = write(tmp_path / "main.net", 'include "a/first.net"')
    write(tmp_path / "a" / "first.net", 'include "second.net"')
    write(tmp_path / "a" / "second.net", "deep = 1")
    assert [m.name for m in parse_file(main).members] == ["deep"]


def test_include_found_on_the_include_path(tmp_path):
    main = write(tmp_path / "cfg" / "main.net", 'include "shared.net"')
    write(tmp_path / "lib" / "shared.net", "s = 1")
    record = parse_file(main, include_path=[str(tmp_path / "lib")])
    assert [m.name for m in record.members] == ["s"]


def test_include_found_relative_to_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "cwdlib.net", "w = 1")
    monkeypatch.chdir(tmp_path)
    assert [m.name for m in parse_text('include "cwdlib.net"').members] == ["w"]


def test_include_not_found_names_the_directories_searched(tmp_path):
    main = write(tmp_path / "main.net", 'x = 1\n  include "missing.net"')
    with pytest.raises(IncludeError) as info:
        parse_file(main, include_path=["/some/where"])
    err = info.value
    assert "missing.net" in err.message and str(tmp_path) in err.message and "/some/where" in err.message
    assert (err.span.file, err.span.line, err.span.col) == (main, 2, 3)


def test_include_cycle_names_both_places(tmp_path):
    top = write(tmp_path / "top.net", 'include "a.net"')
    a = write(tmp_path / "a.net", 'x = 1\ninclude "b.net"')
    b = write(tmp_path / "b.net", 'include "a.net"')
    with pytest.raises(IncludeError) as info:
        parse_file(top)
    err = info.value
    assert "include cycle" in err.message
    assert (err.span.file, err.span.line) == (b, 1)          # where a.net is included again
    assert f"{top}:1:1" in err.message and a in err.message   # where a.net was first included


def test_file_including_itself_is_a_cycle(tmp_path):
    me = write(tmp_path / "me.net", 'a = 1\ninclude "me.net"')
    with pytest.raises(IncludeError, match="being parsed"):
        parse_file(me)


def test_include_needs_a_string():
    err = parse_error("include other")
    assert "must be followed by a quoted string" in err.message


def test_syntax_error_inside_an_included_file_points_there(tmp_path):
    main = write(tmp_path / "main.net", 'include "bad.net"')
    bad = write(tmp_path / "bad.net", "ok = 1\nbroken = )")
    with pytest.raises(ParseError) as info:
        parse_file(main)
    assert info.value.span == Span(bad, 2, 10, 2, 11)


def test_parse_file_of_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found") as info:
        parse_file(str(tmp_path / "nope.net"))
    assert info.value.hint


# ---- the standard library -----------------------------------------------------------------

@pytest.fixture
def stdlib_file(tmp_path, monkeypatch):
    path = tmp_path / "core.net"
    path.write_text("Id(x) = x\nPlus(a, b) = a + b\n")
    monkeypatch.setattr(library, "STDLIB_PATH", path)
    monkeypatch.setattr(library, "_stdlib_memo", None)
    monkeypatch.setenv("NETLANG_CACHE", str(tmp_path / "cache"))
    return path


def test_load_stdlib_parses_with_stdlib_origin(stdlib_file):
    record = load_stdlib()
    assert [(m.name, m.origin) for m in record.members] == [("Id", "stdlib"), ("Plus", "stdlib")]


def test_load_stdlib_is_cached_in_memory(stdlib_file):
    assert load_stdlib() is load_stdlib()


def test_load_stdlib_is_cached_on_disk(stdlib_file, monkeypatch):
    load_stdlib()
    monkeypatch.setattr(library, "_stdlib_memo", None)

    def no_parsing(*args, **kwargs):
        raise AssertionError("should have come from the disk cache")

    monkeypatch.setattr("netlang.grammar.parser.parse_text", no_parsing)
    assert [m.name for m in load_stdlib().members] == ["Id", "Plus"]


def test_changed_stdlib_text_is_parsed_again(stdlib_file):
    load_stdlib()
    stdlib_file.write_text("Other = 1\n")
    assert [m.name for m in load_stdlib().members] == ["Other"]


def test_corrupt_disk_cache_is_ignored(stdlib_file, monkeypatch, tmp_path):
    load_stdlib()
    for entry in (tmp_path / "cache").glob("stdlib-*"):
        entry.write_bytes(b"not a cache entry")
    monkeypatch.setattr(library, "_stdlib_memo", None)
    assert [m.name for m in load_stdlib().members] == ["Id", "Plus"]


def test_unwritable_cache_dir_falls_back_silently(stdlib_file, monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("NETLANG_CACHE", str(blocker / "cache"))
    assert [m.name for m in load_stdlib().members] == ["Id", "Plus"]


def test_missing_stdlib_is_an_empty_record(tmp_path, monkeypatch):
    monkeypatch.setattr(library, "STDLIB_PATH", tmp_path / "absent.net")
    monkeypatch.setattr(library, "_stdlib_memo", None)
    assert load_stdlib().members == []


def test_ast_survives_pickling():
    record = parse_text("F(x, y = 1) = { z = x : y ; s = '$a$b' }.z")
    again = pickle.loads(pickle.dumps(record))
    assert shape(again) == shape(record)
