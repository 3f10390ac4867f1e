"""The C SDK shipped inside the installed package.

A C program is compiled with nothing but what the installed ``_swiftkeras``
names: ``get_include()`` (tensor_engine.h), ``get_lib()`` (libTensorEngineC.so)
and the pkg-config file in ``get_pkgconfig_dir()``; it then runs against the
installed engine. No path into the source tree is used.
"""

import os
import shutil
import subprocess
import textwrap

import pytest

C = pytest.importorskip("_swiftkeras")

PROGRAM = textwrap.dedent(
    r"""
    #include <stdio.h>
    #include "tensor_engine.h"

    int main(void) {
        if (te_abi_version() != TE_ABI_VERSION) { puts("abi mismatch"); return 1; }
        const float xs[4] = {1.0f, 2.0f, 3.0f, 4.0f};
        const float ys[4] = {10.0f, 20.0f, 30.0f, 40.0f};
        int64_t shape[2] = {2, 2};
        te_tensor x, y, out;
        int32_t add, n = 0;
        if (te_tensor_create(TE_FLOAT32, shape, 2, xs, sizeof xs, &x) != TE_OK ||
            te_tensor_create(TE_FLOAT32, shape, 2, ys, sizeof ys, &y) != TE_OK ||
            te_op_lookup("add", &add) != TE_OK) { printf("setup: %s\n", te_last_error()); return 1; }
        te_tensor in[2] = {x, y};
        if (te_op_call(add, in, 2, NULL, 0, &out, 1, &n) != TE_OK || n != 1) {
            printf("add: %s\n", te_last_error()); return 1;
        }
        const float *r = (const float *)te_tensor_data(out);
        for (int i = 0; i < 4; i++) printf("%g ", r[i]);
        puts("");
        /* An error comes back as a status and a message, never a crash. */
        int32_t bogus;
        if (te_op_lookup("no_such_op", &bogus) == TE_OK) { puts("lookup accepted nonsense"); return 1; }
        te_tensor_release(out); te_tensor_release(x); te_tensor_release(y);
        return 0;
    }
    """
)


def _cc():
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    return cc


def _run(exe):
    # The engine must be found through the rpath the SDK's link flags set, not
    # through the environment.
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    done = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["11", "22", "33", "44"]


def test_sdk_paths_exist():
    assert os.path.isfile(os.path.join(C.get_include(), "tensor_engine.h"))
    assert os.path.isfile(os.path.join(C.get_lib(), "libTensorEngineC.so"))
    assert os.path.isfile(os.path.join(C.get_pkgconfig_dir(), "tensor_engine.pc"))


def test_c_program_with_get_include_and_get_lib(tmp_path):
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "prog"
    lib = C.get_lib()
    subprocess.run([_cc(), "-std=c11", "-Wall", "-Werror", str(src), f"-I{C.get_include()}",
                    f"-L{lib}", "-lTensorEngineC", f"-Wl,-rpath,{lib}", "-o", str(exe)],
                   check=True)
    _run(exe)


def test_c_program_with_pkg_config(tmp_path):
    pkg_config = shutil.which("pkg-config")
    if pkg_config is None:
        pytest.skip("no pkg-config")
    env = dict(os.environ, PKG_CONFIG_PATH=C.get_pkgconfig_dir())
    flags = subprocess.run([pkg_config, "--cflags", "--libs", "tensor_engine"], env=env,
                           check=True, capture_output=True, text=True).stdout.split()
    assert any(f.startswith("-I") and os.path.samefile(f[2:], C.get_include()) for f in flags)
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "prog"
    subprocess.run([_cc(), "-std=c11", str(src), *flags, "-o", str(exe)], check=True)
    _run(exe)
