#!/usr/bin/env python3
"""Run Keras's own test files against one or more backends and tabulate.

    python python/tests/conformance/run.py --backend swift --backend jax \\
        keras/src/ops keras/src/backend/common -j 2 --markdown ops.md --json ops.json

The installed Keras wheel ships its ``*_test.py`` files under
``site-packages/keras/src``. Targets are directories or files given as
``keras/src/ops``, ``ops`` (relative to keras/src), or any existing path;
``file.py::Class::test`` node ids work too. With no target, all of keras/src
is run. ``keras/src/backend/{jax,torch,tensorflow,numpy,openvino}`` (tests of
other backends' internals) are always skipped; ``--ignore`` skips more.

Each test file runs in its own ``python -m pytest`` subprocess per backend,
with ``KERAS_BACKEND`` set, a private ``KERAS_HOME``, ``PYTHONDONTWRITEBYTECODE=1``,
``-p no:cacheprovider`` and ``-p keras_swift.testing.pytest_plugin`` (markers,
exclusion list, the swift import hook), and its working directory at the
directory holding ``keras/`` so node ids read ``keras/src/...``. A file whose
process dies or exceeds ``--timeout`` is reported as crashed / timeout and
the run goes on. A file whose collection fails only because a framework is
not installed (tensorflow, torch, grain, ...) is reported as
"not collected (missing X)", not as a failure.

Results come from pytest's junit XML and are printed as one row per test
directory with passed / failed / skipped / errors for each backend side by
side, plus totals and wall times; ``--markdown`` and ``--json`` write the same
table (the JSON also lists every failing node id per file, handy for
building ``keras_swift/excluded_tests.txt``).

Exit status: 0 when no test failed or errored and no file crashed or timed
out on any backend; 1 otherwise; 2 for bad arguments.
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO_PYTHON_DIR = Path(__file__).resolve().parents[2]
PLUGIN = "keras_swift.testing.pytest_plugin"
OTHER_BACKEND_DIRS = ("jax", "torch", "tensorflow", "numpy", "openvino")
# A missing top-level module with one of these names is our bug, not a
# framework that is merely not installed.
OWN_MODULES = {"keras", "keras_swift", "keras_swift_hook", "_swiftkeras", "conftest"}
MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")
COUNT_KEYS = ("passed", "failed", "skipped", "errors")


# --------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------


def keras_root(python):
    """The directory holding the ``keras`` package that ``python`` imports."""
    code = (
        "import importlib.util, os;"
        "print(os.path.dirname(os.path.dirname(importlib.util.find_spec('keras').origin)))"
    )
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, env=_base_env(), check=False
    )
    if out.returncode != 0:
        sys.exit(f"cannot locate keras for {python}:\n{out.stderr}")
    return Path(out.stdout.strip())


def resolve_targets(targets, root, ignores):
    """``[(file Path, [node-id suffixes])]`` for the given targets."""
    src = root / "keras" / "src"
    ignored = [src / "backend" / name for name in OTHER_BACKEND_DIRS]
    for ignore in ignores:
        path = _locate(ignore, root, src)
        if path is None:
            sys.exit(f"--ignore {ignore}: no such file or directory")
        ignored.append(path)

    def is_ignored(path):
        return any(path == i or i in path.parents for i in ignored)

    selected = {}
    for target in targets or ["keras/src"]:
        target, _, node = target.partition("::")
        path = _locate(target, root, src)
        if path is None:
            sys.exit(f"{target}: not found (tried it as a path, under {root}, under {src})")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*_test.py") if "__pycache__" not in p.parts)
        else:
            files = [path]
        for file in files:
            if is_ignored(file):
                continue
            if not node:
                selected[file] = None  # the whole file wins over node ids
            elif file not in selected:
                selected[file] = [node]
            elif selected[file] is not None:
                selected[file].append(node)
    return [(file, nodes or []) for file, nodes in selected.items()]


def _locate(target, root, src):
    for candidate in (Path(target), root / target, src / target):
        if candidate.exists():
            # abspath, not resolve(): keep the same spelling as `root`.
            return Path(os.path.abspath(candidate))
    return None


# --------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------


def _base_env():
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Runner:
    def __init__(self, args, root, workdir):
        self.args = args
        self.root = root
        self.workdir = workdir
        self.ini = workdir / "pytest.ini"
        # An empty ini stops pytest from adopting some ancestor's config.
        self.ini.write_text("[pytest]\n")
        self.pythonpath = self._plugin_pythonpath()
        self.lock = threading.Lock()
        self.done = 0

    def env(self, backend):
        env = _base_env()
        env["KERAS_BACKEND"] = backend
        home = self.workdir / f"keras_home_{backend}"
        if not home.exists():
            home.mkdir()
            config = {
                "floatx": "float32",
                "epsilon": 1e-07,
                "backend": backend,
                "image_data_format": "channels_last",
            }
            (home / "keras.json").write_text(json.dumps(config))
        env["KERAS_HOME"] = str(home)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(
                [self.pythonpath] + [p for p in [env.get("PYTHONPATH")] if p]
            )
        return env

    def _plugin_pythonpath(self):
        """Extra PYTHONPATH entry needed to import the plugin, if any.

        An installed keras-swift is used as is; otherwise (or with --source)
        the checkout's python/ directory supplies the plugin, the hook and
        the backend package.
        """
        if self.args.source:
            return str(REPO_PYTHON_DIR)
        probe = [self.args.python, "-c", f"import {PLUGIN}"]
        if subprocess.run(probe, capture_output=True, env=_base_env()).returncode == 0:
            return None
        env = _base_env()
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_PYTHON_DIR)] + [p for p in [env.get("PYTHONPATH")] if p]
        )
        if subprocess.run(probe, capture_output=True, env=env).returncode == 0:
            print(f"note: using {PLUGIN} from {REPO_PYTHON_DIR}", file=sys.stderr)
            return str(REPO_PYTHON_DIR)
        sys.exit(f"cannot import {PLUGIN}, installed or from {REPO_PYTHON_DIR}")

    def preflight(self, backend):
        """``None`` if ``import keras`` works on ``backend``, else why not."""
        # The plugin installs keras_swift_hook inside pytest; do the same here
        # for interpreters where no .pth file does it.
        code = (
            "try:\n    import keras_swift_hook\nexcept ImportError:\n    pass\n"
            "import keras\nprint(keras.backend.backend())"
        )
        try:
            out = subprocess.run(
                [self.args.python, "-c", code],
                capture_output=True,
                text=True,
                env=self.env(backend),
                cwd=self.root,
                timeout=max(self.args.timeout, 60),
            )
        except subprocess.TimeoutExpired:
            return "import keras timed out"
        if out.returncode == 0 and out.stdout.strip().endswith(backend):
            return None
        lines = [l for l in (out.stderr or out.stdout).strip().splitlines() if l.strip()]
        return lines[-1] if lines else f"import keras exited with {out.returncode}"

    def command(self, file, nodes, xml):
        rel = file.relative_to(self.root) if self.root in file.parents else file
        targets = [f"{rel}::{n}" for n in nodes] or [str(rel)]
        return [
            self.args.python,
            "-m",
            "pytest",
            "-p",
            PLUGIN,
            "-p",
            "no:cacheprovider",
            "-c",
            str(self.ini),
            "--rootdir",
            str(self.root),
            "-q",
            "--junitxml",
            str(xml),
            "-o",
            "junit_family=xunit2",
            *self.args.pytest_arg,
            *targets,
        ]

    def run_file(self, backend, file, nodes, total):
        key = _relkey(file, self.root)
        stem = re.sub(r"[^\w.-]", "_", key)
        xml = self.workdir / "xml" / backend / f"{stem}.xml"
        log = self.workdir / "logs" / backend / f"{stem}.log"
        xml.parent.mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command(file, nodes, xml)
        start = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=self.root,
                env=self.env(backend),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so a timeout kills its children too
            )
            try:
                returncode = proc.wait(timeout=self.args.timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                returncode = proc.wait()
                timed_out = True
        elapsed = time.monotonic() - start
        result = classify(file, self.root, xml, log, returncode, timed_out)
        result["time"] = round(elapsed, 2)
        result["command"] = " ".join(cmd)
        with self.lock:
            self.done += 1
            counts = " ".join(f"{result[k]} {k}" for k in COUNT_KEYS if result[k])
            status = "" if result["status"] == "ok" else f"  [{result['status']}]"
            print(
                f"[{self.done}/{total}] {backend:<10} {key}  {counts or 'no tests'}"
                f"{status}  ({elapsed:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
        return backend, key, result


def _relkey(file, root):
    src = root / "keras" / "src"
    return str(file.relative_to(src)) if src in file.parents else str(file)


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------


def classify(file, root, xml, log, returncode, timed_out):
    result = {k: 0 for k in COUNT_KEYS}
    result.update(status="ok", returncode=returncode, failures=[], log=str(log))
    tail = _tail(log)
    if timed_out:
        result["status"] = "timeout"
        result["tail"] = tail
        return result
    if returncode < 0:
        result["status"] = f"crashed (signal {-returncode})"
        result["tail"] = tail
        return result
    if not xml.exists():
        result["status"] = f"crashed (exit {returncode}, no junit report)"
        result["tail"] = tail
        return result
    try:
        cases = ET.parse(xml).getroot().iter("testcase")
        cases = list(cases)
    except ET.ParseError as e:
        result["status"] = f"crashed (unreadable junit report: {e})"
        result["tail"] = tail
        return result

    module = ".".join(file.relative_to(root).with_suffix("").parts) if root in file.parents else ""
    collection_errors = []
    for case in cases:
        children = {child.tag: child for child in case}
        if not case.get("classname") and "error" in children:
            collection_errors.append(children["error"])
            continue
        if "skipped" in children:
            result["skipped"] += 1
        elif "failure" in children or "error" in children:
            result["failed" if "failure" in children else "errors"] += 1
            result["failures"].append(_node_id(case, module, file, root))
            # Still a failure, but worth telling apart from backend bugs.
            bad = children.get("failure", children.get("error"))
            missing = MISSING_MODULE.findall((bad.get("message") or "") + (bad.text or ""))
            top = missing[-1].split(".")[0] if missing else None
            if top and top not in OWN_MODULES:
                needs = result.setdefault("failures_missing", {})
                needs[top] = needs.get(top, 0) + 1
        else:
            result["passed"] += 1

    if collection_errors:
        text = "\n".join(f"{e.get('message') or ''}\n{e.text or ''}" for e in collection_errors)
        missing = MISSING_MODULE.findall(text)
        top = missing[-1].split(".")[0] if missing else None
        if top and top not in OWN_MODULES and not any(
            result[k] for k in ("passed", "failed", "errors")
        ):
            result["status"] = f"not collected (missing {top})"
        else:
            result["status"] = "collection error"
            result["errors"] += len(collection_errors)
            result["tail"] = text.strip().splitlines()[-1:] if text.strip() else tail
    elif returncode not in (0, 1, 5):
        # 2: interrupted, 3: internal error, 4: usage error.
        result["status"] = f"crashed (pytest exit {returncode})"
        result["tail"] = tail
    return result


def _node_id(case, module, file, root):
    classname = case.get("classname", "")
    if module and classname.startswith(module):
        classname = classname[len(module) :].lstrip(".")
    rel = file.relative_to(root) if root in file.parents else file
    parts = [str(rel)] + [p for p in classname.split(".") if p] + [case.get("name", "")]
    return "::".join(parts)


def _tail(log, lines=15):
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return []
    return text.strip().splitlines()[-lines:]


def group_key(key, depth):
    parts = Path(key).parent.parts
    if depth:
        parts = parts[:depth]
    return "/".join(parts) or "."


def summarise(results, backends, depth):
    """``{group: {backend: counts}}`` plus per-backend totals."""
    groups = {}
    totals = {b: _empty_counts() for b in backends}
    for backend in backends:
        for key, res in results[backend].items():
            row = groups.setdefault(group_key(key, depth), {b: _empty_counts() for b in backends})
            for counts in (row[backend], totals[backend]):
                counts["files"] += 1
                for k in COUNT_KEYS:
                    counts[k] += res[k]
                counts["time"] += res["time"]
                problems = counts["problems"]
                if res["status"] != "ok":
                    problems[res["status"]] = problems.get(res["status"], 0) + 1
                for name, n in res.get("failures_missing", {}).items():
                    label = f"failures needing {name}"
                    problems[label] = problems.get(label, 0) + n
    return dict(sorted(groups.items())), totals


def _empty_counts():
    return {"files": 0, "time": 0.0, "problems": {}, **{k: 0 for k in COUNT_KEYS}}


def _problem_text(problems):
    return ", ".join(f"{n} {status}" for status, n in sorted(problems.items()))


def render_table(groups, totals, backends, markdown=False):
    header = ["directory", "files"]
    for b in backends:
        header += [f"{b} pass", "fail", "skip", "err"]
    header.append("notes")
    rows = []
    for name, row in list(groups.items()) + [("TOTAL", totals)]:
        files = max(row[b]["files"] for b in backends)
        line = [name, str(files)]
        notes = []
        for b in backends:
            c = row[b]
            line += [str(c["passed"]), str(c["failed"]), str(c["skipped"]), str(c["errors"])]
            if c["problems"]:
                prefix = f"{b}: " if len(backends) > 1 else ""
                notes.append(prefix + _problem_text(c["problems"]))
        line.append("; ".join(notes))
        rows.append(line)
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join(
            ["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|"]
        for line in rows:
            cells = [f"**{c}**" if line[0] == "TOTAL" and c else c for c in line]
            out.append("| " + " | ".join(cells) + " |")
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(  # noqa: E731
        c.ljust(w) if i in (0, len(header) - 1) else c.rjust(w)
        for i, (c, w) in enumerate(zip(r, widths))
    ).rstrip()
    sep = "-" * len(fmt(header))
    return "\n".join([fmt(header), sep] + [fmt(r) for r in rows[:-1]] + [sep, fmt(rows[-1])])


def render_problems(results, backends, markdown=False):
    lines = []
    for b in backends:
        entries = sorted(results[b].items())
        if entries and all(r["status"] == "backend unavailable" for _, r in entries):
            reason = entries[0][1]["reason"]
            lines.append(f"- {b}: backend unavailable: `{reason}`" if markdown
                         else f"  {b:<10} backend unavailable: {reason}")
            continue
        for key, res in entries:
            if res["status"] == "ok":
                continue
            if markdown:
                lines.append(f"- {b}: `{key}`: {res['status']}")
            else:
                lines.append(f"  {b:<10} {key}: {res['status']}")
            if res.get("tail") and not res["status"].startswith("not collected"):
                last = res["tail"][-1] if res["tail"] else ""
                lines.append(f"  - `{last.strip()}`" if markdown else f"      {last.strip()}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  python python/tests/conformance/run.py --backend swift "
        "--backend jax keras/src/ops -j 2",
    )
    parser.add_argument("targets", nargs="*", help="test dirs/files (default: keras/src)")
    parser.add_argument(
        "--backend",
        action="append",
        help="backend to run (repeat for side-by-side columns; default: swift)",
    )
    parser.add_argument("-j", "--jobs", type=int, default=1, help="test files run in parallel")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds per test file (default 1800)"
    )
    parser.add_argument(
        "--allow-missing-frameworks",
        action="store_true",
        help="failures whose error is an import of a framework that is not installed "
        "(reported as 'failures needing X') do not make the exit status non-zero; "
        "they still count as failures in the table",
    )
    parser.add_argument("--ignore", action="append", default=[], help="dir/file to skip")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown here")
    parser.add_argument("--json", type=Path, help="write all results as JSON here")
    parser.add_argument(
        "--group-depth",
        type=int,
        default=0,
        help="group rows by the first N directory levels (default: full directory)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter to test with")
    parser.add_argument(
        "--source",
        action="store_true",
        help="put this checkout's python/ first on PYTHONPATH even if keras-swift is installed",
    )
    parser.add_argument(
        "--pytest-arg",
        action="append",
        default=[],
        help="extra pytest argument, e.g. --pytest-arg=-k --pytest-arg=dtype (repeatable)",
    )
    parser.add_argument("--keep", type=Path, help="keep junit XML and logs in this directory")
    parser.add_argument("--list", action="store_true", help="only list the test files")
    args = parser.parse_args(argv)
    args.backend = args.backend or ["swift"]
    if len(set(args.backend)) != len(args.backend):
        parser.error("each --backend may be given once")
    if args.jobs < 1:
        parser.error("-j must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    root = keras_root(args.python)
    files = resolve_targets(args.targets, root, args.ignore)
    if args.list:
        for file, nodes in files:
            print(_relkey(file, root) + "".join(f"::{n}" for n in nodes))
        return 0
    if not files:
        sys.exit("no test files selected")

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        workdir = Path(args.keep).resolve()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="keras_conformance_"))
    runner = Runner(args, root, workdir)
    started = time.monotonic()
    try:
        results = {b: {} for b in args.backend}
        unavailable = {}
        for backend in args.backend:
            reason = runner.preflight(backend)
            if reason is not None:
                unavailable[backend] = reason
                print(f"{backend}: backend unavailable: {reason}", file=sys.stderr)

        # Largest files first so parallel workers finish together.
        jobs = [
            (b, f, n)
            for f, n in sorted(files, key=lambda fn: -fn[0].stat().st_size)
            for b in args.backend
            if b not in unavailable
        ]
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(runner.run_file, b, f, n, len(jobs)) for b, f, n in jobs]
            for future in concurrent.futures.as_completed(futures):
                backend, key, result = future.result()
                results[backend][key] = result
        for backend, reason in unavailable.items():
            for file, _ in files:
                results[backend][_relkey(file, root)] = {
                    **{k: 0 for k in COUNT_KEYS},
                    "status": "backend unavailable",
                    "reason": reason,
                    "time": 0.0,
                    "failures": [],
                }
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = time.monotonic() - started

    groups, totals = summarise(results, args.backend, args.group_depth)
    table = render_table(groups, totals, args.backend)
    problems = render_problems(results, args.backend)
    timing = ", ".join(f"{b} {totals[b]['time']:.0f}s in test processes" for b in args.backend)
    print()
    print(table)
    if problems:
        print("\nfiles not run to completion:\n" + problems)
    print(f"\nwall time {wall:.0f}s with -j {args.jobs} ({timing}); keras at {root}")

    if args.markdown:
        md = [render_table(groups, totals, args.backend, markdown=True)]
        if problems:
            md.append(
                "Files not run to completion:\n\n"
                + render_problems(results, args.backend, markdown=True)
            )
        md.append(f"Wall time {wall:.0f}s with `-j {args.jobs}` ({timing}).")
        args.markdown.write_text("\n\n".join(md) + "\n")
    if args.json:
        payload = {
            "keras_root": str(root),
            "backends": args.backend,
            "targets": args.targets or ["keras/src"],
            "jobs": args.jobs,
            "wall_time": round(wall, 1),
            "totals": totals,
            "groups": groups,
            "files": results,
        }
        args.json.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")

    def failing(res):
        n = res["failed"] + res["errors"]
        if args.allow_missing_frameworks:
            n -= sum(res.get("failures_missing", {}).values())
        return n > 0

    bad = any(
        failing(res) or res["status"].startswith(("crashed", "timeout"))
        for b in args.backend
        for res in results[b].values()
    )
    # The conventional closing line, one per backend, for CI log readers.
    for b in args.backend:
        t = totals[b]
        print(f"{b}: {t['passed']} passed, {t['failed'] + t['errors']} failed, {t['skipped']} skipped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
