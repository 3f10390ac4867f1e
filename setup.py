"""Build keras-swift: the Swift engine, its CPython binding and the Python packages.

``pip install .`` and ``pip wheel .`` run, in this order:

* ``build_py`` copies the pure-Python code under ``python/`` (``_swiftkeras``,
  ``keras_swift`` and its subpackages, the ``keras_swift_hook`` module) and puts
  ``keras_swift_hook.pth`` at the root of the build tree, so that it lands in
  site-packages itself, where the interpreter reads ``.pth`` files.
* ``build_ext``
    1. ``swift build -c release --product TensorEngineC`` with the Swift
       standard library linked statically and only the ``te_*`` C ABI exported,
       so the wheel runs without a Swift toolchain and cannot clash with another
       Swift runtime loaded into the same process;
    2. on x86-64, for which CPUs depends on ``KERAS_SWIFT_HWCAPS``: by
       default (``host``) one build for the best level this CPU runs
       (x86-64-v3: AVX2, FMA, BMI2, where it has them; the baseline
       otherwise), which is what a source install needs; for a wheel
       to distribute (``KERAS_SWIFT_HWCAPS=x86-64-v3``, what
       ``scripts/build_wheel.sh`` sets) the baseline plus an x86-64-v3 build,
       side by side, which glibc's loader picks on its own on a CPU that has
       them: the copy in ``_swiftkeras/glibc-hwcaps/x86-64-v3/`` shadows the
       baseline one in ``_swiftkeras/`` (glibc 2.33 or newer; an older loader
       ignores it);
    3. copies (and strips) each ``libTensorEngineC.so`` into place;
    4. compiles the extension ``_swiftkeras._C`` (the C files in
       ``python/_swiftkeras/src/``) against ``Sources/TensorEngineC/include``,
       linked to that copy with an ``$ORIGIN`` rpath so the pair works from
       wherever it is installed.

The library still links the system OpenBLAS (``libopenblas.so.0``) dynamically.

Environment variables:

``KERAS_SWIFT_SWIFT``
    The ``swift`` executable (default: ``swift`` on ``PATH``, then
    ``/opt/swift/usr/bin/swift``).
``SWIFT_BUILD_JOBS``
    Parallel jobs for ``swift build`` (its ``-j``).
``KERAS_SWIFT_SCRATCH_PATH``
    SwiftPM scratch directory (default: ``build/swift`` in the source tree; kept
    apart from ``.build`` so a packaging build never relinks a developer's
    ``swift build`` products with other flags).
``KERAS_SWIFT_ENGINE_LIB``
    Path of a prebuilt ``libTensorEngineC.so`` to ship instead of running
    ``swift build`` (alone: no x86-64-v3 variant is built with it).
``KERAS_SWIFT_HWCAPS``
    Which engine builds to make on x86-64 (ignored elsewhere: baseline only).
    ``host`` (the default): one build, for the highest of ``HOST_LEVELS``
    this CPU has (``/proc/cpuinfo``), in ``_swiftkeras/`` itself; the
    package then runs on CPUs of that level only (``_swiftkeras`` refuses to
    load elsewhere, naming the missing features). A comma-separated list of
    levels (``x86-64-v3``): the baseline plus one build per level in
    ``_swiftkeras/glibc-hwcaps/<level>/``, for a wheel that runs on any
    x86-64 CPU (one more whole engine build and ~14 MB per level). Empty:
    the baseline alone.
``KERAS_SWIFT_NO_STRIP=1``
    Ship the library and the extension with their symbol tables (for
    debugging; about 2.5x larger).
"""

import os
import platform
import shutil
import subprocess
import sys

from setuptools import Extension
from setuptools import find_packages
from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import ExecError
from setuptools.errors import PlatformError

ROOT = os.path.dirname(os.path.abspath(__file__))
PY_DIR = "python"
ENGINE_PRODUCT = "TensorEngineC"
ENGINE_LIB = "libTensorEngineC.so"
ENGINE_HEADER_DIR = os.path.join("Sources", "TensorEngineC", "include")
HOOK_MODULE = "keras_swift_hook"
HOOK_PTH = "keras_swift_hook.pth"
# glibc-hwcaps subdirectory names the loader knows on x86-64, in its order.
X86_64_LEVELS = ("x86-64-v2", "x86-64-v3", "x86-64-v4")
# What KERAS_SWIFT_HWCAPS=host may pick, lowest first. v3 (AVX2 and FMA)
# covers x86-64 CPUs since Haswell and Zen and is the level the engine's
# kernels are tested at besides the baseline (python/tests/test_hwcaps.py).
HOST_LEVELS = ("x86-64-v3",)
DEFAULT_HWCAPS = "host"

# Only the C ABI leaves the library. Everything else (TensorEngine's Swift
# symbols and the statically linked Swift runtime) stays local.
VERSION_SCRIPT = "{\n  global: te_*;\n  local: *;\n};\n"


def _log(msg):
    print(f"keras-swift: {msg}", flush=True)


def _find_swift():
    explicit = os.environ.get("KERAS_SWIFT_SWIFT")
    if explicit:
        return explicit
    found = shutil.which("swift")
    if found:
        return found
    fallback = "/opt/swift/usr/bin/swift"
    if os.access(fallback, os.X_OK):
        return fallback
    raise ExecError(
        "keras-swift needs a Swift toolchain (6.0 or newer) to build its "
        "engine: put `swift` on PATH or set KERAS_SWIFT_SWIFT."
    )


def _build_jobs():
    jobs = os.environ.get("SWIFT_BUILD_JOBS", "").strip()
    if not jobs:
        return []
    if not jobs.isdigit() or int(jobs) < 1:
        raise ExecError(f"SWIFT_BUILD_JOBS must be a positive integer, got {jobs!r}")
    return ["-j", jobs]


def _write_if_changed(path, text):
    # SwiftPM relinks when a linker input changes; rewriting an identical file
    # would only churn timestamps.
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(text)


def _load_cpu_module():
    # The package's own CPU-level rules (python/_swiftkeras/_cpu.py), loaded by
    # path: the package is not importable before it is built.
    import importlib.util

    path = os.path.join(ROOT, PY_DIR, "_swiftkeras", "_cpu.py")
    spec = importlib.util.spec_from_file_location("_swiftkeras_cpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _engine_plan():
    """{level the build is compiled for (None: the baseline): its directory
    relative to ``_swiftkeras/``}, from KERAS_SWIFT_HWCAPS."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return {None: ""}
    names = os.environ.get("KERAS_SWIFT_HWCAPS", DEFAULT_HWCAPS).strip()
    if names == "host":
        cpu = _load_cpu_module()
        level = cpu.host_level(HOST_LEVELS, cpu.cpu_flags())
        _log(f"KERAS_SWIFT_HWCAPS=host: one engine, for {level or 'baseline x86-64'}"
             " (this CPU's level; set KERAS_SWIFT_HWCAPS=x86-64-v3 for a wheel that"
             " runs on any x86-64 CPU)")
        return {level: ""}
    variants = [v.strip() for v in names.split(",") if v.strip()]
    for v in variants:
        if v not in X86_64_LEVELS:
            raise ExecError(
                f"KERAS_SWIFT_HWCAPS: {v!r} is not 'host' or one of "
                f"{', '.join(X86_64_LEVELS)}"
            )
    plan = {None: ""}
    for v in variants:
        plan[v] = os.path.join("glibc-hwcaps", v)
    return plan


def _swift_build_args(variant):
    """(swift, common SwiftPM arguments, the build command) for one engine build.

    ``variant`` names an x86-64 micro-architecture level (``x86-64-v3``) to
    compile for, in a scratch directory of its own; None is the baseline.
    """
    swift = _find_swift()
    scratch = os.path.abspath(
        os.environ.get("KERAS_SWIFT_SCRATCH_PATH")
        or os.path.join(ROOT, "build", "swift")
    )
    if variant:
        scratch += "-" + variant
    os.makedirs(scratch, exist_ok=True)
    version_script = os.path.join(scratch, "tensor_engine.map")
    _write_if_changed(version_script, VERSION_SCRIPT)

    common = ["-c", "release", "--package-path", ROOT, "--scratch-path", scratch]
    if variant:
        # swiftc's -target-cpu knows CPU names only; the level goes through
        # the Clang importer, whose target options IRGen compiles for. Swift
        # does not contract a * b + c into an FMA unless the source asks, so
        # both builds compute the same bits (python/tests/test_hwcaps.py).
        common += ["-Xswiftc", "-Xcc", "-Xswiftc", f"-march={variant}"]
    debug_info = []
    if os.environ.get("KERAS_SWIFT_NO_STRIP", "") in ("", "0"):
        # The shipped library is stripped, so SwiftPM's release -g only made
        # the unstripped library 48 MB (the compile time hardly changed).
        debug_info = ["-Xswiftc", "-gnone"]
    cmd = [
        swift, "build", *common,
        "--product", ENGINE_PRODUCT,
        # SwiftPM applies --static-swift-stdlib to executables only (6.3 still
        # links a dynamic library product against libswiftCore.so with it), so
        # the driver flag is passed as well; together they say what we mean
        # whatever SwiftPM version runs.
        "--static-swift-stdlib",
        "-Xswiftc", "-static-stdlib",
        *debug_info,
        # Keep the archive symbols of the static runtime out of the dynamic
        # symbol table, then export the ABI alone.
        "-Xlinker", "--exclude-libs=ALL",
        "-Xlinker", f"--version-script={version_script}",
        *_build_jobs(),
    ]
    return swift, common, cmd


def _run_swift(cmd, what):
    try:
        subprocess.run(cmd, cwd=ROOT, check=True)
    except FileNotFoundError as e:
        raise ExecError(f"cannot run {cmd[0]!r}: {e}") from e
    except subprocess.CalledProcessError as e:
        raise ExecError(f"{what} failed with exit status {e.returncode}") from e


def build_engines(variants):
    """Build the engine for each of ``variants`` (None: the baseline) and
    return {variant: path of its libTensorEngineC.so}.

    Each build is one whole-module compile of TensorEngine that keeps about
    one core busy (SIL optimization is serial and the LLVM half barely
    overlapped), so the builds run side by side: on 2 cores the two-variant
    install takes about as long as one build.
    """
    jobs = {v: _swift_build_args(v) for v in variants}
    # Dependency resolution writes Package.resolved in the source tree: one
    # build at a time for that step, then the compiles in parallel.
    for v, (swift, common, _) in jobs.items():
        _run_swift([swift, "package", *common, "resolve"], "swift package resolve")
    procs = {}
    for v, (_, _, cmd) in jobs.items():
        _log(f"building the Swift engine ({v or 'baseline'}): " + " ".join(cmd))
        log = open(os.path.join(cmd[cmd.index("--scratch-path") + 1], "build.log"), "w+")
        try:
            procs[v] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log)
        except FileNotFoundError as e:
            log.close()
            for p, _ in procs.values():
                p.kill()
            raise ExecError(f"cannot run {cmd[0]!r}: {e}") from e
    failed = []
    for v, (p, log) in procs.items():
        rc = p.wait()
        log.seek(0)
        output = log.read()
        log.close()
        # Only a failure's output is worth a screen: warnings of a
        # successful build would drown pip's own messages.
        if rc != 0:
            sys.stdout.write(output[-20000:])
            failed.append(f"{v or 'baseline'} (exit status {rc})")
        else:
            _log(f"built the Swift engine ({v or 'baseline'})")
    if failed:
        raise ExecError("swift build failed: " + ", ".join(failed))

    libs = {}
    for v, (swift, common, _) in jobs.items():
        bin_dir = subprocess.run(
            [swift, "build", *common, "--show-bin-path"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]
        lib = os.path.join(bin_dir, ENGINE_LIB)
        if not os.path.isfile(lib):
            raise ExecError(f"swift build succeeded but {lib} does not exist")
        libs[v] = lib
    return libs


def _install_lib(lib, dest):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    # A fresh copy every time: stripping edits the file in place, and the
    # SwiftPM original must keep its symbols for incremental rebuilds.
    if os.path.exists(dest):
        os.unlink(dest)  # never write through a file a running process maps
    shutil.copyfile(lib, dest)
    os.chmod(dest, 0o755)
    _strip(dest)


def _strip(path):
    """Drops the symbol table and debug info (KERAS_SWIFT_NO_STRIP=1 keeps them)."""
    if os.environ.get("KERAS_SWIFT_NO_STRIP", "") not in ("", "0"):
        return
    strip = shutil.which("strip")
    if strip:
        subprocess.run([strip, "--strip-unneeded", path], check=True)
    else:
        _log(f"`strip` not found; shipping {os.path.basename(path)} unstripped")


# The C SDK inside the installed package: _swiftkeras.get_include() holds the
# header, get_lib() the library (the extension's own directory), and this
# pkg-config file names both relative to itself, so it stays right wherever
# the package is installed.
PKGCONFIG_NAME = "tensor_engine.pc"
PKGCONFIG = """\
prefix=${{pcfiledir}}/..
includedir=${{prefix}}/include
libdir=${{prefix}}

Name: tensor_engine
Description: C ABI of the keras-swift tensor engine (tensor_engine.h)
Version: {version}
Cflags: -I${{includedir}}
Libs: -L${{libdir}} -lTensorEngineC -Wl,-rpath,${{libdir}}
"""


class BuildPy(build_py):
    """build_py that also ships the import hook's .pth at the site-packages root
    and the C SDK (header, pkg-config file) inside ``_swiftkeras``."""

    def _sdk_outputs(self):
        pkg = os.path.join(self.build_lib, "_swiftkeras")
        return [os.path.join(pkg, "include", "tensor_engine.h"),
                os.path.join(pkg, "pkgconfig", PKGCONFIG_NAME)]

    def run(self):
        super().run()
        src = os.path.join(PY_DIR, HOOK_PTH)
        if os.path.isfile(src):
            self.copy_file(src, os.path.join(self.build_lib, HOOK_PTH))
        header, pc = self._sdk_outputs()
        self.mkpath(os.path.dirname(header))
        self.copy_file(os.path.join(ENGINE_HEADER_DIR, "tensor_engine.h"), header)
        self.mkpath(os.path.dirname(pc))
        with open(pc, "w") as f:
            f.write(PKGCONFIG.format(version=self.distribution.get_version()))

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        if os.path.isfile(os.path.join(PY_DIR, HOOK_PTH)):
            outputs.append(os.path.join(self.build_lib, HOOK_PTH))
        return outputs + self._sdk_outputs()


class BuildExt(build_ext):
    """build_ext that first builds the Swift engine and places it by the extension."""

    def _engine_dests(self):
        """{level compiled for (None: baseline): where its library goes}; the
        first entry sits by the extension, the others under glibc-hwcaps/."""
        if os.environ.get("KERAS_SWIFT_ENGINE_LIB"):
            plan = {None: ""}
        else:
            if not hasattr(self, "_plan"):
                self._plan = _engine_plan()
            plan = self._plan
        ext_dir = os.path.dirname(self.get_ext_fullpath("_swiftkeras._C"))
        return {level: os.path.join(ext_dir, sub, ENGINE_LIB) for level, sub in plan.items()}

    def run(self):
        if not sys.platform.startswith("linux"):
            raise PlatformError(
                "keras-swift builds on Linux only for now "
                f"(this is {sys.platform!r})"
            )
        prebuilt = os.environ.get("KERAS_SWIFT_ENGINE_LIB")
        if prebuilt and not os.path.isfile(prebuilt):
            raise ExecError(f"KERAS_SWIFT_ENGINE_LIB={prebuilt!r} is not a file")
        dests = self._engine_dests()
        if prebuilt:
            _log(f"using prebuilt engine {prebuilt}")
            libs = {None: prebuilt}
        else:
            libs = build_engines(list(dests))
        for variant, dest in dests.items():
            _install_lib(libs[variant], dest)
        top_dir = os.path.dirname(next(iter(dests.values())))
        # A variant left from an earlier build with other settings would
        # shadow the engine just built.
        for level in X86_64_LEVELS:
            stale = os.path.join(top_dir, "glibc-hwcaps", level, ENGINE_LIB)
            if stale not in dests.values() and os.path.exists(stale):
                os.unlink(stale)
        self._write_build_info(dests, prebuilt)
        for ext in self.extensions:
            ext.library_dirs.append(top_dir)
        super().run()
        # Python's own CFLAGS carry -g: unstripped, the extension is 3.5x larger.
        for ext in self.extensions:
            _strip(self.get_ext_fullpath(ext.name))

    def _build_info_path(self):
        return os.path.join(os.path.dirname(self.get_ext_fullpath("_swiftkeras._C")), "_build.py")

    def _write_build_info(self, dests, prebuilt):
        """_swiftkeras/_build.py: how this engine was built, for show_config()."""
        if prebuilt:
            toolchain = f"prebuilt ({prebuilt})"
        else:
            try:
                toolchain = subprocess.run(
                    [_find_swift(), "--version"], capture_output=True, text=True, check=True,
                ).stdout.strip().splitlines()[0]
            except (OSError, subprocess.CalledProcessError, IndexError):
                toolchain = "unknown"
        levels = list(dests)
        variants = ", ".join(level or "baseline" for level in levels)
        if len(levels) == 1 and levels[0]:
            variants += " only (this CPU's level: KERAS_SWIFT_HWCAPS=host)"
        info = {
            "toolchain": toolchain,
            "variants": variants,
            "configuration": "release, static Swift stdlib, only te_* exported",
        }
        path = self._build_info_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write('"""Written by setup.py at build time (show_config reads it)."""\n\n')
            f.write("# What the libTensorEngineC.so beside _C was compiled for (None: the\n"
                    "# baseline); _swiftkeras checks the CPU has it before loading it.\n")
            f.write(f"LEVEL = {levels[0]!r}\n")
            f.write(f"BUILD = {info!r}\n")

    def get_outputs(self):
        return (super().get_outputs() + list(self._engine_dests().values())
                + [self._build_info_path()])


def _py_modules():
    path = os.path.join(PY_DIR, HOOK_MODULE + ".py")
    return [HOOK_MODULE] if os.path.isfile(path) else []


EXT_SRC_DIR = os.path.join(PY_DIR, "_swiftkeras", "src")
# One file per area of the binding; module.c lists them.
EXT_SOURCES = ["module.c", "tensor.c", "attrs.c", "opcall.c", "dispatch.c", "tape.c", "graph.c",
               "dlpack.c"]

native = Extension(
    "_swiftkeras._C",
    sources=[os.path.join(EXT_SRC_DIR, f) for f in EXT_SOURCES],
    include_dirs=[ENGINE_HEADER_DIR],
    depends=[os.path.join(ENGINE_HEADER_DIR, "tensor_engine.h"),
             os.path.join(EXT_SRC_DIR, "internal.h")],
    # libdl for dladdr (engine_library()); glibc 2.34 moved it into libc.
    libraries=["TensorEngineC", "dl"],
    extra_compile_args=["-std=c11", "-fvisibility=hidden", "-Wall", "-Wextra",
                        "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
    # Through the compiler driver, not runtime_library_dirs, to be sure the
    # literal `$ORIGIN` reaches the linker: the engine library sits next to
    # the extension wherever the package is installed.
    extra_link_args=["-Wl,-rpath,$ORIGIN"],
)

setup(
    package_dir={"": PY_DIR},
    packages=find_packages(where=PY_DIR, exclude=["tests", "tests.*", "*.tests", "*.tests.*"]),
    py_modules=_py_modules(),
    # Explicit package data: with include_package_data the C source of the
    # extension (in the sdist via MANIFEST.in) would be installed too.
    include_package_data=False,
    package_data={"keras_swift": ["excluded_tests.txt"]},
    ext_modules=[native],
    cmdclass={"build_py": BuildPy, "build_ext": BuildExt},
    zip_safe=False,
)
