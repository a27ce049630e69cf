"""Loading: every unfit input is one located finding, never a traceback or a constructed object."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from pv.contract import load
from pv.contract.load import ContractLoadError, load_document
from pv.errors import PvError


def _rule(path: Path, **kwargs: object) -> tuple[str, int, str]:
    with pytest.raises(ContractLoadError) as info:
        load_document(path, **kwargs)  # type: ignore[arg-type]
    f = info.value.finding
    assert f.file == str(path) and f.severity == "error"
    return f.rule, f.line, f.message


def test_valid_file_loads_as_plain_data(write, valid_text):
    doc = load_document(write(valid_text))
    assert doc.data["metadata"]["version"] == "1.0.0"
    assert doc.contract_id == "demo-v1"
    assert doc.stem == "demo-v1"


def test_locate_points_at_the_key(write, valid_text):
    doc = load_document(write(valid_text))
    lines = valid_text.splitlines()
    line, col = doc.locate(("falsification_tests", 1, "prediction"))
    assert lines[line - 1][col - 1:].startswith("prediction:")
    line, col = doc.locate(("metadata", "version"))
    assert lines[line - 1][col - 1:].startswith("version:")
    # A key that is absent points at the deepest key that exists.
    assert doc.locate(("metadata", "nope")) == doc.locate(("metadata",))
    assert doc.locate(("falsification_tests", 9)) == doc.locate(("falsification_tests",))


def test_contract_id_defaults_to_stem(write):
    doc = load_document(write("metadata: {version: '1', description: d}\n", "my-contract.yaml"))
    assert doc.contract_id == "my-contract"


def test_timestamps_stay_strings(write):
    doc = load_document(write("metadata: {version: '1', description: d, created: 2026-02-18}\n"))
    assert doc.data["metadata"]["created"] == "2026-02-18"


def test_small_anchor_use_is_fine(write):
    text = "base: &b {x: 1}\nmetadata: {version: '1', description: d}\nother: *b\n"
    assert load_document(write(text)).data["other"] == {"x": 1}


@pytest.mark.parametrize("text, rule, line", [
    ("", "PV006", 1),
    ("# only a comment\n", "PV006", 1),
    ("- a\n- b\n", "PV006", 1),
    ("just a string\n", "PV006", 1),
    ("metadata:\n  version: '1'\n  description: [unclosed\n", "PV004", 4),
    ("metadata:\n  version: '1'\n bad: indent\n", "PV004", 3),
    ("metadata: {version: '1', description: d}\n---\nmetadata: {}\n", "PV005", 2),
])
def test_bad_documents(write, text, rule, line):
    got_rule, got_line, message = _rule(write(text))
    assert (got_rule, got_line) == (rule, line), message


def test_empty_and_list_messages_say_what_is_wrong(write):
    assert "empty file" in _rule(write(""))[2]
    assert "is a list" in _rule(write("- a\n"))[2]


def test_binary_file(write):
    assert _rule(write(b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR"))[0] == "PV003"


def test_not_utf8(write):
    rule, line, message = _rule(write(b"metadata:\n  description: caf\xe9\n"))
    assert (rule, line) == ("PV003", 2) and "UTF-8" in message


def test_too_large_is_refused_before_reading(write):
    # Refused on the size the opened descriptor reports (so the message knows it), not
    # after reading past the bound.
    path = write("metadata: {version: '1', description: " + "x" * 500 + "}\n")
    rule, _, message = _rule(path, max_bytes=100)
    assert rule == "PV002" and f"file is {path.stat().st_size} bytes, over the 100-byte bound" in message


def test_a_file_swapped_for_a_fifo_after_a_check_is_refused_not_waited_on(write, monkeypatch):
    # A reader that checks with stat() and then opens lets a file swapped in between through:
    # a FIFO with no writer blocks open() forever. pv opens first and checks the descriptor.
    import signal

    path = write("metadata: {version: '1', description: d}\n")
    real_stat, real_lstat = os.stat, os.lstat

    def swap_then(real):
        def call(target, *args, **kwargs):
            result = real(target, *args, **kwargs)
            if os.fspath(target) == str(path) and not os.path.exists(str(path) + ".swapped"):
                Path(str(path) + ".swapped").touch()
                path.unlink()
                os.mkfifo(path)
            return result
        return call

    monkeypatch.setattr(os, "stat", swap_then(real_stat))
    monkeypatch.setattr(os, "lstat", swap_then(real_lstat))

    def hang(signum, frame):
        raise TimeoutError("blocked opening a FIFO")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(5)
    try:
        rule, _, message = _rule(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert rule == "PV001" and "not a regular file" in message


def test_unreadable_permissions(write, monkeypatch):
    path = write("metadata: {version: '1', description: d}\n")
    real_open = os.open

    def denied(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    rule, _, message = _rule(path)
    assert rule == "PV001" and "Permission denied" in message


def test_unreadable_chmod(write):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files regardless of their mode")
    path = write("metadata: {version: '1', description: d}\n")
    path.chmod(0)
    try:
        assert _rule(path)[0] == "PV001"
    finally:
        path.chmod(0o644)


def test_missing_file_and_directory(tmp_path):
    assert _rule(tmp_path / "absent.yaml")[0] == "PV001"
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    assert _rule(folder)[0] == "PV001"


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
metadata: {version: '1', description: *i}
"""


def test_billion_laughs_refused_fast_and_small(write):
    path = write(BILLION_LAUGHS)
    tracemalloc.start()
    start = time.perf_counter()
    rule, line, message = _rule(path)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert rule == "PV007" and "alias" in message
    assert 1 <= line <= 10
    assert elapsed < 1.0 and peak < 100 * 2**20


def test_many_aliases_refused(write):
    body = "x: &x 1\nl: [" + ",".join(["*x"] * (load.MAX_ALIASES + 1)) + "]\n"
    assert _rule(write(body))[0] == "PV007"


def test_python_tags_are_never_constructed(write, tmp_path):
    marker = tmp_path / "constructed"
    text = (f"metadata: !!python/object/apply:builtins.open [{str(marker)!r}, 'w']\n")
    rule, line, message = _rule(write(text))
    assert rule == "PV008" and line == 1 and "!!python/object/apply:builtins.open" in message
    assert not marker.exists()


def test_unknown_local_tag(write):
    assert _rule(write("metadata: !custom {version: '1'}\n"))[0] == "PV008"


def test_load_error_is_a_pv_error_with_one_line(write):
    with pytest.raises(PvError) as info:
        load_document(write("- a\n", "x.yaml"))
    text = str(info.value)
    assert "\n" not in text and text.endswith("a contract is a YAML mapping")
    assert ":1:1: error PV006:" in text


def test_fine_files_are_parsed_once(write, valid_text, monkeypatch):
    """No second (composing) parse when nothing needs a location."""
    from pv.contract.validate import validate_files

    calls = []
    real_compose = yaml.compose
    monkeypatch.setattr(load.yaml, "compose", lambda *a, **k: calls.append(1) or real_compose(*a, **k))
    report = validate_files([write(valid_text)], check_evidence=False)
    assert report.ok and report.findings == () and calls == []


@pytest.mark.parametrize("text", [
    "metadata: " + "[" * 200_000 + "]" * 200_000 + "\n",
    "metadata: " + "{a: " * 600 + "1" + "}" * 600 + "\n",
    "metadata:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(600)) + " " * 601 + "x\n",
    "metadata: \n" + "- " * 700 + "x\n",
], ids=["flow-200k", "flow-maps-600", "block-indent-600", "compact-dashes-700"])
def test_deep_nesting_is_refused_without_crashing(write, text):
    """Run in a child process: a regression here would crash the interpreter, not fail."""
    import subprocess
    import sys

    path = write(text)
    code = ("from pv.contract.load import load_document, ContractLoadError\n"
            f"try:\n    load_document({str(path)!r})\nexcept ContractLoadError as e:\n"
            "    print(e.finding.rule)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "PV009", done.stderr[-500:]


def test_moderate_nesting_is_fine(write):
    text = "metadata: {version: '1', description: d}\nx: " + "[" * 100 + "]" * 100 + "\n"
    assert load_document(write(text)).data["x"] is not None


@pytest.mark.parametrize("text, line, column", [
    ("metadata:\n\tversion: '1'\n", 2, 1),                       # cannot start any token
    ("metadata:\n  version: '1'\n\tdescription: d\n", 3, 1),
    ("a:\n  b: 1\n  \tc: 2\n", 3, 3),                            # violates indentation
    ("a: 1\n\tb: 2\n", 2, 1),
    ("a: |\n\tx\n", 2, 1),                                       # in a block scalar
    ("é: 1\nb:\n  é: 2\n  \tc: 3\n", 4, 3),                      # columns count characters
    ("a: b\r\n\tc: d\r\n", 2, 1),
])
def test_a_tab_is_named(write, text, line, column):
    path = write(text)
    with pytest.raises(ContractLoadError) as info:
        load_document(path)
    f = info.value.finding
    assert (f.rule, f.line, f.column) == ("PV004", line, column)
    assert f.message == (f"invalid YAML: a tab character at line {line}, column {column}: "
                         "YAML indents with spaces, never tabs")


def test_other_syntax_errors_keep_the_parser_message(write):
    rule, line, message = _rule(write("a: ok\nb: `x\n"))
    assert (rule, line) == ("PV004", 2) and "tab" not in message
    assert "cannot start any token" in message


def test_tabs_where_yaml_allows_them_are_fine(write):
    doc = load_document(write("a: [1,\n\t2]\nb: x\ty\n"))
    assert doc.data == {"a": [1, 2], "b": "x\ty"}


def test_scalar_text_is_the_text_written(write):
    doc = load_document(write("metadata:\n  version: 1.10\n  tags: [1.20, x]\n"))
    assert doc.data["metadata"]["version"] == 1.1
    assert doc.scalar_text(("metadata", "version")) == "1.10"
    assert doc.scalar_text(("metadata", "tags", 0)) == "1.20"
    assert doc.scalar_text(("metadata", "tags")) is None
    assert doc.scalar_text(("metadata", "absent")) is None
    assert doc.scalar_text(("metadata", "tags", 5)) is None
