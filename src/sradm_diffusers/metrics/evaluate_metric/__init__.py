"""The Hugging Face ``evaluate`` metric script (``sradm_sr_metrics.py``); load it with
``evaluate.load(sradm_diffusers.metrics.quality.EVALUATE_MODULE)``."""
