"""Tests of supervisor/names.py: every rule, every defect of issue 10, properties.

Pure and in-process. The table cases are each a name that was accepted (or a
500) before the checks existed; the hypothesis properties say that no text,
however odd, gets anything but the value back or a `BadInput`.
"""

import re
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import rundir, run, slurm_text
from agent.codes import stats
from supervisor import errors, names

settings.register_profile("bounded", max_examples=200, deadline=None, database=None)
# CI runs a bounded number of examples; no example database in the tree
_BOUNDED = settings.get_profile("bounded")

# any text, lone surrogates included (a URL can carry one percent-encoded)
_ANY_TEXT = st.text(st.characters(exclude_categories=()))
_ANY_VALUE = st.one_of(
    _ANY_TEXT,
    st.none(),
    st.integers(),
    st.binary(),
    st.lists(st.text(), max_size=3),
)
_CHECKS = [
    names.user_name,
    names.login_user,
    names.input_name,
    names.output_path,
]

_DISPOSITION_RE = re.compile(
    r"attachment; filename=\"([\x20-\x7e]*)\"; filename\*=UTF-8''([A-Za-z0-9!#$&+.^_`|~%-]*)"
)


def _refused(check, v, code):
    with pytest.raises(errors.BadInput) as e:
        check(v)
    assert e.value.code == code
    assert e.value.status == 400
    return e.value.message


@pytest.mark.parametrize("v", ["eve", "a", "a" * 32, "a0_-", "bob-2"])
def test_user_name_ok(v):
    assert names.user_name(v) == v


@pytest.mark.parametrize(
    "v",
    [
        # issue 10: accepted by `$`, then it could not be patched
        "eve\n",
        "eve\r",
        "\neve",
        "Eve",
        "0eve",
        "_eve",
        "",
        "a" * 33,
        "e ve",
        "ev\0e",
        "évé",
        None,
        5,
        b"eve",
    ],
)
def test_user_name_bad(v):
    m = _refused(names.user_name, v, "bad_name")
    assert m == "user name: lower-case letters, digits, _ or -, up to 32"


@pytest.mark.parametrize("v", ["alice", "_svc", "a.b-c_d", "a" * 32])
def test_login_user_ok(v):
    assert names.login_user(v) == v


@pytest.mark.parametrize(
    "v", ["alice\n", "Alice", ".alice", "-a", "a" * 33, "", "al ice", None, 1]
)
def test_login_user_bad(v):
    _refused(names.login_user, v, "bad_user")


@pytest.mark.parametrize(
    "v",
    [
        "data.csv",
        "a" * 100,
        # 85 * 3 bytes: exactly the file system's limit
        "\u20ac" * 85,
        "数据.txt",
        "a..b",
        "run.log.1",
        "params.json.bak",
        "with space",
    ],
)
def test_input_name_ok(v):
    assert names.input_name(v) == v


@pytest.mark.parametrize(
    "v",
    [
        "",
        None,
        7,
        b"x",
        "a/b",
        "/etc",
        ".",
        "..",
        ".hidden",
        "a" * 101,
        # issue 10: 256 bytes in UTF-8 (86 characters), a 500 from the file system
        "\u20ac" * 85 + "a",
        "\U0001f600" * 64,
        "a\0b",
        "a\nb",
        "a\r",
        "\tx",
        "a\x7f",
        "a\x85",
        "a\x9f",
        "\ud800x",
    ],
)
def test_input_name_bad(v):
    m = _refused(names.input_name, v, "bad_name")
    assert m.startswith("input file name must be a plain file name")


def test_reserved_names_are_the_agents_files():
    assert names.RESERVED.keys() == {
        rundir.PARAMS_FILE,
        run.LOG_FILE,
        stats.SOURCE_FILE,
        slurm_text.SCRIPT_FILE,
        slurm_text.OUT_FILE,
        slurm_text.ERR_FILE,
    }
    assert names.RESERVED.keys() == {
        "params.json",
        "run.log",
        "source_frames.jsonl",
        "job.sh",
        "run.out",
        "run.err",
    }


@pytest.mark.parametrize("v", sorted(names.RESERVED))
def test_input_name_reserved(v):
    # issue 10: an upload of run.log broke every later run of the simulation
    m = _refused(names.input_name, v, "reserved_name")
    assert repr(v) in m
    assert names.RESERVED[v] in m


@pytest.mark.parametrize(
    "v",
    [
        "result.json",
        "sub/dir/x.csv",
        "a" * 255,
        "\u00fc" * 127,
        "a/" * 2000 + "b",
        # 4096 characters, the limit
        "a/" * 2047 + "bb",
        # resolution inside the run directory is supervisor.files' job
        "../x",
        "a//b",
        "数据.csv",
    ],
)
def test_output_path_ok(v):
    assert names.output_path(v) == v


@pytest.mark.parametrize(
    "v",
    [
        "",
        None,
        3,
        b"x",
        # issue 10: NUL and 5,000 characters were 500s
        "a\0b",
        "a/" * 2500,
        "a" * 5000,
        "a\nb",
        "x\r",
        "x\x7f",
        "x\x9b",
        "\udc80",
        "a" * 256,
        "d/" + "\u00fc" * 128,
        # 1458 characters but 4338 bytes
        ("\u20ac" * 80 + "/") * 18,
    ],
)
def test_output_path_bad(v):
    m = _refused(names.output_path, v, "bad_path")
    assert m.startswith("output path: ")


def _disposition(name):
    v = names.content_disposition(name)
    assert isinstance(v, str)
    v.encode("latin-1")
    assert "\r" not in v and "\n" not in v
    m = _DISPOSITION_RE.fullmatch(v)
    assert m, v
    return m.group(1), urllib.parse.unquote(m.group(2), errors="strict")


def test_content_disposition_plain():
    assert (
        names.content_disposition("result.json")
        == "attachment; filename=\"result.json\"; filename*=UTF-8''result.json"
    )


@pytest.mark.parametrize(
    "name,fallback",
    [
        # issue 10: a quote ended the quoted string
        ('a"b.txt', "a_b.txt"),
        ("a\r\nSet-Cookie: x=1", "a__Set-Cookie: x=1"),
        ("数据.csv", "__.csv"),
        ("\u20ac.dat", "_.dat"),
        ("caf\u00e9.txt", "caf_.txt"),
        ("back\\slash", "back_slash"),
        ("100%.txt", "100_.txt"),
        ("it's;x=y", "it's;x=y"),
        ("tab\there", "tab_here"),
        ("\0", "_"),
        ("", "download"),
    ],
)
def test_content_disposition(name, fallback):
    assert _disposition(name) == (fallback, name)


def test_content_disposition_lone_surrogate():
    assert _disposition("a\udc80b") == ("a_b", "a\ufffdb")


@_BOUNDED
@given(v=_ANY_VALUE)
def test_checks_return_the_value_or_raise_bad_input(v):
    for c in _CHECKS:
        try:
            assert c(v) is v
        except errors.BadInput as e:
            assert isinstance(e.code, str) and isinstance(e.message, str)


@_BOUNDED
@given(v=_ANY_TEXT)
def test_accepted_names_are_single_lines(v):
    for c in _CHECKS:
        try:
            c(v)
        except errors.BadInput:
            continue
        assert not re.search(r"[\x00-\x1f\x7f-\x9f]", v)
        v.encode("utf-8")


@_BOUNDED
@given(v=st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True))
def test_user_name_accepts_the_pattern(v):
    assert names.user_name(v) == v
    for s in ("\n", " ", "\0"):
        with pytest.raises(errors.BadInput):
            names.user_name(v + s)


@_BOUNDED
@given(v=_ANY_TEXT)
def test_an_accepted_input_is_one_the_agent_writes(v):
    try:
        names.input_name(v)
    except errors.BadInput:
        return
    # the agent's own check of the run op agrees: the run cannot fail on it
    assert rundir.check_inputs({v: ""}) is None
    assert len(v.encode()) <= names.MAX_NAME_BYTES
    assert v not in names.RESERVED


@_BOUNDED
@given(v=st.text(st.characters(exclude_categories=("Cs",)), max_size=300))
def test_content_disposition_of_any_text(v):
    f, n = _disposition(v)
    assert n == v
    assert not set(f) & set('"\\%/')


@_BOUNDED
@given(v=_ANY_TEXT)
def test_content_disposition_of_any_text_is_a_header(v):
    _disposition(v)
