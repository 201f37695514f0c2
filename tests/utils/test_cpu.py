from detkit.utils import cpu


def _cpuinfo(tmp_path, vendor: str, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return str(path)


def test_amd_with_avx512_is_capped_at_avx2(tmp_path):
    env = {}
    path = _cpuinfo(tmp_path, "AuthenticAMD", "fpu sse2 avx2 avx512f avx512_bf16")
    assert cpu.apply_onednn_workaround(env, path) == "AVX2"
    assert env == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_other_cpus_and_user_settings_are_left_alone(tmp_path):
    for vendor, flags in [("AuthenticAMD", "sse2 avx2"), ("GenuineIntel", "avx2 avx512f amx_bf16")]:
        env = {}
        assert cpu.apply_onednn_workaround(env, _cpuinfo(tmp_path, vendor, flags)) is None and env == {}
    env = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    assert cpu.apply_onednn_workaround(env, _cpuinfo(tmp_path, "AuthenticAMD", "avx512f")) is None
    assert env == {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    assert cpu.cpu_info(str(tmp_path / "missing")) == ("", set())
