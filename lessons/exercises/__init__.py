"""The workshop's exercises, one file per topic: each function raises NotImplementedError until you write it.

This folder is lessons/exercises/ in the repository and `minitx.exercises` in an installed minitx (the wheel
ships these files; `minitx exercises DIR` copies them out). Grade a file with `minitx grade FILE`; the
answers are compared with what minitx counts when it runs the model, on small models and real presets.

    ex01_parameters.py   count_params                                                        slides 5, 8
    ex02_memory.py       inference_weights_bytes, training_memory_bytes                      slides 5, 7
    ex03_compute.py      forward_matmul_flops, training_matmul_flops                          slide 6
    ex04_kv_cache.py     kv_cache_bytes                                                       slide 11
    ex05_decode.py       decode_step_flops, decode_step_bytes, critical_batch                 slides 13-16
    ex06_serving.py      ttft_seconds, tpot_seconds, cost_per_million_output_tokens,
                         break_even_utilization                                               slides 14, 15, 17
    ex07_experiment.py   decode_tokens_per_s (this machine, measured by the grader)          slide 17
    ex08_serving_engine.py  kv_reserved_bytes (minitx.Engine, paged or contiguous)           slide 16
    ex09_precision.py    quantized_weights_bytes (int8, int4, bfloat16)                       slides 5, 7
"""
