"""More bad inputs for tests/test_bad_inputs.py (issue 27): abbreviated options of every
command, duplicate keys at several depths, deep nesting and alias bombs, binary and special
files, ``--out`` against the study's own folders, ``--storage`` that must create nothing,
out-of-range numbers, and ``--workers 2`` with each kind of bad input (checked before any
worker starts, said once).

Each case is ``(id, argv, needle)`` as in :mod:`tests.bad_inputs`; :func:`write_more` adds the
files they need to the scratch folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.bad_inputs import RUN, TINY

STUDY = ["--study", "s", "--results-dir", "{w}/studies"]
EXPORT = ["export", *STUDY, "--trial", "1", "--force"]  # trial 1's folder exists
W2 = [*RUN, "--workers", "2"]  # a valid run with two workers but for the case's input
# A space that passes every check but for the line the case adds (it must not be refused for
# anything else). The profile likewise.
SPACE = "search: {trials: 2}\nprune: {ratio: {low: 0.0, high: 0.5}}\n"
PROFILE = "providers:\n  - name: CPUExecutionProvider\nthreads: {intra_op: 1}\n"

MORE_FILES: dict[str, str | bytes] = {
    # duplicate keys at several depths
    "s_dup_top.yaml": SPACE + "prune: {ratio: {low: 0.1, high: 0.3}}\n",
    "s_dup_depth2.yaml": "prune:\n  ratio: {low: 0.0, high: 0.5}\n  ratio: {low: 0.1}\n",
    "s_dup_depth3.yaml": "prune: {ratio: {low: 0.0, low: 0.2, high: 0.5}}\n",
    "s_dup_search.yaml": "search:\n  trials: 2\n  sampler: tpe\n  trials: 3\n",
    "s_dup_int_float.yaml": "search: {trials: 2}\n1: a\n1.0: b\n",
    "p_dup_top.yaml": PROFILE + "providers:\n  - name: CUDAExecutionProvider\n",
    "p_dup_depth2.yaml": PROFILE + "measure: {min_runs: 5, min_runs: 50}\n",
    "p_dup_in_list.yaml": "providers:\n  - name: CPUExecutionProvider\n    name: CPU\n",
    "p_dup_session.yaml": PROFILE
    + "session_config:\n  session.intra_op.allow_spinning: '0'\n"
    + "  session.intra_op.allow_spinning: '1'\n",
    "p_dup_budget.yaml": PROFILE + "budgets:\n  latency_ms: 5\n  latency_ms: 50\n",
    # nesting, aliases
    "s_deep_flow.yaml": "prune: " + "[" * 5000 + "]" * 5000 + "\n",
    "s_deep_map.yaml": "prune: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "s_deep_block.yaml": "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "x\n",
    "p_deep_flow.yaml": "providers: " + "[" * 5000 + "]" * 5000 + "\n",
    "s_alias_bomb.yaml": "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
    + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
        for p, n in zip("abcdef", "bcdefg", strict=True)
    ),
    "p_alias_loop.yaml": "providers: &p [*p]\n",
    "s_python_tag.yaml": "prune: !!python/object/apply:os.system ['touch PWNED_bad_inputs']\n",
    "s_unhashable_key.yaml": "? [prune, ratio]\n: 1\n",
    "s_tab_indent.yaml": "prune:\n\tratio: 0.3\n",
    # binary, not UTF-8
    "s_latin1.yaml": "description: caf\xe9\n".encode("latin-1"),
    "s_nul.yaml": b"search: {trials: 2}\x00\n",
    "p_utf16.yaml": PROFILE.encode("utf-16"),
    "s_png.yaml": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "p_control_char.yaml": b"providers: [{name: CPU\x07ExecutionProvider}]\n",
    # storages that are not databases
    "not_a_db.db": "I am a text file, not a SQLite database\n",
    "empty.db": "",
}


def write_more(w: Path) -> None:
    """The files of :data:`MORE_FILES`, a space over the size limit, and symbolic links: a loop,
    a dangling one, one to the study's trial folder."""
    from search.core.yaml_input import MAX_BYTES

    for name, text in MORE_FILES.items():
        (w / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    (w / "s_huge.yaml").write_bytes(b"# " + b"x" * MAX_BYTES + b"\n")
    os.symlink("loop", w / "loop")
    os.symlink("nowhere", w / "dangling")
    os.symlink(w / "studies" / "s" / "artifacts" / "1", w / "link_to_trial")


def _run_with(flag: str, value: str) -> list[str]:
    """RUN with ``flag`` set to ``value`` (replaced where RUN sets it)."""
    argv = list(RUN)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
        return argv
    return [*argv, flag, value]


MORE_CASES = [
    # abbreviated long options: every command refuses them (argparse took --wo for --workers)
    ("abbrev-run-workers", ["run", "--wo", "2"], "unrecognized arguments: --wo 2"),
    ("abbrev-run-workers-eq", ["run", "--wo=2"], "unrecognized arguments: --wo=2"),
    ("abbrev-run-worker", ["run", "--worker", "2"], "unrecognized arguments: --worker"),
    ("abbrev-run-trials", ["run", "--tri", "3"], "unrecognized arguments: --tri"),
    ("abbrev-run-study", ["run", "--stud", "x"], "unrecognized arguments: --stud"),
    ("abbrev-run-space", ["run", "--spa", "default"], "unrecognized arguments: --spa"),
    ("abbrev-run-results", ["run", "--results", "r"], "unrecognized arguments: --results"),
    ("abbrev-run-heartbeat", ["run", "--heart", "5"], "unrecognized arguments: --heart"),
    ("abbrev-run-no-prog", ["run", "--no-prog"], "unrecognized arguments: --no-prog"),
    ("abbrev-run-train-dev", ["run", "--train", "cpu"], "unrecognized arguments: --train"),
    ("abbrev-report-study", ["report", "--stu", "s"], "unrecognized arguments: --stu"),
    ("abbrev-report-pick", ["report", *STUDY, "--pic", "knee"], "unrecognized arguments: --pic"),
    ("abbrev-report-confirm", ["report", *STUDY, "--conf"], "unrecognized arguments: --conf"),
    ("abbrev-export-out", ["export", *STUDY, "--trial", "0", "--ou", "o"], "required: --out"),
    ("abbrev-export-trial", ["export", *STUDY, "--out", "o", "--tri", "0"], "one of the"),
    ("abbrev-export-force", [*EXPORT[:-1], "--out", "{w}/o", "--forc"], "arguments: --forc"),
    ("abbrev-profiles-help", ["profiles", "--he"], "unrecognized arguments: --he"),
    ("abbrev-agent-port", ["agent", "--por", "0"], "unrecognized arguments: --por"),
    ("abbrev-agent-token", ["agent", "--tok", "x" * 20], "unrecognized arguments: --tok"),
    ("abbrev-bench-trials", ["bench", *TINY, "--tri", "1"], "unrecognized arguments: --tri"),
    ("abbrev-bench-samplers", ["bench", *TINY, "--sampl", "tpe"], "arguments: --sampl"),
    # duplicate keys in spaces and profiles, at several depths
    ("dup-space-top", _run_with("--space", "{w}/s_dup_top.yaml"), "key 'prune' is given"),
    ("dup-space-depth2", _run_with("--space", "{w}/s_dup_depth2.yaml"), "'prune.ratio'"),
    ("dup-space-depth3", _run_with("--space", "{w}/s_dup_depth3.yaml"), "'prune.ratio.low'"),
    ("dup-space-search", _run_with("--space", "{w}/s_dup_search.yaml"), "lines 2 and 4"),
    ("dup-space-1-and-1.0", _run_with("--space", "{w}/s_dup_int_float.yaml"), "key '1.0'"),
    ("dup-profile-top", _run_with("--hw", "{w}/p_dup_top.yaml"), "key 'providers' is given"),
    ("dup-profile-depth2", _run_with("--hw", "{w}/p_dup_depth2.yaml"), "'measure.min_runs'"),
    ("dup-profile-in-list", _run_with("--hw", "{w}/p_dup_in_list.yaml"), "'providers.0.name'"),
    (
        "dup-profile-session",
        _run_with("--hw", "{w}/p_dup_session.yaml"),
        "'session_config.session.intra_op.allow_spinning'",
    ),
    ("dup-profile-budget", _run_with("--hw", "{w}/p_dup_budget.yaml"), "lines"),
    ("dup-bench-space", ["bench", *TINY[2:], "--space", "{w}/s_dup_top.yaml"], "is given"),
    # nesting, aliases, tags
    ("deep-space-flow", _run_with("--space", "{w}/s_deep_flow.yaml"), "nested deeper than 64"),
    ("deep-space-map", _run_with("--space", "{w}/s_deep_map.yaml"), "nested deeper than 64"),
    ("deep-space-block", _run_with("--space", "{w}/s_deep_block.yaml"), "nested deeper than"),
    ("deep-profile-flow", _run_with("--hw", "{w}/p_deep_flow.yaml"), "nested deeper than 64"),
    ("alias-bomb-space", _run_with("--space", "{w}/s_alias_bomb.yaml"), "aliases expand"),
    ("alias-loop-profile", _run_with("--hw", "{w}/p_alias_loop.yaml"), "refers to a collection"),
    ("yaml-python-tag", _run_with("--space", "{w}/s_python_tag.yaml"), "constructor for the tag"),
    ("yaml-unhashable-key", _run_with("--space", "{w}/s_unhashable_key.yaml"), "unhashable key"),
    ("yaml-tab-indent", _run_with("--space", "{w}/s_tab_indent.yaml"), "not valid YAML at line"),
    # binary, not UTF-8, not a regular file, too large
    ("binary-space-latin1", _run_with("--space", "{w}/s_latin1.yaml"), "not a text file"),
    ("binary-space-nul", _run_with("--space", "{w}/s_nul.yaml"), "#x0000"),
    ("binary-profile-utf16", _run_with("--hw", "{w}/p_utf16.yaml"), "not a text file"),
    ("binary-space-png", _run_with("--space", "{w}/s_png.yaml"), "not a text file"),
    ("binary-profile-bell", _run_with("--hw", "{w}/p_control_char.yaml"), "#x0007"),
    ("space-is-dev-zero", _run_with("--space", "/dev/zero"), "not a regular file"),
    ("space-is-a-folder", _run_with("--space", "{w}/empty/"), "is a folder"),
    ("profile-is-a-folder", _run_with("--hw", "{w}/empty/"), "is a folder"),
    ("space-symlink-loop", _run_with("--space", "{w}/loop"), "symbolic links"),
    ("space-too-large", _run_with("--space", "{w}/s_huge.yaml"), "too large"),
    # --out against the study's own folders, links and files
    ("out-own-artifacts", [*EXPORT, "--out", "{w}/studies/s/artifacts/1"], "artifacts folder"),
    ("out-inside-artifacts", [*EXPORT, "--out", "{w}/studies/s/artifacts/1/x"], "lies inside"),
    ("out-artifacts-root", [*EXPORT, "--out", "{w}/studies/s/artifacts"], "is the study's"),
    ("out-study-folder", [*EXPORT, "--out", "{w}/studies/s"], "is the study's folder"),
    ("out-holds-study", [*EXPORT, "--out", "{w}/studies"], "holds the study's folder"),
    ("out-link-to-trial", [*EXPORT, "--out", "{w}/link_to_trial"], "lies inside"),
    ("out-symlink-loop", [*EXPORT, "--out", "{w}/loop"], "too many levels of symbolic links"),
    ("out-under-loop", [*EXPORT, "--out", "{w}/loop/x"], "too many levels of symbolic links"),
    ("out-dangling-link", [*EXPORT, "--out", "{w}/dangling"], "does not exist"),
    ("out-dev-null", [*EXPORT, "--out", "/dev/null"], "is a file"),
    ("out-under-a-file", [*EXPORT, "--out", "{w}/a_file/sub"], "not a directory"),
    # --storage: refused, and nothing created
    ("storage-in-memory", _run_with("--storage", "sqlite://"), "in-memory"),
    ("storage-not-a-db", _run_with("--storage", "sqlite:///{w}/not_a_db.db"), "not a SQLite"),
    ("storage-a-folder", _run_with("--storage", "sqlite:///{w}/empty"), "is a folder"),
    (
        "storage-server-down",
        _run_with("--storage", "postgresql://u:secret@127.0.0.1:1/db"),
        "cannot open storage postgresql://u:***@127.0.0.1:1/db",
    ),
    ("storage-bad-scheme", _run_with("--storage", "nosuchdb://x/y"), "cannot open storage"),
    (
        "report-storage-missing-file",
        ["report", "--study", "x", "--storage", "sqlite:///{w}/none.db"],
        "does not exist",
    ),
    (
        "report-storage-empty-file",
        ["report", "--study", "x", "--storage", "sqlite:///{w}/empty.db"],
        "is empty",
    ),
    (
        "report-storage-not-a-db",
        ["report", "--study", "x", "--storage", "sqlite:///{w}/not_a_db.db"],
        "not a SQLite database",
    ),
    (
        "report-storage-no-folder",
        ["report", "--study", "x", "--storage", "sqlite:///{w}/nope/x.db"],
        "does not exist",
    ),
    (
        "report-storage-memory",
        ["report", "--study", "x", "--storage", "sqlite://"],
        "in-memory",
    ),
    (
        "export-storage-missing-file",
        [
            "export",
            "--study",
            "x",
            "--storage",
            "sqlite:///{w}/none.db",
            "--trial",
            "0",
            "--out",
            "{w}/o",
        ],  # fmt: skip
        "does not exist",
    ),
    # out-of-range numbers
    ("workers-zero", _run_with("--workers", "0"), "argument --workers: must be at least 1"),
    ("workers-huge", _run_with("--workers", "100000"), "argument --workers: must be at most"),
    ("threads-zero", _run_with("--threads", "0"), "argument --threads: must be at least 1"),
    ("threads-huge", _run_with("--threads", "100000"), "argument --threads: must be at most"),
    ("heartbeat-low", _run_with("--heartbeat", "1"), "argument --heartbeat: must be at least"),
    ("heartbeat-huge", _run_with("--heartbeat", "100000"), "--heartbeat: must be at most"),
    ("grace-low", _run_with("--grace", "15"), "argument --grace: must be at least"),
    ("grace-huge", _run_with("--grace", "100000000"), "argument --grace: must be at most"),
    (
        "grace-under-3-beats",
        [*_run_with("--heartbeat", "20"), "--grace", "40"],
        "--grace must lie in [60,",
    ),
    ("image-size-zero", _run_with("--image-size", "0"), "argument --image-size"),
    ("image-size-huge", _run_with("--image-size", "100000"), "must be at most 8192"),
    ("trials-float", _run_with("--trials", "1e3"), "argument --trials: must be a whole"),
    ("trials-digits", _run_with("--trials", "9" * 5000), "argument --trials"),
    ("export-trial-float", ["export", *STUDY, "--out", "{w}/o", "--trial", "1.0"], "--trial"),
    # --workers 2: every input checked before any worker starts, said once
    ("workers2-bad-task", [*W2[:2], "nope_mod:make", *W2[3:]], "cannot import module"),
    ("workers2-bad-space", [*W2, "--space", "{w}/s_dup_top.yaml"], "is given"),
    ("workers2-bad-profile", [*W2, "--hw", "{w}/p_binary.yaml"], "not a text file"),
    ("workers2-bad-storage", [*W2, "--storage", "sqlite:///{w}/not_a_db.db"], "not a SQLite"),
    ("workers2-storage-down", [*W2, "--storage", "postgresql://u:p@127.0.0.1:1/d"], "storage"),
    ("workers2-results-file", [*W2[:-3], "{w}/a_file/res", *W2[-2:]], "is a file"),
    ("workers2-bad-study", [*W2, "--study", "../x"], "not a study name"),
    ("workers2-bad-device", [*W2, "--train-device", "cuda:7"], "--train-device cuda:7"),
    ("workers2-bad-agent", [*W2, "--agent", "ftp://x"], "--agent must be an http"),
]
