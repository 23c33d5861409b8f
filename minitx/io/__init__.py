"""Files in and out: Hugging Face configs and weights, minitx's own checkpoints, and the training text.

    hf_config.py    config.json read and written (Config.from_hf, hf_config)
    hf.py           load_hf / export_hf: the Hugging Face weight layouts of GPT-2, Llama, Mistral, Gemma
    checkpoint.py   minitx's own checkpoints: atomic, checksummed, no pickle
    data.py         the byte-level tokenizer and text that ships with Python
"""
