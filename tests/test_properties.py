"""Property tests: any containers.conf round-trips, any OCI state is safe."""

import json
import os
import tempfile
from pathlib import Path

import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CID, STAND_IN, Terok, kill_processes_mentioning

from terok_install import install_supervisor_hooks, uninstall_supervisor_hooks

DEFAULT = "/usr/share/containers/oci/hooks.d"

folders = st.from_regex(r"/[a-z0-9_.-]{1,12}(/[a-z0-9_.-]{1,8}){0,2}",
                        fullmatch=True)
comments = st.from_regex(r"# [ -~]{0,30}", fullmatch=True)
scalars = st.one_of(st.integers(-99, 99).map(str), st.booleans().map(
    lambda b: str(b).lower()), st.from_regex(r'"[a-z /.]{0,10}"',
                                             fullmatch=True))
keys = st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True)


@st.composite
def hooks_dir_lines(draw):
    dirs = draw(st.lists(folders, max_size=3))
    quoted = ['"%s"' % d for d in dirs]
    if draw(st.booleans()):
        body = "[%s]" % ", ".join(quoted)
    else:
        body = "[\n%s\n]" % "".join("  %s,\n" % q for q in quoted)
    return "hooks_dir = %s" % body


@st.composite
def tables(draw, name):
    lines = ["[%s]" % name]
    used = set()
    for _ in range(draw(st.integers(0, 3))):
        key = draw(keys.filter(lambda k: k not in used and k != "hooks_dir"))
        used.add(key)
        comment = draw(st.one_of(st.just(""), comments.map(lambda c: "  " + c)))
        lines.append("%s = %s%s" % (key, draw(scalars), comment))
    if name == "engine" and draw(st.booleans()):
        lines.insert(draw(st.integers(1, len(lines))), draw(hooks_dir_lines()))
    return lines


@st.composite
def containers_confs(draw):
    lines = draw(st.lists(comments, max_size=2))
    names = draw(st.lists(st.sampled_from(
        ["containers", "engine", "network", "machine"]), unique=True))
    for name in names:
        if draw(st.booleans()):
            lines.append("")
        lines += draw(tables(name))
    text = "\n".join(lines)
    if text and draw(st.booleans()):
        text += "\n"
    return text


def hermetic_env(folder):
    t = Terok(folder)
    return t, dict(t.env, PATH="/usr/bin:/bin")


def test_any_conf_round_trips_and_keeps_what_was_in_effect(counts):
    tried = []

    @settings(max_examples=120, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(text=containers_confs())
    def check(text):
        tried.append(text)
        with tempfile.TemporaryDirectory() as folder:
            round_trip(Path(folder), text)

    check()
    counts.append("property: %d containers.conf files round-tripped byte "
                  "for byte" % len(tried))


def round_trip(folder, text):
    t, env = hermetic_env(folder)
    t.conf.parent.mkdir(parents=True)
    t.conf.write_text(text)
    before = tomlkit.parse(text).get("engine", {}).get("hooks_dir")
    in_effect = list(before) if before is not None else [DEFAULT]
    install_supervisor_hooks(sandbox_bin=str(STAND_IN), env=env)
    after = tomlkit.parse(t.conf.read_text())["engine"]["hooks_dir"]
    ours = str(t.hooks_dir)
    assert list(after) == in_effect + [ours]
    uninstall_supervisor_hooks(env=env)
    assert t.conf.read_text() == text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@st.composite
def oci_states(draw, sidecar):
    kind = draw(st.sampled_from(["random", "mutated", "truncated", "bytes",
                                 "huge"]))
    valid = {"ociVersion": "1.0.2", "id": CID, "pid": os.getpid(),
             "status": "creating",
             "annotations": {"terok.sandbox.sidecar": sidecar}}
    if kind == "random":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "huge":
        valid["annotations"]["terok.sandbox.sidecar"] = "/" + "a" * 300000
        return json.dumps(valid).encode()
    if kind == "truncated":
        data = json.dumps(valid).encode()
        return data[:draw(st.integers(0, len(data) - 1))]
    key = draw(st.sampled_from(["id", "pid", "annotations", "status"]))
    valid[key] = draw(json_values)
    return json.dumps(valid).encode()


def test_fuzzed_oci_states_always_exit_zero(tmp_path, counts):
    t = Terok(tmp_path)
    t.install()
    sidecar = str(t.sidecar())
    tried = {"n": 0, "spawned": 0}

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(stdin=oci_states(sidecar))
    def check(stdin):
        tried["n"] += 1
        for stage in ("createRuntime", "poststop"):
            proc = t.run_hook(stage, stdin)
            assert proc.returncode == 0
            assert b"Traceback" not in proc.stderr
            if stage == "createRuntime" and t.pid_file().exists():
                tried["spawned"] += 1
                state = json.loads(stdin)
                assert state["id"] == CID
                assert state["annotations"][
                    "terok.sandbox.sidecar"] == sidecar
        assert not t.pid_file().exists()

    try:
        check()
    finally:
        kill_processes_mentioning(tmp_path)
    counts.append("fuzz: %d OCI states through both stages, %d valid ones "
                  "spawned, 0 non-zero exits" % (tried["n"], tried["spawned"]))
