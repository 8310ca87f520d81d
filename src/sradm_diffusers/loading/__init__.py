"""Getting a pipeline in and out of folders and the Hub.

- :mod:`.hub`: resolving a Hub id or folder, and one-line explanations of load failures.
- :mod:`.remote_code`: the self-contained code files ``save_pretrained`` ships for ``trust_remote_code`` loading.
- :mod:`.dispatch`: ``DiffusionPipeline.from_pretrained`` on an SRADM folder returns this package's pipeline.
"""
