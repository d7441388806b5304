"""Fixtures shared by the test modules."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def runtime_default_and_cache(tmp_path_factory):
    """Tests run checkpoints with PyTorch unless they ask for another runtime (``--runtime auto`` would time three
    runtimes and export each new checkpoint: tests/test_runtime_choice.py tests it), and never touch the user's cache."""
    saved = {name: os.environ.get(name) for name in ("FCNSEG_RUNTIME", "FCNSEG_CACHE_DIR")}
    os.environ.setdefault("FCNSEG_RUNTIME", "torch")
    os.environ["FCNSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("fcnseg-cache"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny convolutions gain nothing from a second, and on a busy machine it costs a lot.

    Modules that train small nets opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# /proc/cpuinfo texts of each kind of CPU the precision and layout rules distinguish (fcnseg.precision.CPU_KINDS).
CPUINFO = {
    "avx2": "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx fma avx2\n",
    # AVX-512 with VNNI but no BF16 (Cascade Lake): mkldnn calls bf16 "supported" here, it is emulated
    "avx512": "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6248 CPU\nflags\t\t: avx2 avx512f avx512bw avx512_vnni\n",
    "avx512_bf16": "processor\t: 0\nmodel name\t: AMD EPYC 9654\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16\n",
    "amx": ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
            "flags\t\t: avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"),
    "other": "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse sse2\n",
}


@pytest.fixture
def fake_cpu(monkeypatch):
    """``fake_cpu("avx512", env={...})`` makes :func:`fcnseg.precision.cpu_kind` answer that kind of CPU for the test
    (from :data:`CPUINFO`, lowered by the ISA caps in ``env``); returns the :class:`~fcnseg.precision.CpuKind`."""
    import fcnseg.precision as precision

    def fake(name: str, env: dict | None = None):
        kind = precision.kind_from_cpuinfo(CPUINFO[name], env=env or {})
        monkeypatch.setattr(precision, "cpu_kind", lambda: kind)
        return kind

    return fake
