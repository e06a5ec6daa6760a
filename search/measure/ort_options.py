"""The option names ONNX Runtime reads, so a misspelled one is refused instead of ignored.

ONNX Runtime accepts any session config key and ignores the ones it does not know, and its
Python API drops every option given to the CPU execution provider. A profile that sets
``session.disable_cpu_ep_falback`` would be measured as if the line were not there: these
checks refuse it with a did-you-mean instead.

:data:`SESSION_CONFIG_KEYS` are the keys of ONNX Runtime's
``include/onnxruntime/core/session/onnxruntime_session_options_config_keys.h`` plus the config
keys compiled into onnxruntime 1.32.0's Python module (``strings`` of
``onnxruntime_pybind11_state*.so``), which also reads a few that header does not list.
Keys under ``ep.<provider>.`` (for example ``ep.cudaexecutionprovider.``) are options for a
provider of the profile and are passed on as written.
"""

from __future__ import annotations

import difflib

SESSION_CONFIG_KEYS = frozenset(
    {
        "ep.context_embed_mode",
        "ep.context_enable",
        "ep.context_file_path",
        "ep.context_model_external_initializers_file_name",
        "ep.context_node_name_prefix",
        "ep.context_source_model_path",
        "ep.cpu.qmoe_deferred_scale",
        "ep.cuda.fpa_intb_dequant_gemm_min_m",
        "ep.cuda.fpa_intb_gemm",
        "ep.cuda.fpa_intb_profile_m",
        "ep.cuda.gqa_workspace_max_total_sequence_length",
        "ep.cuda.matmul_nbits_m_chunk_size",
        "ep.cuda.moe_packed_gpu_experts",
        "ep.cuda.runtime_fusion.causal_conv_with_state",
        "ep.cuda.runtime_fusion.unit_swish",
        "ep.enable_weightless",
        "ep.enable_weightless_ep_context_nodes",
        "ep.enable_weightless_mode",
        "ep.nnapi.partitioning_stop_ops",
        "ep.share_ep_contexts",
        "ep.stop_share_ep_contexts",
        "mlas.disable_kleidiai",
        "mlas.enable_gemm_fastmath_arm64_bfloat16",
        "mlas.kleidiai.conv_igemm_max_work",
        "mlas.nchwc_depthwise_sliding",
        "mlas.nchwc_pointwise_conv_max_input_channel_batch",
        "mlas.qnbit.force_fp32",
        "mlas.use_lut_gemm",
        "optimization.constant_folding_max_output_size_in_bytes",
        "optimization.disable_specified_optimizers",
        "optimization.enable_cast_chain_elimination",
        "optimization.enable_gelu_approximation",
        "optimization.enable_memory_probe_recompute_config",
        "optimization.memory_optimizer_config",
        "optimization.minimal_build_optimizations",
        "session.allow_released_opsets_only",
        "session.collect_node_memory_stats_to_file",
        "session.compile_only",
        "session.debug_layout_transformation",
        "session.disable_aot_function_inlining",
        "session.disable_cpu_ep_fallback",
        "session.disable_double_qdq_remover",
        "session.disable_model_compile",
        "session.disable_prepacking",
        "session.disable_qdq_constant_folding",
        "session.disable_quant_qdq",
        "session.dynamic_block_base",
        "session.enable_cpu_mem_arena",
        "session.enable_dq_matmulnbits_fusion",
        "session.enable_mem_pattern",
        "session.enable_moe_expert_counting",
        "session.enable_moe_expert_statistics",
        "session.enable_profiling",
        "session.enable_quant_qdq_cleanup",
        "session.enable_saved_runtime_optimizations",
        "session.execution_mode",
        "session.external_data_loader.chunk_bytes",
        "session.external_data_loader.min_size_bytes",
        "session.external_data_loader.pinned_memory_bytes",
        "session.external_data_loader.threads",
        "session.fail_on_suboptimal_compiled_model",
        "session.force_spinning_stop",
        "session.function_expansion_byte_limit",
        "session.function_expansion_node_limit",
        "session.gqa_value_layout",
        "session.graph_optimization_level",
        "session.graph_optimizations_loop_level",
        "session.inter_op.allow_spinning",
        "session.inter_op.spin_backoff_max",
        "session.inter_op.spin_duration_us",
        "session.inter_op_num_threads",
        "session.intra_op.allow_spinning",
        "session.intra_op.spin_backoff_max",
        "session.intra_op.spin_duration_us",
        "session.intra_op_num_threads",
        "session.intra_op_thread_affinities",
        "session.kernel_dispatch_policy",
        "session.layer_assignment_settings",
        "session.load_model_format",
        "session.log_id",
        "session.log_severity_level",
        "session.log_verbosity_level",
        "session.max_shape_override",
        "session.model_external_initializers_file_folder_path",
        "session.moe.offload.allow_file_backing",
        "session.moe.offload.async_max_tokens",
        "session.moe.offload.budget_group",
        "session.moe.offload.cpu_execution",
        "session.moe.offload.cpu_threads",
        "session.moe.offload.derived_cache_dir",
        "session.moe.offload.device_expert_bytes",
        "session.moe.offload.device_working_bytes",
        "session.moe.offload.gpu_budget_bytes",
        "session.moe.offload.gpu_device_mem_limit",
        "session.moe.offload.host_expert_bytes",
        "session.moe.offload.host_working_bytes",
        "session.moe.offload.min_expert_weight",
        "session.moe.offload.mode",
        "session.moe.offload.node_overrides",
        "session.moe.offload.pinned_bytes",
        "session.moe.offload.placement",
        "session.moe.offload.popularity_file",
        "session.moe.offload.prefill_wave_experts",
        "session.moe.offload.reserve_device_bytes",
        "session.moe.offload.skip_tail_cold_only",
        "session.moe.offload.skip_zero_cold_doorbell",
        "session.moe.offload.source_root",
        "session.moe.offload.tail_substitution_min_rank",
        "session.moe.offload.tail_substitution_threshold",
        "session.moe_expert_counter_alpha",
        "session.moe_expert_counter_beta",
        "session.moe_expert_counter_state_file",
        "session.name_based_layer_assignment",
        "session.node_partition_config_file",
        "session.optimized_model_external_initializers_file_name",
        "session.optimized_model_external_initializers_min_size_in_bytes",
        "session.optimized_model_filepath",
        "session.prepack.enable_parallel",
        "session.qdq_matmulnbits_accuracy_level",
        "session.qdq_matmulnbits_block_size",
        "session.qdqisint8allowed",
        "session.record_ep_graph_assignment_info",
        "session.resource_cuda_partitioning_settings",
        "session.save_external_prepacked_constant_initializers",
        "session.save_model_format",
        "session.set_denormal_as_zero",
        "session.strict_shape_type_inference",
        "session.strict_workspace_verification",
        "session.use_deterministic_compute",
        "session.use_device_allocator_for_initializers",
        "session.use_env_allocators",
        "session.use_external_initializer_file_buffers_directly",
        "session.use_ort_model_bytes_directly",
        "session.use_ort_model_bytes_for_initializers",
        "session.use_per_session_threads",
        "session.x64quantprecision",
    }
)

# Providers whose options ONNX Runtime's Python API drops without a word.
IGNORES_OPTIONS = frozenset({"CPUExecutionProvider"})


def _did_you_mean(word: str, known: frozenset[str] | list[str]) -> str:
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_session_config(config: dict[str, str], providers: list[str]) -> None:
    """Refuse a session config key ONNX Runtime would ignore.

    Raises:
        ValueError: one line naming the key and the closest known one.
    """
    prefixes = tuple(f"ep.{p.lower()}." for p in providers) + tuple(
        f"ep.{p.lower().removesuffix('executionprovider')}." for p in providers
    )
    for key in config:
        if key in SESSION_CONFIG_KEYS or key.startswith(prefixes):
            continue
        raise ValueError(
            f"session_config: unknown key {key!r} (ONNX Runtime would ignore it)"
            f"{_did_you_mean(key, SESSION_CONFIG_KEYS)}"
        )


def check_provider_options(name: str, options: dict[str, object]) -> None:
    """Refuse options given to a provider whose options ONNX Runtime drops (the CPU one).

    Other providers (CUDA, TensorRT, ...) check their own option names when a session is
    created and fail on an unknown one.

    Raises:
        ValueError: one line naming the provider and what to use instead.
    """
    if options and name in IGNORES_OPTIONS:
        raise ValueError(
            f"{name} takes no options (ONNX Runtime would ignore {sorted(options)}): set "
            "threads with threads: and session settings with session_config:"
        )


# What a remote client may set on the agent: session keys that tune how a model runs and can
# name no path and load no code. ONNX Runtime reads files at client-chosen paths for some keys
# (session.model_external_initializers_file_folder_path, session.node_partition_config_file,
# optimization.memory_optimizer_config) and writes files for others
# (session.collect_node_memory_stats_to_file, session.optimized_model_filepath,
# session.enable_profiling, session.debug_layout_transformation, ep.context_*, ...), so only
# the keys below pass; a profile on the agent's own machine may still use any known key.
CLIENT_SESSION_CONFIG_KEYS = frozenset(
    {
        "ep.cpu.qmoe_deferred_scale",
        "ep.cuda.fpa_intb_dequant_gemm_min_m",
        "ep.cuda.fpa_intb_gemm",
        "ep.cuda.fpa_intb_profile_m",
        "ep.cuda.gqa_workspace_max_total_sequence_length",
        "ep.cuda.matmul_nbits_m_chunk_size",
        "ep.nnapi.partitioning_stop_ops",
        "mlas.disable_kleidiai",
        "mlas.enable_gemm_fastmath_arm64_bfloat16",
        "mlas.kleidiai.conv_igemm_max_work",
        "mlas.nchwc_depthwise_sliding",
        "mlas.nchwc_pointwise_conv_max_input_channel_batch",
        "mlas.qnbit.force_fp32",
        "mlas.use_lut_gemm",
        "optimization.constant_folding_max_output_size_in_bytes",
        "optimization.disable_specified_optimizers",
        "optimization.enable_cast_chain_elimination",
        "optimization.enable_gelu_approximation",
        "session.allow_released_opsets_only",
        "session.disable_aot_function_inlining",
        "session.disable_cpu_ep_fallback",
        "session.disable_double_qdq_remover",
        "session.disable_prepacking",
        "session.disable_qdq_constant_folding",
        "session.disable_quant_qdq",
        "session.dynamic_block_base",
        "session.enable_cpu_mem_arena",
        "session.enable_dq_matmulnbits_fusion",
        "session.enable_mem_pattern",
        "session.enable_quant_qdq_cleanup",
        "session.execution_mode",
        "session.force_spinning_stop",
        "session.function_expansion_byte_limit",
        "session.function_expansion_node_limit",
        "session.graph_optimization_level",
        "session.graph_optimizations_loop_level",
        "session.inter_op.allow_spinning",
        "session.inter_op.spin_backoff_max",
        "session.inter_op.spin_duration_us",
        "session.inter_op_num_threads",
        "session.intra_op.allow_spinning",
        "session.intra_op.spin_backoff_max",
        "session.intra_op.spin_duration_us",
        "session.intra_op_num_threads",
        "session.intra_op_thread_affinities",
        "session.log_severity_level",
        "session.log_verbosity_level",
        "session.prepack.enable_parallel",
        "session.qdq_matmulnbits_accuracy_level",
        "session.qdq_matmulnbits_block_size",
        "session.qdqisint8allowed",
        "session.set_denormal_as_zero",
        "session.strict_shape_type_inference",
        "session.use_deterministic_compute",
        "session.x64quantprecision",
    }
)
# Provider options (and ep.<provider>.* session keys) whose name says they take a path, load a
# library, or hand over a pointer (TensorRT's trt_engine_cache_path and
# trt_extra_plugin_lib_paths, QNN's backend_path, OpenVINO's cache_dir and load_config, CUDA's
# user_compute_stream and gpu_external_alloc, ...): refused from a client, whatever the value.
_PATHLIKE = (
    "path", "file", "dir", "folder", "lib", "cache", "location", "plugin", "dump", "profil",
    "save", "load", "context", "external", "saver", "compute_stream", "ptr", "pointer",
    "handle", "config", "calibration",
)  # fmt: skip
_VALUE_LIMIT = 1024  # ONNX Runtime's own limit on a config value


def _plain_value(value: object) -> bool:
    """Whether a client's option value is a plain word or number: no path, no control
    character, no more than ONNX Runtime takes."""
    text = str(value)
    return (
        len(text) <= _VALUE_LIMIT
        and text.isprintable()
        and not any(c in text for c in "/\\")
        and ".." not in text
        and not text.startswith("~")
    )


def _check_client_option(where: str, key: str, value: object, *, listed: bool = False) -> None:
    """Refuse an option a client may not set; ``listed`` keys passed the allowlist by name."""
    if not listed and any(word in key.lower() for word in _PATHLIKE):
        raise ValueError(
            f"{where} {key!r} is not accepted from a client: options that may name a path, a "
            "library or a pointer are set on the target only"
        )
    if not _plain_value(value):
        raise ValueError(
            f"{where} {key!r} has a value the agent does not accept from a client (a path, a "
            f"control character or over {_VALUE_LIMIT} characters)"
        )


def check_client_options(config: dict[str, str], providers: dict[str, dict[str, object]]) -> None:
    """Refuse session config entries and provider options a remote client may not set.

    ``config`` is the profile's ``session_config``; ``providers`` maps each provider name to
    its options. A session key must be one of :data:`CLIENT_SESSION_CONFIG_KEYS` or an
    ``ep.<provider>.`` key of a profile's provider; those and every provider option must not
    name a path, a library or a pointer, and their values must be plain text without path
    separators.

    Raises:
        ValueError: one line naming the first refused key.
    """
    prefixes = tuple(f"ep.{p.lower()}." for p in providers) + tuple(
        f"ep.{p.lower().removesuffix('executionprovider')}." for p in providers
    )
    for key, value in config.items():
        if key in CLIENT_SESSION_CONFIG_KEYS:
            _check_client_option("session_config", key, value, listed=True)
        elif key.startswith(prefixes):
            _check_client_option("session_config", key, value)
        else:
            raise ValueError(
                f"session_config {key!r} is not accepted from a client (the agent takes only "
                "keys that tune how a model runs and name no file; see "
                "search.measure.ort_options.CLIENT_SESSION_CONFIG_KEYS)"
            )
    for name, options in providers.items():
        for option, setting in options.items():
            _check_client_option(f"{name} option", option, setting)
