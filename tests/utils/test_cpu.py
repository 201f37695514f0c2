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


def test_native_bf16_needs_the_flag_and_an_uncapped_onednn():
    assert cpu.native_bf16({"avx2", "avx512f"}, None)[0] is False
    assert cpu.native_bf16({"avx512f", "avx512_bf16"}, None) == (True, "the CPU has avx512_bf16")
    assert cpu.native_bf16({"amx_bf16"}, None)[0] is True
    ok, why = cpu.native_bf16({"avx512f", "avx512_bf16"}, "AVX2")
    assert ok is False and "capped at AVX2" in why and "below its bfloat16 kernels" in why


def test_bf16_environment_turns_onednn_off_only_when_capped_below_bf16(tmp_path):
    path = _cpuinfo(tmp_path, "AuthenticAMD", "avx2 avx512f avx512_bf16")
    env = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert cpu.bf16_runnable_in_process(env, path) is False
    assert cpu.prepare_bf16_environment(env, path) == "TF_ENABLE_ONEDNN_OPTS"
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "0" and cpu.bf16_runnable_in_process(env, path) is True
    uncapped = {}
    assert cpu.prepare_bf16_environment(uncapped, path) is None and uncapped == {}
