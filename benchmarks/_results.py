"""Shared by the benchmark scripts: describe the machine and write a script's section of RESULTS.md."""

import datetime
import os
import platform
import re
import time
from pathlib import Path

import sklearn
import torch
import torchvision

from sktransfer._precision import cpu_native_bfloat16

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is written by the script it names; do not edit by hand.\n"


def device_description(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = match.group(1).strip() if match else cpu
    native = cpu_native_bfloat16()
    bfloat16 = f"native bfloat16 ({native})" if native else "no native bfloat16 (bfloat16 emulated)"
    threads = torch.get_num_threads()
    return f"CPU {cpu}, {threads} thread{'s' if threads > 1 else ''}, {bfloat16}"


def environment_line(device):
    return (
        f"{datetime.date.today().isoformat()}; {device_description(device)}; torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, scikit-learn {sklearn.__version__}, Python {platform.python_version()}"
    )


def write_section(script, body):
    """Replace (or append) the section of RESULTS.md between this script's markers."""
    start, end = f"<!-- {script}:start -->", f"<!-- {script}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    section = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    print(f"wrote the {script} section of {RESULTS}")


def use_every_core():
    """Give torch one thread per core this process may run on (its default can be fewer)."""
    torch.set_num_threads(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )


def publish(script, body, quick):
    """Write ``body`` as ``script``'s section of RESULTS.md, unless this was a ``--quick`` run."""
    if quick:
        print("--quick: RESULTS.md left as it is", flush=True)
    else:
        write_section(script, body)


def run_script(script, parser, quick, run):
    """Parse the command line (``--quick`` applies ``quick``'s sizes), run, print, and write the section."""
    args = parser.parse_args()
    if args.quick:
        for name, value in quick.items():
            setattr(args, name, value)
    start = time.perf_counter()
    body = run(args)
    print(body, flush=True)
    print(f"{time.perf_counter() - start:.0f} s", flush=True)
    publish(script, body, args.quick)
