"""The base every stage stands on: errors, atomic file I/O, YAML configs, the lazy registry,
devices, timing, the learning-rate schedule, logging and torch.distributed.

Public face: ``SlukdError`` (errors), ``atomic_open``/``write_json``/``read_json``/``atomic_directory``/
``mark_done`` (io), ``load_config``/``read_section``/``parse_overrides`` (config), ``resolve_device``
(devices), ``warmup_scheduler``/``autocast`` (schedule), ``setup_logging`` (logging_utils).
"""
