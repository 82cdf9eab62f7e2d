import torch

from spsr_cli.engine import device
from spsr_cli.engine.device import cpu_bf16_faster, cpu_has_bf16_units, free_memory_bytes, resolve_dtype


def test_cpu_bf16_units_are_detected_from_the_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("SPSR_CPU_BF16", raising=False)
    amx, avx, plain = tmp_path / "amx", tmp_path / "avx", tmp_path / "plain"
    amx.write_text("processor : 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    avx.write_text("processor : 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    plain.write_text("processor : 0\nflags\t\t: fpu avx2 avx512f\n")
    assert cpu_has_bf16_units(str(amx)) and cpu_has_bf16_units(str(avx)) and not cpu_has_bf16_units(str(plain))
    assert not cpu_has_bf16_units(str(tmp_path / "missing"))
    monkeypatch.setenv("SPSR_CPU_BF16", "1")
    assert cpu_has_bf16_units(str(plain))


def test_bf16_is_the_default_only_where_it_is_faster_for_the_backend(tmp_path, monkeypatch):
    """Each backend has its own list of CPU flags under which its bf16 is faster (a table: one can change
    alone); the measured table: AMX or AVX512-BF16 for both."""
    monkeypatch.delenv("SPSR_CPU_BF16", raising=False)
    amx, avx, plain = tmp_path / "amx", tmp_path / "avx", tmp_path / "plain"
    amx.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    avx.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    plain.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert cpu_bf16_faster("torch", str(amx)) and cpu_bf16_faster("openvino", str(amx))
    assert cpu_bf16_faster("torch", str(avx)) and cpu_bf16_faster("openvino", str(avx))
    assert not cpu_bf16_faster("torch", str(plain)) and not cpu_bf16_faster("openvino", str(plain))
    monkeypatch.setitem(device.CPU_BF16_FASTER, "torch", ("amx_bf16",))  # one backend changed alone
    assert not cpu_bf16_faster("torch", str(avx)) and cpu_bf16_faster("openvino", str(avx))
    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_bf16_faster", lambda backend="torch", cpuinfo="": backend == "openvino")
    assert resolve_dtype(cpu, None, "openvino") == torch.bfloat16 and resolve_dtype(cpu, None) == torch.float32
    assert resolve_dtype(cpu, "bf16") == torch.bfloat16  # asked for: given
    monkeypatch.undo()
    monkeypatch.setenv("SPSR_CPU_BF16", "0")
    assert not cpu_bf16_faster("openvino", str(amx))  # the override, as for cpu_has_bf16_units


def test_available_memory_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n")
    assert device._meminfo_available(str(meminfo)) == 8_000_000 * 1024
    assert device._meminfo_available(str(tmp_path / "none")) is None


def test_cgroup_limit_lowers_the_available_memory(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("4294967296\n")
    (v2 / "memory.current").write_text("3221225472\n")
    (v2 / "memory.stat").write_text("anon 100\ninactive_file 536870912\nactive_file 7\n")
    assert device._cgroup_headroom(str(v2)) == (1 << 30) + (1 << 29)  # page cache counts as free
    (v2 / "memory.max").write_text("max\n")
    assert device._cgroup_headroom(str(v2)) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory/memory.limit_in_bytes").write_text(str(2**63 - 4096))  # "unlimited"
    (v1 / "memory/memory.usage_in_bytes").write_text("123")
    assert device._cgroup_headroom(str(v1)) is None
    assert device._cgroup_headroom(str(tmp_path / "none")) is None


def test_free_memory_takes_the_smaller_of_meminfo_and_cgroup(monkeypatch):
    monkeypatch.setattr(device, "_meminfo_available", lambda: 8 << 30)
    monkeypatch.setattr(device, "_cgroup_headroom", lambda: 2 << 30)
    assert free_memory_bytes(torch.device("cpu")) == 2 << 30
    monkeypatch.setattr(device, "_cgroup_headroom", lambda: None)
    assert free_memory_bytes(torch.device("cpu")) == 8 << 30
