"""The wheels scripts/gpu_check.sh installs on a GPU machine with no network (`make gpu-wheels`).

    python scripts/gpu_check.py wheels --part part1 [--dest scripts/gpu_wheels] [--python-version 3.11]

What a part of the check needs and the machine (torch, transformers, peft) lacks, pinned to
requirements.lock's versions and hashes (GPU_ONLY for what the lock does not hold), downloaded here into
a git-ignored folder shipped beside the script; each part under 64 MiB. torch is never among them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "scripts" / "gpu_wheels"

MAX_WHEELS_MIB = 64
# packages each part needs beyond the machine's torch, transformers and peft (transformers at the lock's version)
PARTS = {
    "part1": ["transformers", "accelerate", "trl", "deepspeed", "hjson", "msgpack", "einops", "py-cpuinfo"],
    "part2": ["transformers", "bitsandbytes"],
}
# not in requirements.lock (DeepSpeed's sdist builds against the local torch, which the lock cannot do)
GPU_ONLY = {
    "deepspeed": "deepspeed==0.19.8 --hash=sha256:9e491abd0827ea5c389dd702e15e11e13d83d904bac4a20d6c2a4cb37207a9af",
    "hjson": "hjson==3.1.0 --hash=sha256:65713cdcf13214fb554eb8b4ef803419733f4f5e551047c9b711098ab7186b89",
    # the CPython 3.11 manylinux wheel (another --python-version needs its own hash)
    "msgpack": "msgpack==1.2.4 --hash=sha256:a45ceb5f199d5e388f28b550ba881096a3740d4bda10e661d77f59d9a2e8187a",
    "einops": "einops==0.8.2 --hash=sha256:54058201ac7087911181bfec4af6091bb59380360f069276601256a76af08193",
    "py-cpuinfo": "py-cpuinfo==9.0.0 --hash=sha256:859625bc251f64e21f077d099d4162689c762b5d6a4c3c97553d56241c9674d5",
}


def wheel_files(folder: Path) -> list[Path]:
    """The wheels (and DeepSpeed's sdist) in `folder`; torch is never among what is installed."""
    files = sorted([*folder.glob("*.whl"), *folder.glob("*.tar.gz")]) if folder.is_dir() else []
    torch_like = [f.name for f in files if re.match(r"(torch|nvidia_|triton)[-_]", f.name)]
    if torch_like:
        raise SystemExit(f"{folder} holds {', '.join(torch_like)}: the machine's torch is never replaced; remove them")
    return files


def module_of(wheel: Path) -> str:
    name = re.split(r"-\d", wheel.name, maxsplit=1)[0].lower().replace("-", "_")
    return {"py_cpuinfo": "cpuinfo"}.get(name, name)


def pinned_requirements(part: str) -> list[str]:
    """A part's requirement lines: version and hashes from requirements.lock, or from GPU_ONLY."""
    lock = (REPO / "requirements.lock").read_text()
    lines = []
    for package in PARTS[part]:
        match = re.search(rf"^{re.escape(package)}==\S+(?: \\\n\s+--hash=\S+)+", lock, flags=re.M)
        pinned = GPU_ONLY.get(package) or (match.group(0) if match else None)
        if pinned is None:
            raise SystemExit(f"{package}: neither in requirements.lock nor pinned in GPU_ONLY")
        lines.append(re.sub(r"\s*\\\n\s*|\s+", " ", pinned))
    return lines


def download_wheels(part: str, dest: str | Path, python_version: str) -> int:
    """pip download of a part's wheels, pinned (`pinned_requirements`), for the GPU machine's Python."""
    lines = pinned_requirements(part)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for old in wheel_files(dest):
        old.unlink()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    platforms = [f"--platform={p}" for p in ("manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64")]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "-d",
        str(dest),
        "-r",
        f.name,
        f"--python-version={python_version}",
        *platforms,
    ]
    subprocess.run(command, check=True)
    size = sum(p.stat().st_size for p in wheel_files(dest)) / 2**20
    print(f"{part}: {len(wheel_files(dest))} files, {size:.1f} MiB in {dest}")
    if size > MAX_WHEELS_MIB:
        raise SystemExit(f"{size:.1f} MiB is over the {MAX_WHEELS_MIB} MiB a transfer may carry")
    return 0
