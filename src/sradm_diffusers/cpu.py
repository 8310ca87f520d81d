"""What the CPU computes natively: whether ``--dtype bf16`` pays off on it.

On x86 CPUs with AVX512_BF16 or AMX-BF16, oneDNN runs bfloat16 convolutions natively and the demo U-Net step was
3.8-6.2x faster in bf16 than in fp32 (README "Performance"); on CPUs without them bf16 is emulated and was ~10x
*slower* (AMD EPYC without AVX512_BF16, issue 19). ``benchmarks/bench_cpu_dtype.py`` measures both on a machine.
"""

from __future__ import annotations

import functools

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""x86 ``/proc/cpuinfo`` flags of native bfloat16 arithmetic (arm64: ``bf16`` in ``Features``)."""


@functools.lru_cache(maxsize=None)
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's feature flags (x86 ``flags``, arm64 ``Features``); empty where there is no such file."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU has native bfloat16 arithmetic (:data:`NATIVE_BF16_FLAGS`, or arm64's ``bf16``)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_BF16_FLAGS) or "bf16" in flags


def bf16_advice(flags: frozenset[str] | None = None) -> str | None:
    """A one-line warning for ``--dtype bf16`` on a CPU that emulates bfloat16, else None."""
    if native_bf16(flags):
        return None
    return ("--dtype bf16 on a CPU without native bfloat16 (no avx512_bf16 / amx_bf16 flag): it is emulated, about "
            "10x slower than fp32 here; use --dtype fp32 (the default) on this CPU")
