"""Which engine builds setup.py makes and where the wheel holds them (KERAS_SWIFT_HWCAPS).

No Swift is compiled: a stand-in ``swift`` (KERAS_SWIFT_SWIFT) records the
``-march`` each build asks for and puts the installed engine where SwiftPM
would, and ``pip wheel --no-build-isolation`` packs a copy of the source tree
as ``pip install .`` and scripts/build_wheel.sh do (compiling the extension).
"""

import os
import platform
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

C = pytest.importorskip("_swiftkeras")
pytest.importorskip("setuptools")
try:  # pip wheel --no-build-isolation needs bdist_wheel: setuptools 70.1+, or `wheel`
    import setuptools.command.bdist_wheel  # noqa: F401
except ImportError:
    pytest.importorskip("wheel")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
X86_64 = platform.machine() in ("x86_64", "AMD64")

FAKE_SWIFT = textwrap.dedent(
    """\
    import os, shutil, sys
    args = sys.argv[1:]
    if args[:1] == ["--version"]:
        print("Swift version 0.0 (stand-in for test_packaging.py)")
        sys.exit(0)
    scratch = args[args.index("--scratch-path") + 1]
    bin_dir = os.path.join(scratch, "release")
    if "--show-bin-path" in args:
        print(bin_dir)
    elif args[0] == "build":
        march = next((a for a in args if a.startswith("-march=")), "baseline")
        with open(os.environ["FAKE_SWIFT_LOG"], "a") as f:
            f.write(march.replace("-march=", "") + "\\n")
        os.makedirs(bin_dir, exist_ok=True)
        shutil.copyfile(os.environ["FAKE_SWIFT_ENGINE"],
                        os.path.join(bin_dir, "libTensorEngineC.so"))
    """
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A copy of what setup.py reads, so the build's files stay out of the checkout."""
    root = tmp_path_factory.mktemp("src")
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(os.path.join(REPO, name), root)
    shutil.copytree(os.path.join(REPO, "python"), root / "python",
                    ignore=shutil.ignore_patterns("tests", "__pycache__", "*.so", "_build.py",
                                                  "*.egg-info", "glibc-hwcaps"))
    shutil.copytree(os.path.join(REPO, "Sources", "TensorEngineC", "include"),
                    root / "Sources" / "TensorEngineC" / "include")
    swift = root / "fake-swift"
    swift.write_text(f"#!{sys.executable}\n" + FAKE_SWIFT)
    swift.chmod(0o755)
    return root


def _wheel(tree, tmp_path, hwcaps):
    log = tmp_path / "builds.log"
    env = dict(os.environ, KERAS_SWIFT_SWIFT=str(tree / "fake-swift"),
               KERAS_SWIFT_SCRATCH_PATH=str(tmp_path / "scratch"),
               FAKE_SWIFT_LOG=str(log), FAKE_SWIFT_ENGINE=C.engine_library())
    env.pop("KERAS_SWIFT_ENGINE_LIB", None)
    if hwcaps is None:
        env.pop("KERAS_SWIFT_HWCAPS", None)
    else:
        env["KERAS_SWIFT_HWCAPS"] = hwcaps
    shutil.rmtree(tree / "build", ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(tree)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    builds = sorted(log.read_text().split()) if log.exists() else []
    if proc.returncode != 0:
        return proc, builds, None, None
    (whl,) = (tmp_path / "dist").glob("keras_swift-*.whl")
    with zipfile.ZipFile(whl) as z:
        engines = sorted(n for n in z.namelist() if n.endswith("libTensorEngineC.so"))
        ns = {}
        exec(z.read("_swiftkeras/_build.py").decode(), ns)
    return proc, builds, engines, ns


def _host_level():
    from _swiftkeras import _cpu

    return _cpu.host_level(("x86-64-v3",), _cpu.cpu_flags())


@pytest.mark.skipif(not X86_64, reason="the variants are x86-64 levels")
def test_default_builds_one_engine_for_this_cpu(tree, tmp_path):
    proc, builds, engines, build = _wheel(tree, tmp_path, None)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    level = _host_level()
    assert builds == [level or "baseline"]
    assert engines == ["_swiftkeras/libTensorEngineC.so"]
    assert build["LEVEL"] == level


@pytest.mark.skipif(not X86_64, reason="the variants are x86-64 levels")
def test_distributable_wheel_holds_baseline_and_v3(tree, tmp_path):
    proc, builds, engines, build = _wheel(tree, tmp_path, "x86-64-v3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert builds == ["baseline", "x86-64-v3"]
    assert engines == ["_swiftkeras/glibc-hwcaps/x86-64-v3/libTensorEngineC.so",
                       "_swiftkeras/libTensorEngineC.so"]
    assert build["LEVEL"] is None
    assert build["BUILD"]["variants"] == "baseline, x86-64-v3"


def test_unknown_level_is_refused(tree, tmp_path):
    if not X86_64:
        pytest.skip("the setting is read on x86-64 only")
    proc, builds, _, _ = _wheel(tree, tmp_path, "x86-64-v9")
    assert proc.returncode != 0
    assert "KERAS_SWIFT_HWCAPS" in proc.stdout + proc.stderr and "x86-64-v9" in proc.stdout + proc.stderr
    assert builds == []
