"""The console helpers of the `mmoe` command: flag spellings and start-up noise (no TensorFlow)."""

from __future__ import annotations

from mmoe_cli.console import drop_startup_noise
from mmoe_cli.flags import build_parser, dashed_spelling, option_strings

TF_STARTUP = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796212090.619739    4023 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796212090.860187    4023 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796212095.550116    4023 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""


def test_startup_noise_is_dropped_and_other_lines_kept():
    real = "E0000 00:00:1.0 op_kernel.cc:1] OP_REQUIRES failed: out of memory\nmy own line\n"
    assert drop_startup_noise(TF_STARTUP + real) == real


def test_snake_case_flags_are_accepted_and_beams_left_alone():
    parser = build_parser()
    argv = ["run", "--input_format=csv", "--batch_size", "64", "--direct_num_workers=2", "--max_reject_rate", "0.1"]
    spelled = dashed_spelling(argv, option_strings(parser))
    assert spelled == ["run", "--input-format=csv", "--batch-size", "64", "--direct_num_workers=2",
                       "--max-reject-rate", "0.1"]
    args, beam_args = parser.parse_known_args(spelled)
    assert (args.input_format, args.batch_size, args.max_reject_rate) == ("csv", 64, 0.1)
    assert beam_args == ["--direct_num_workers=2"]


def test_every_flag_has_one_dashed_spelling():
    flags = option_strings(build_parser())
    assert "--input-format" in flags and not any("_" in flag for flag in flags)
