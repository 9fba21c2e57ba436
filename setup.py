"""Build hrnet_fast and its extension hrnet_fast._C.

C++ (CPU kernels, op schemas) is always compiled. The CUDA kernels are added
when nvcc and a CUDA build of torch are present, or when FORCE_CUDA=1;
HRNET_FAST_SKIP_CUDA=1 forces a CPU-only build. Build against the installed
torch with `pip install --no-build-isolation -e .`.

The binary only loads into the torch it was compiled against, so the
package requires exactly that torch version (install_requires), and an
isolated build (pyproject.toml) compiles against the supported one.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

# torch finds /usr/local/bin/nvcc first and guesses CUDA_HOME=/usr/local,
# which has no CUDA headers; prefer the real toolkit when it is there.
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
# With no GPU to query, torch would otherwise compile for every known arch.
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")

try:
    import torch  # noqa: E402
except ImportError:
    sys.exit("hrnet_fast: building the extension needs torch, which is not importable here. Install the "
             "supported torch (requirements.txt) and build against it with `pip install --no-build-isolation .`")
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _want_cuda() -> bool:
    if _flag("HRNET_FAST_SKIP_CUDA"):
        return False
    if _flag("FORCE_CUDA"):
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None and os.path.exists(
        os.path.join(CUDA_HOME, "bin", "nvcc"))


def _arch_list() -> list:
    archs = os.environ["TORCH_CUDA_ARCH_LIST"].replace(",", ";").replace(" ", ";")
    return [a for a in archs.split(";") if a]


def _sources(pattern: str) -> list:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def extension():
    with_cuda = _want_cuda()
    sources = (_sources("csrc/*.cpp") + _sources("csrc/autograd/*.cpp") + _sources("csrc/cpu/*.cpp")
               + _sources("csrc/plan/*.cpp"))
    define_macros = [
        ("HRNET_FAST_TORCH_VERSION", f'"{torch.__version__}"'),
        ("HRNET_FAST_CUDA_ARCHS", f'"{";".join(_arch_list()) if with_cuda else ""}"'),
    ]
    # HRNET_FAST_CXXFLAGS adds host compiler flags (e.g. -march=native for a
    # build that only runs on the machine that compiles it).
    # -ffp-contract=off: no fused multiply-adds, so the CPU results are the
    # same bits whatever instruction set the compiler targets (the tests
    # check float32 sums bit for bit against their order of operations).
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off"] + os.environ.get("HRNET_FAST_CXXFLAGS", "").split()
    include_dirs = [os.path.join(ROOT, "kernels"), os.path.join(ROOT, "csrc")]
    if not with_cuda:
        return CppExtension("hrnet_fast._C", sources, include_dirs=include_dirs, define_macros=define_macros,
                            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    sources += _sources("csrc/cuda/*.cpp") + _sources("csrc/cuda/*.cu")
    define_macros.append(("HRNET_FAST_WITH_CUDA", "1"))
    # Headers such as cusparse.h ship with the pip CUDA wheels, not always
    # with the toolkit; let either satisfy an include.
    for site in {os.path.dirname(os.path.dirname(torch.__file__))}:
        pip_cuda = os.path.join(site, "nvidia", "cu13", "include")
        if os.path.isdir(pip_cuda):
            include_dirs.append(pip_cuda)
    nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", "-std=c++17"]
    return CUDAExtension("hrnet_fast._C", sources, include_dirs=include_dirs, define_macros=define_macros,
                         extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=["-fopenmp"])


setup(
    name="hrnet_fast",
    version="0.1.0",
    description="Fused multi-resolution exchange kernels for HRNet (CPU, CUDA, Triton)",
    long_description=open(os.path.join(ROOT, "README.md")).read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hrnet_fast", "hrnet_fast.*"]),
    python_requires=">=3.10",
    # The torch the binary is built against: another one cannot load it.
    install_requires=[f"torch=={torch.__version__.split('+')[0]}"],
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    entry_points={"console_scripts": ["hrnet-fast = hrnet_fast.cli:main"]},
    zip_safe=False,
)
