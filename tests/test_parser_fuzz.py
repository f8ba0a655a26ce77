"""Property: whatever text the parser is given, only NetlangErrors come out, never a Python or Lark
exception, and a successful parse yields a clean AST (only ast nodes, every one with a Span)."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlang.compiler.lang.overrides import apply_overrides
from netlang.errors import NetlangError, Span
from netlang.grammar import ast, legacy
from netlang.grammar.lexer import ScanState, tokenize
from netlang.grammar.parser import parse_expression, parse_text

# Token texts of BrainScript, plus comments, newlines and characters that are not tokens at all.
# (No string names an existing file, so `include` only ever fails to find its file.)
VOCABULARY = [
    "a", "b", "F", "_", "x1", "Ärger", "13", "3.14", ".5", "5.", "1e-3", "0x1F", "1e999",
    '"s|s"', "'t|t'", "'$a$/x'", '"$"', "'multi\nline'", "$a$",
    "true", "false", "if", "then", "else", "new", "with", "array", "include",
    "=", ";", ",", "[", "]", "(", ")", "{", "}", "[|", "|]", "+", "-", "*", "/", "**", ".*", "%",
    "||", "&&", "<<", ">>", "!", "<", "==", ">", ">=", "!=", "<=", ":", "=>", "..", ".",
    "# c\n", "// c\n", "/* c */", "\n", "/*", '"', "'", "|", "&", "$", "^", "?", "~", "@", "\\", "\x00",
]

# Valid snippets covering every construct; the mutation strategy breaks them in small ways.
SNIPPETS = [
    "a = 13 b = 42",
    "F(x, y = 1) = x + y * 2 ** 3 ; G{z} = F(z, y = 3)",
    "arr[i:1..3] = if i == 1 then 0 else arr[i - 1] + i",
    "m = { c = ConvolutionalLayer {32, (5:5), pad = true}(x) ; r = ReLU(c) }.r",
    "s = 'a $b$ c' + \"d\" ; t = [| 1 ; 2 |] ; u = [||]",
    "n = new ComputationNetwork [ features = Input{784} ; out = (features) ]",
    "l = (x => x * 2) : (y => -y.z) : array[0..3](i => i % 2)",
    "c = a && b || !c >> d << e : f with g ; d = a < b && a != b || a >= b",
    "lr = 0.1*5:0.01 # schedule\n/* block */ mb = 64 // per minibatch",
    "r = { a = { b = { c = 1 } } }.a.b.c ; q = f()[0](1){2}",
]


def _split(snippet: str) -> list[str]:
    return [snippet[t.start_pos:t.end_pos] for t in tokenize(snippet, "<snippet>", ScanState([]))]


SNIPPET_TOKENS = [_split(s) for s in SNIPPETS]


def assert_clean(root: ast.Node) -> None:
    """Every field of every node is a node, a list of nodes, or a plain value."""
    for node in ast.walk(root):
        assert isinstance(node.span, Span), node
        for value in vars(node).values():
            items = value if isinstance(value, list) else [value]
            for item in items:
                assert item is None or isinstance(item, (ast.Node, Span, str, float, bool)), (node, item)
                assert not isinstance(item, str) or type(item) is str, (node, item)  # no Lark tokens


def check(text: str) -> None:
    try:
        record = parse_text(text, "<fuzz>")
    except NetlangError as err:
        assert err.span is not None and err.message, err
    else:
        assert isinstance(record, ast.Record)
        assert_clean(record)
    try:
        node = parse_expression(text, "<fuzz-expression>")
    except NetlangError as err:
        assert err.span is not None and err.message, err
    else:
        assert_clean(node)


separators = st.sampled_from([" ", " ", "", "\n"])


@st.composite
def token_sequences(draw):
    tokens = draw(st.lists(st.sampled_from(VOCABULARY), max_size=30))
    sep = draw(separators)
    return sep.join(tokens)


@st.composite
def mutated_snippets(draw):
    tokens = list(draw(st.sampled_from(SNIPPET_TOKENS)))
    for _ in range(draw(st.integers(1, 4))):
        if not tokens:
            break
        i = draw(st.integers(0, len(tokens) - 1))
        action = draw(st.sampled_from(["drop", "duplicate", "swap", "replace", "insert"]))
        if action == "drop":
            del tokens[i]
        elif action == "duplicate":
            tokens.insert(i, tokens[i])
        elif action == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif action == "replace":
            tokens[i] = draw(st.sampled_from(VOCABULARY))
        else:
            tokens.insert(i, draw(st.sampled_from(VOCABULARY)))
    return draw(separators).join(tokens)


FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(token_sequences())
def test_random_token_sequences_raise_only_netlang_errors(text):
    check(text)


@FUZZ
@given(mutated_snippets())
def test_mutated_valid_snippets_raise_only_netlang_errors(text):
    check(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab1.e=;:,()[]{}|&!<>+-*/%#'\"$ \n_x", max_size=40))
def test_random_characters_raise_only_netlang_errors(text):
    check(text)


def test_unmutated_snippets_parse():
    for snippet in SNIPPETS:
        assert_clean(parse_text(snippet))


# ---- CNTK's legacy layer (.cntk files) -----------------------------------------------------------

LEGACY_VOCABULARY = [
    "command", "train", "modelPath", "DataDir", "SGD", "reader", "x", "BrainScriptNetworkBuilder",
    "=", " = ", "[", "]", "{", "}", "(", ")", '"', "'", ";", ",", ":", "|", "\n", " ", "\t", "#", " # c", "1#INF",
    "$DataDir$", "$datadir$", "$x$", "$$", "$", "$undefined$", "./work", "train.rois.txt", "%d\\t|w\\s",
    "C:\\data", "0.01*2:0.005", "true", "include=x.cntk", "\ninclude=", "[|", "|]", "//", "/*", "*/",
    "Input {$x$}", "include \"$DataDir$/m.bs\"", "z = DenseLayer {2} (f)", "\ufeff", "\r\n",
]

LEGACY_SNIPPETS = [
    'DataDir = ./data\ncommand = train\ntrain = [\n action = train\n'
    ' BrainScriptNetworkBuilder = { f = Input {$x$} ; z = DenseLayer {2} (f) }\n'
    ' SGD = [ maxEpochs = 1 ; learningRatesPerMB = 0.1*2:0.05 ; clippingThresholdPerSample = 1#INF ]\n'
    ' reader = [ file = $DataDir$/t.txt ; input = [ f = [ dim = 2 ] ] ]\n]\nx = 2\n',
    'a = 1\nb = $a$/x ; c = "q $b$"\nd = [|e=1|f=2]\ng = ( [ t = Crop ] : [ t = Scale ] )\nh\n',
    'modelPath = out/m.dnn\nw = [ action = write ; BrainScriptNetworkBuilder = (BS.Network.Load ("$modelPath$")) ]\n',
]


def check_legacy(text: str) -> None:
    """Reading, overriding and resolving a legacy config raise only NetlangErrors, and the result is
    a clean AST (legacy nodes resolved away)."""
    try:
        record = legacy.read_legacy_text(text, "<fuzz>.cntk")
        record = apply_overrides(record, ["x=3", "train=[SGD=[maxEpochs=2]]"], legacy=True)
        record = legacy.resolve(record)
    except NetlangError as err:
        assert err.message, err
        return
    for node in ast.walk(record):
        assert not isinstance(node, (ast.LegacyText, ast.LegacyBrainScript)), node
        assert isinstance(node.span, Span), node


LEGACY_SNIPPET_CHARS = [list(s) for s in LEGACY_SNIPPETS]


@st.composite
def legacy_sequences(draw):
    return draw(separators).join(draw(st.lists(st.sampled_from(LEGACY_VOCABULARY), max_size=30)))


@st.composite
def mutated_legacy_snippets(draw):
    chars = list(draw(st.sampled_from(LEGACY_SNIPPET_CHARS)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(chars)))
        action = draw(st.sampled_from(["drop", "insert"]))
        if action == "drop" and i < len(chars):
            del chars[i:i + draw(st.integers(1, 4))]
        else:
            chars.insert(i, draw(st.sampled_from(LEGACY_VOCABULARY)))
    return "".join(chars)


LEGACY_FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@LEGACY_FUZZ
@given(legacy_sequences())
def test_random_legacy_token_sequences_raise_only_netlang_errors(text):
    check_legacy(text)


@LEGACY_FUZZ
@given(mutated_legacy_snippets())
def test_mutated_legacy_configs_raise_only_netlang_errors(text):
    check_legacy(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab1.e=;:,()[]{}|#'\"$ \n_x\\", max_size=40))
def test_random_legacy_characters_raise_only_netlang_errors(text):
    check_legacy(text)


def test_unmutated_legacy_snippets_read():
    for snippet in LEGACY_SNIPPETS:
        check_legacy(snippet)
