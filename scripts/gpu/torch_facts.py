"""What the GPU check needs to know about a PyTorch installation, as shell
assignments: version, CUDA version, C++ ABI, CMake prefix, visible GPUs, and
where the wheel's NCCL and CUDA runtime packages put their files. Run with the
python3 that has the wheel.

    eval "$(python3 scripts/gpu/torch_facts.py)"
"""
import glob
import importlib.util
import os
import shlex

import torch


def nvidia_dirs():
    """The folders of the nvidia namespace package (the wheel's CUDA libraries)."""
    spec = importlib.util.find_spec("nvidia")
    return list(spec.submodule_search_locations) if spec else []


def first_with(subdirs, pattern):
    for base in nvidia_dirs():
        for sub in subdirs:
            lib = os.path.join(base, sub, "lib")
            if glob.glob(os.path.join(lib, pattern)):
                return os.path.join(base, sub)
    return ""


def main():
    count = torch.cuda.device_count() if torch.version.cuda else 0
    facts = {
        "TORCH_VERSION": torch.__version__,
        "TORCH_CUDA": torch.version.cuda or "",
        "TORCH_CXX11_ABI": int(bool(torch._C._GLIBCXX_USE_CXX11_ABI)),
        "TORCH_CMAKE_PREFIX": torch.utils.cmake_prefix_path,
        "TORCH_LIB_DIR": os.path.join(os.path.dirname(torch.__file__), "lib"),
        "GPU_COUNT": count,
        "GPU_NAMES": "; ".join(torch.cuda.get_device_name(i) for i in range(count)),
        "GPU_CAPABILITY": ".".join(map(str, torch.cuda.get_device_capability(0))) if count else "",
        # nvidia-nccl-cu13 keeps its own folder; CUDA 13 runtime wheels share
        # nvidia/cu13, CUDA 12 ones had nvidia/cuda_runtime.
        "WHEEL_NCCL_ROOT": first_with(["nccl"], "libnccl.so*"),
        "WHEEL_CUDART_ROOT": first_with(["cu13", "cuda_runtime"], "libcudart.so*"),
    }
    for name, value in facts.items():
        print(f"{name}={shlex.quote(str(value))}")


if __name__ == "__main__":
    main()
